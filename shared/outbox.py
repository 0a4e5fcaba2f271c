"""The transactional outbox: events written to a Redis stream in the same Lua call as the
change they announce, then published to Kafka by `OutboxPublisher`.

A broker outage only delays events, and a crash between the change and its publication
publishes it on restart. An entry is deleted only after the broker acked it: delivery is
at-least-once with a stable event `id`, which consumers use to drop the rare duplicate (a
crash between ack and delete). Entitlements and invoicing each own one stream
(`shared.keys`); the writers append `id`, `key`, `value` fields with XADD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Gauge
from redis.asyncio import Redis

from shared.consumer import LoopHealth

log = logging.getLogger(__name__)

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
                 poll_s: float, name: str, backlog: Gauge, batch: int = 500,
                 lease_ms: int = 10_000) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
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
            return 0
        sent = 0
        while entries := await self._outbox.batch(self._batch):
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
