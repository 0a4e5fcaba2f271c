"""Clock-driven work: the lifecycle job (R4.1, R4.4, R4.5, R4.8, R5.3) and the outbox
publisher that carries every committed change to `subscription-events`.

The outbox is written in the same Lua call as the change (store.py), so a broker outage only
delays events, and a crash between the change and its publication publishes it on restart.
An entry is deleted only after the broker acked it. A publisher killed between the ack and
the delete leaves entries the broker already holds: so whoever takes the lease first reads
back the topic's last messages (one batch's worth per partition) and deletes the entries
already there instead of sending them again. Each event is then published once across
crashes of the platform; consumers still drop repeats by the stable event `id`, the rest of
at-least-once (a broker that acked and then lost its ack, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.entitlements.service import EntitlementsService
from services.entitlements.store import EntitlementsStore
from shared.consumer import LoopHealth
from shared.observability import OUTBOX_BACKLOG

log = logging.getLogger(__name__)

# The longest read-back of the topic when the lease is taken; past it, the drain is retried.
READ_BACK_S = 30.0


class LifecycleJob:
    """A `DueJob` for the platform scheduler: expiries, downgrades, ends, trial ends."""

    name = "entitlements-lifecycle"

    def __init__(self, service: EntitlementsService) -> None:
        self._service = service

    async def next_due(self) -> datetime | None:
        return await self._service.next_due()

    async def run_due(self, now: datetime) -> None:
        await self._service.run_due(now)


class OutboxPublisher:
    """Drains the outbox stream to Kafka, oldest first; one replica at a time (a lease)."""

    def __init__(self, store: EntitlementsStore, producer: AIOKafkaProducer, topic: str,
                 poll_s: float, reader: Callable[[], AIOKafkaConsumer], batch: int = 500,
                 lease_ms: int = 10_000) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
        self._reader = reader  # a consumer without group: the topic read back
        # False until the outbox's head was checked against the topic under this lease.
        self._checked = False
        self._poll_s = poll_s
        self._batch = batch
        self._lease_ms = lease_ms
        self._holder = f"publisher-{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    def start(self, health: LoopHealth) -> None:
        self._task = asyncio.create_task(self._run(), name="entitlements-outbox")
        health.supervise(self._task)

    async def stop(self) -> None:
        # A flag as well as a cancel: on 3.11 a cancel landing as a timeout expires can be
        # swallowed, so the loop also checks the flag, and we never wait on it for ever.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
            self._task = None
        with contextlib.suppress(Exception):
            await self._store.release_lease(self._holder)

    async def drain_once(self) -> int:
        """Publish what is in the outbox now; returns how many events were acked."""
        if not await self._store.take_lease(self._holder, self._lease_ms):
            self._checked = False  # another holder publishes: check again when ours again
            return 0
        sent = 0
        while entries := await self._store.outbox_batch(self._batch):
            if not self._checked:
                entries = await self._unpublished(entries)
                self._checked = True
                if not entries:
                    continue
            futures = [await self._producer.send(self._topic, fields["value"].encode(),
                                                 key=fields["key"].encode(),
                                                 headers=[("event-id", fields["id"].encode())])
                       for _, fields in entries]
            await asyncio.gather(*futures)  # every one acked (acks=all) before deleting
            await self._store.outbox_ack([entry_id for entry_id, _ in entries])
            sent += len(entries)
            if len(entries) < self._batch:
                break
        return sent

    async def _unpublished(self, entries: list[tuple[str, dict[str, str]]]
                           ) -> list[tuple[str, dict[str, str]]]:
        """The entries the topic does not hold yet; those it holds (a holder killed between
        the broker's ack and the delete) are deleted from the outbox."""
        published = await self._published_ids()
        held = [entry_id for entry_id, fields in entries if fields["id"] in published]
        if held:
            log.info("outbox: %d event(s) already on %s, not sent again", len(held),
                     self._topic)
            await self._store.outbox_ack(held)
        return [(entry_id, fields) for entry_id, fields in entries
                if fields["id"] not in published]

    async def _published_ids(self) -> set[str]:
        """The `event-id` headers of each partition's last `batch` messages: a publisher
        deletes what it sent, one batch at a time, once acked."""
        partitions = await self._producer.partitions_for(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        reader = self._reader()
        await reader.start()
        try:
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            for tp in tps:
                reader.seek(tp, max(0, ends[tp] - self._batch))
            seen: set[str] = set()
            deadline = asyncio.get_running_loop().time() + READ_BACK_S
            while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"reading back {self._topic} took over {READ_BACK_S} s")
                for records in (await reader.getmany(*tps, timeout_ms=200)).values():
                    seen.update(value.decode() for record in records
                                for key, value in record.headers if key == "event-id")
            return seen
        finally:
            await reader.stop()

    async def _run(self) -> None:
        delay = self._poll_s
        while not self._stopping:
            try:
                await self.drain_once()
                # Read after the drain: what is left is what the broker has not acked.
                OUTBOX_BACKLOG.set(await self._store.outbox_length())
                delay = self._poll_s
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or store away: keep the events, retry later
                log.warning("outbox publish failed; retrying in %.1f s", delay, exc_info=True)
                delay = min(delay * 2, 10.0)
            if self._stopping:
                return
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=delay)
            finally:
                waiter.cancel()
            self._wake.clear()
