"""Clock-driven work: the lifecycle job (R4.1, R4.4, R4.5, R4.8, R5.3) and the outbox
publisher that carries every committed change to `subscription-events`.

The outbox is written in the same Lua call as the change (store.py), so a broker outage only
delays events, and a crash between the change and its publication publishes it on restart.
An entry is deleted only after the broker acked it: delivery is at-least-once with a stable
event `id`, which consumers use to drop the rare duplicate (a crash between ack and delete).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import datetime

from aiokafka import AIOKafkaProducer

from services.entitlements.service import EntitlementsService
from services.entitlements.store import EntitlementsStore
from shared.consumer import LoopHealth
from shared.observability import OUTBOX_BACKLOG

log = logging.getLogger(__name__)


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
                 poll_s: float, batch: int = 500, lease_ms: int = 10_000) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
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
            return 0
        sent = 0
        while entries := await self._store.outbox_batch(self._batch):
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
