"""The usage-events consumer: poll a bounded batch, validate, dedupe, write, then commit.

Order of a batch (docs/metering.md), in three stages: prepare (1 and 2's in-batch part),
claim (2's ClickHouse look-up and 3) and store (4-6). Up to `IN_FLIGHT` batches move through
them at once: while batch N is stored, N+1 is claimed and N+2 prepared. Claims are sent in
batch order down one connection, so valkey runs them in offset order even when the next
batch's are sent before the previous batch's have answered (claims sent again after their
answers were lost are the exception: see `claim`); stores follow each other in batch order.
1. decode and validate each message; a bad one is bound for the DLQ with its reason;
2. drop copies within the batch; check events older than the Redis claim window against
   ClickHouse;
3. Lua calls claim every (source, id) for its partition:offset and update the live counters
   of the new ones, atomically per call;
4. one INSERT of the new events (and of our own claims replayed after a crash), with a
   deduplication token so a retried insert is a no-op;
5. the DLQ copies are acked by the broker;
6. only then are the offsets committed.
A failure in 2-5 is retried with back-off and nothing is committed meanwhile. On start and
after each rebalance the consumer resumes from what ClickHouse holds, so a batch stored but
not committed before a crash is never stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram

from services.metering.acks import StoredEvents
from services.metering.batches import (
    ClaimedBatch,
    PreparedBatch,
    accept,
    prepare,
    refusals,
)
from services.metering.incarnation import BrokerReplaced, Incarnation
from services.metering.rebuild import LiveRebuild
from services.metering.service import claim_key, live_ops
from services.metering.store import (
    FOREIGN_CLAIM,
    REPLAY,
    EventStore,
    LiveCounters,
    StoredEvent,
)
from services.metering.zones import TenantZones
from shared.consumer import (
    COMMIT_TIMEOUT_S,
    DeadLetterLimit,
    LoopHealth,
    Retrier,
    Stopping,
    committed_up_to,
    dead_letter_headers,
    send_dead_letters,
    start_consumer,
    stop_consumer,
)
from shared.errors import Unavailable
from shared.events import EventValidator, InvalidEvent
from shared.kafka import make_consumer
from shared.observability import CONSUMER_LAG
from shared.resources import NO_RESOURCE_EVENTS, ResourceEvent
from shared.settings import MeteringSettings
from shared.usage_limits import LiveMeters

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSUMED = Counter("metering_messages_consumed_total", "Messages read from usage-events")
STORED = Counter("metering_events_stored_total", "Events written to ClickHouse")
DUPLICATES = Counter("metering_events_duplicate_total", "Copies of events already counted")
DEAD_LETTERS = Counter("metering_dead_letters_total", "Messages sent to the DLQ", ["code"])
RETRIES = Counter("metering_retries_total", "Retried steps of a batch", ["step"])
BATCH_SECONDS = Histogram("metering_batch_seconds", "Time to process one batch")

# Batches between poll and commit at once: while one is polled and prepared, at most two
# others are being claimed or stored.
IN_FLIGHT = 3


LOOP = "metering-consumer"


class UsageConsumer:
    def __init__(self, settings: MeteringSettings, validator: EventValidator, store: EventStore,
                 live: LiveCounters, zones: TenantZones, producer: AIOKafkaProducer,
                 health: LoopHealth, rebuild: LiveRebuild,
                 resources: Mapping[str, ResourceEvent] = NO_RESOURCE_EVENTS,
                 meters: LiveMeters | None = None) -> None:
        self._settings = settings
        self._resources = resources  # the catalog's counted resources by event type (R7.4)
        self._meters = meters  # the priced meters counted live (R10.4)
        self._health = health
        self._retrier = Retrier(LOOP, health, initial_s=settings.retry_initial_s,
                                max_s=settings.retry_max_s,
                                on_retry=lambda step: RETRIES.labels(step).inc())
        self._dead_letter_limit = DeadLetterLimit(LOOP, health, settings.dead_letter_limit)
        self.stored = StoredEvents()
        self.incarnation = Incarnation(settings, live, self.stored, rebuild, zones,
                                        self._retrier)
        self._validator = validator
        self._store = store
        self._live = live
        self._zones = zones
        self._producer = producer
        # Bumped on every revocation; a batch prepared under an older one is not written.
        self._generation = 0
        # False from a drain until the seek that follows it: what is read meanwhile is
        # dropped, so no batch is stored past one a drain dropped (the seek resumes from
        # ClickHouse's highest stored offset, which must have no hole below it).
        self._positioned = False
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._claim_order = asyncio.Lock()  # FIFO: waiters get it in the order they asked
        self._settle_order = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.consumer: AIOKafkaConsumer = make_consumer(
            settings, settings.consumer_group, max_poll_records=settings.batch_max_records)

    async def start(self) -> None:
        self.consumer.subscribe([self._settings.usage_events_topic], listener=_Rebalance(self))
        await start_consumer(self.consumer, LOOP)
        CONSUMER_LAG.watch(LOOP, self.consumer)
        self._task = asyncio.create_task(self._run(), name=LOOP)
        self._health.supervise(self._task)

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        self._retrier.stopping = True
        if self._task is not None:
            # A loop that ended with an error was logged and reported when it did.
            _, late = await asyncio.wait([self._task], timeout=30)
            for task in late:
                task.cancel()
        self._health.forget(LOOP)
        await stop_consumer(self.consumer)
        await self.incarnation.close()
        self._live.close()

    async def _run(self) -> None:
        with contextlib.suppress(Stopping):
            while not self._stopping.is_set():
                try:
                    await self._consume()
                except BrokerReplaced as replaced:
                    await self._read_the_new_broker(replaced)

    async def _consume(self) -> None:
        in_flight: deque[asyncio.Task[None]] = deque()
        storing: asyncio.Task[None] | None = None
        while not self._stopping.is_set():
            if self._positioned:  # polling unpositioned reads nothing: no progress
                self._health.beat(LOOP)
            batch = await self.consumer.getmany(
                timeout_ms=self._settings.batch_max_wait_ms,
                max_records=self._settings.batch_max_records)
            if not batch or not self._positioned:
                continue  # unpositioned: read again after the coming seek
            CONSUMED.inc(sum(len(records) for records in batch.values()))
            prepared = prepare(batch, self._accept, self._generation)
            claiming = self._track(self.claim(prepared))
            storing = self._track(self._store_after(claiming, storing))
            in_flight.append(storing)
            # Back-pressure: poll again only once the oldest batch is committed.
            while len(in_flight) >= IN_FLIGHT:
                await in_flight.popleft()
        while in_flight:
            await in_flight.popleft()

    async def _read_the_new_broker(self, replaced: BrokerReplaced) -> None:
        """Drop every batch in flight (none was committed), move to the broker answering and
        read it from where ClickHouse says, or from its beginning."""
        log.warning("metering: %s", replaced)
        await self._switch_broker(self.consumer.assignment())

    async def _switch_broker(self, assigned: set[TopicPartition]) -> None:
        """With nothing in flight and no claim sent meanwhile, label what comes next with the
        broker answering (rebuilding the counters when it is a new one), then seek."""
        # Paused, no record read after the seek can be returned before the switch is done.
        self.consumer.pause(*assigned)
        try:
            await self.drain(timeout_s=None)
            async with self._claim_order:
                await self.incarnation.move_to_answering()
                await self._seek_to_stored(assigned)
                # A batch fetched meanwhile predates the seek: dropped, it is read again.
                self._generation += 1
                self._positioned = True
        finally:
            self.consumer.resume(*assigned)

    def _track(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def claim(self, batch: PreparedBatch) -> ClaimedBatch | None:
        """Claim each event and count the new ones: the copies drop out."""
        if batch.generation != self._generation:
            # Fetched before a rebalance: its partitions' new owner reads them again.
            return None
        if not batch.unique:
            return ClaimedBatch(batch, [], batch.dead)  # only dead letters: nothing to claim
        async with self._claim_order:
            # Held until this batch's claims are sent, so batches send theirs in offset order.
            if batch.generation != self._generation:
                return None  # a seek or a rebalance came while it waited for its turn
            unique = await self._drop_stored_late_copies(batch.unique)
            zones = await self._retrier.run("zones", lambda: self._zones.zones(
                {r.event.tenant for r in unique}))

            incarnation = self._live.incarnation
            resources, meters = self._resources, self._meters

            def entry(row: StoredEvent) -> list[Any]:
                return [claim_key(row.event), f"{incarnation}/{row.partition}:{row.offset}",
                        *live_ops(row.event, zones[row.event.tenant], resources, meters)]

            def entries() -> Iterator[list[Any]]:
                # Built lazily, while valkey works through the previous chunk.
                return (entry(r) for r in unique)

            sent = await self._retrier.run("redis", lambda: self._live.send(entries()))
            # Verdicts are settled in batch order too: a claim settled against ClickHouse is
            # taken again by the first batch that asks, so the earliest copy is the one stored
            # and no batch commits past an event a later batch has yet to store.
            await self._settle_order.acquire()
        try:
            try:
                verdicts = await self._live.verdicts(sent)
            except Exception as exc:
                # The answers were lost (connection broken, valkey restarted): claim again.
                # What did run answers "ours" the second time, so nothing is counted twice.
                RETRIES.labels("redis").inc()
                log.warning("metering claims lost their answers, claiming again: %s", exc)
                verdicts = await self._retrier.run("redis",
                                                   lambda: self._claim_again(entries()))
            verdicts = await self._settle_with_clickhouse(unique, verdicts, entry)
        finally:
            self._settle_order.release()
        to_store = [r for r, verdict in zip(unique, verdicts, strict=True) if verdict > 0]
        refused = [r for r, verdict in zip(unique, verdicts, strict=True) if verdict < 0]
        DUPLICATES.inc(batch.valid - len(to_store) - len(refused))
        return ClaimedBatch(batch, to_store, batch.dead + refusals(batch, refused))

    async def _claim_again(self, entries: Iterator[list[Any]]) -> list[int]:
        return await self._live.verdicts(await self._live.send(entries))

    async def _settle_with_clickhouse(self, unique: list[StoredEvent], verdicts: list[int],
                              entry: Callable[[StoredEvent], list[Any]]) -> list[int]:
        """Claims that need ClickHouse's word. Our own message read again (a replay after a
        crash or a seek) is stored only if its first reading was not: batch boundaries differ
        between readings, so the insert's token would not catch it. A claim taken under an
        earlier incarnation of the broker is a copy when ClickHouse holds the event, else an
        event that broker forgot: claimed again and counted (the counters were rebuilt
        without it when the incarnation changed)."""
        asked = [i for i, verdict in enumerate(verdicts) if verdict in (REPLAY, FOREIGN_CLAIM)]
        if not asked:
            return verdicts
        stored = await self._retrier.run("clickhouse", lambda: self._store.existing(
            unique[i].event for i in asked))
        settled = list(verdicts)
        missing = []
        for i in asked:
            if unique[i].event.key in stored:
                settled[i] = 0
            elif verdicts[i] == FOREIGN_CLAIM:
                missing.append(i)
        if missing:
            forced = await self._retrier.run("redis", lambda: self._live.claim_forced(
                entry(unique[i]) for i in missing))
            for i, verdict in zip(missing, forced, strict=True):
                settled[i] = verdict
        return settled

    async def _store_after(self, claiming: asyncio.Task[ClaimedBatch | None],
                           previous: asyncio.Task[None] | None) -> None:
        claimed = await claiming
        if previous is not None:
            await previous
        if claimed is not None:
            await self.store(claimed)

    async def store(self, claimed: ClaimedBatch) -> None:
        """Insert, dead-letter, then commit. Dropped after a rebalance: its claims stay ours
        (same partition:offset), so the next owner stores it without counting it again."""
        batch = claimed.batch
        if batch.generation != self._generation:
            return
        started = time.perf_counter()
        self._dead_letter_limit.observe(batch.outcomes)
        if claimed.to_store:
            cluster = self.incarnation.cluster
            await self._retrier.run("clickhouse", lambda: self._store.insert(
                claimed.to_store, f"{cluster}/{batch.token}", cluster))
            STORED.inc(len(claimed.to_store))
        if claimed.dead:
            await self._retrier.run("dlq", lambda: self._send_dead_letters(claimed.dead))
        # Read from another broker than the one its claims name: never committed (acks.py).
        await self.incarnation.ensure_current()
        await self._commit(batch)
        BATCH_SECONDS.observe(time.perf_counter() - started)

    def _accept(self, record: ConsumerRecord[bytes, bytes]) -> StoredEvent:
        return accept(self._validator, self._settings.max_event_bytes, record)

    async def _drop_stored_late_copies(self, rows: list[StoredEvent]) -> list[StoredEvent]:
        """Events older than the claim window may have a copy Redis forgot: ask ClickHouse."""
        horizon = datetime.now(UTC) - timedelta(  # noqa: TID251 - Redis TTLs run on wall time
            days=self._settings.dedupe_window_days - 1)
        late = [r for r in rows if r.event.time < horizon]
        if not late:
            return rows
        stored = await self._retrier.run("clickhouse",
                                         lambda: self._store.existing(r.event for r in late))
        return [r for r in rows if r.event.key not in stored]

    async def _send_dead_letters(
            self, dead: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]) -> None:
        await send_dead_letters(self._producer, self._settings.usage_events_dlq_topic, [
            (record, dead_letter_headers(record, error.code, error.field, error.reason))
            for record, error in dead])
        for _, error in dead:
            DEAD_LETTERS.labels(error.code).inc()

    async def _commit(self, batch: PreparedBatch) -> None:
        offsets = batch.offsets
        try:
            # aiokafka retries some refusals for ever (a topic the broker does not know):
            # bounded here, so the retrier reports a consumer that cannot commit.
            await self._retrier.run("commit", lambda: asyncio.wait_for(
                self.consumer.commit(offsets), COMMIT_TIMEOUT_S))
        except CommitFailedError:
            # The partitions moved on a rebalance; their new owner resumes from ClickHouse.
            log.warning("commit refused after a rebalance", extra={"offsets": str(offsets)})
            return
        # A broker replaced while the commit was under way may have taken it: nothing of it
        # is reported stored (a lenient broker takes a stale group's commit).
        await self.incarnation.ensure_current()
        self.stored.stored(row.event.key for row in batch.unique)
        CONSUMER_LAG.committed(LOOP, offsets)

    async def resume_from_store(self, assigned: set[TopicPartition]) -> None:
        """Resume where ClickHouse says, within the broker's own log: a broker that is not
        the one the stored offsets came from (a restarted embedded one) is read from its
        beginning, the counters rebuilt first, and the copies dropped by their claims."""
        await self._switch_broker(assigned)

    async def _seek_to_stored(self, assigned: set[TopicPartition]) -> None:
        """Each partition from past what ClickHouse holds of this broker, or past the group's
        commit when that is further; a replaced broker's group offsets are not trusted (it
        may have taken a commit meant for the one before)."""
        topic, cluster = self._settings.usage_events_topic, self.incarnation.cluster
        stored_next = await self._retrier.run("clickhouse",
                                              lambda: self._store.resume_offsets(topic, cluster))
        for tp in assigned:
            position = stored_next.get(tp.partition)
            trusted = self.incarnation.group_offsets_trusted
            committed = await self._group_commit(tp) if trusted else None
            if committed is not None and (position is None or committed > position):
                continue
            if position is not None:
                self.consumer.seek(tp, position)
            elif not trusted:
                # The position reached in the old log may lie inside the new one.
                await self.consumer.seek_to_beginning(tp)

    async def _group_commit(self, tp: TopicPartition) -> int | None:
        """The group's committed offset; None when the broker does not say in time (the
        client asks for a group coordinator for ever): ClickHouse's position, which the
        claims back, is the resume point then."""
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                committed: int | None = await self.consumer.committed(tp)
                return committed
        except TimeoutError:
            log.warning("no committed offset of %s within %g s; resuming from ClickHouse",
                        tp, COMMIT_TIMEOUT_S)
            return None

    async def caught_up(self, timeout_s: float = 60.0) -> None:
        """Wait until every message already in usage-events is processed and committed:
        up to the broker's end offsets, and at least past what this process produced there.

        The deadline bounds the broker's answers too (`committed_up_to`)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._caught_up()
        except TimeoutError:
            raise Unavailable(f"metering has not caught up with usage-events in {timeout_s:g} s; "
                              "retry later", code="metering_behind") from None

    async def _caught_up(self) -> None:
        topic = self._settings.usage_events_topic
        partitions = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await self.consumer.end_offsets(tps)
        produced = self.stored.produced
        await committed_up_to(self.consumer, {
            tp: max(ends[tp], produced.get(tp.partition, 0)) for tp in tps})

    async def drain(self, timeout_s: float | None) -> None:
        """On revocation, or before moving to another broker: finish the claims and stores in
        flight; what was only prepared or claimed is dropped (read again by whoever owns its
        partitions next)."""
        self._generation += 1
        self._positioned = False
        pending = [task for task in self._in_flight if not task.done()]
        if not pending:
            return
        shielded = [asyncio.shield(task) for task in pending]
        _, late = await asyncio.wait(shielded, timeout=timeout_s)
        for future in [*pending, *shielded]:  # stores chained behind one that raised, too
            if future.done() and not future.cancelled():
                future.exception()
        if late:
            log.warning("a batch was still being written when its partitions were revoked")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: UsageConsumer) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.drain(timeout_s=10)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.resume_from_store(assigned)
