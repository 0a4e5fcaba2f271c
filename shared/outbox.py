"""The transactional outbox: events written to a Redis stream in the same Lua call as the
change they announce, then published to Kafka by `OutboxPublisher`.

A broker outage only delays events, and a crash between the change and its publication
publishes it on restart. An entry is deleted only after the broker acked it. A publisher
killed between the ack and the delete leaves entries the broker already holds: so whoever
takes the lease first reads back the topic's last messages (one batch's worth per partition)
and deletes the entries already there instead of sending them again. Each event is then
published once across crashes; consumers still drop repeats by the stable event `id`, the
rest of at-least-once (a broker that acked and then lost its ack, say). Entitlements and
invoicing each own one stream (`shared.keys`); the writers append `id`, `key`, `value`
fields with XADD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Gauge
from redis.asyncio import Redis

from shared.consumer import LoopHealth

log = logging.getLogger(__name__)

# The longest read-back of the topic when the lease is taken; past it, the drain is retried.
READ_BACK_S = 30.0

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class OutboxStream:
    """One outbox stream and the lease that lets one replica at a time drain it."""

    def __init__(self, redis: Redis, stream: str, lease: str) -> None:
        self.redis = redis
        self.stream = stream
        self.lease = lease
        self._take = redis.register_script(_LEASE)

    async def batch(self, count: int) -> list[tuple[str, dict[str, str]]]:
        rows: Any = await self.redis.xrange(self.stream, count=count)
        return [(str(i), {str(k): str(v) for k, v in f.items()}) for i, f in rows]

    async def length(self) -> int:
        return int(await self.redis.xlen(self.stream))

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self.redis.xdel(self.stream, *ids)

    async def take_lease(self, holder: str, ttl_ms: int) -> bool:
        return bool(await self._take(keys=[self.lease], args=[holder, ttl_ms]))

    async def release_lease(self, holder: str) -> None:
        if await self.redis.get(self.lease) == holder:
            await self.redis.delete(self.lease)


class OutboxPublisher:
    """Drains an outbox stream to Kafka, oldest first; one replica at a time (a lease)."""

    def __init__(self, outbox: OutboxStream, producer: AIOKafkaProducer, topic: str,
                 poll_s: float, name: str, backlog: Gauge,
                 reader: Callable[[], AIOKafkaConsumer], batch: int = 500,
                 lease_ms: int = 10_000) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
        self._reader = reader  # a consumer without group: the topic read back
        # False until the outbox's head was checked against the topic under this lease.
        self._checked = False
        self._poll_s = poll_s
        self._name = name
        self._backlog = backlog
        self._batch = batch
        self._lease_ms = lease_ms
        self._holder = f"publisher-{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    def start(self, health: LoopHealth) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-outbox")
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
            await self._outbox.release_lease(self._holder)

    async def drain_once(self) -> int:
        """Publish what is in the outbox now; returns how many events were acked."""
        if not await self._outbox.take_lease(self._holder, self._lease_ms):
            self._checked = False  # another holder publishes: check again when ours again
            return 0
        sent = 0
        while entries := await self._outbox.batch(self._batch):
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
            await self._outbox.ack([entry_id for entry_id, _ in entries])
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
            log.info("%s outbox: %d event(s) already on %s, not sent again", self._name,
                     len(held), self._topic)
            await self._outbox.ack(held)
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
                self._backlog.set(await self._outbox.length())
                delay = self._poll_s
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or store away: keep the events, retry later
                log.warning("%s outbox publish failed; retrying in %.1f s", self._name, delay,
                            exc_info=True)
                delay = min(delay * 2, 10.0)
            if self._stopping:
                return
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=delay)
            finally:
                waiter.cancel()
            self._wake.clear()
