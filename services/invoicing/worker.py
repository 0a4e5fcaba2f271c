"""Invoicing's background work: the billing job on the platform scheduler, and the
`subscription-events` consumer that issues immediate invoices (R9.2).

The consumer commits an offset only after the invoice of its event is numbered and written;
a replay after a crash finds the event id already billed (`inv:events`) and issues nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.invoicing.service import InvoicingService
from shared.kafka import make_consumer
from shared.settings import InvoicingSettings

log = logging.getLogger(__name__)


class BillingJob:
    """A `DueJob`: each tenant's billing dates fall due at local midnight (R2.1); under the
    manual clock `PUT /v1/clock` runs them in time order."""

    name = "invoicing-billing"

    def __init__(self, service: InvoicingService) -> None:
        self._service = service

    async def next_due(self) -> datetime | None:
        return await self._service.next_due()

    async def run_due(self, now: datetime) -> None:
        await self._service.run_due(now)


class SubscriptionConsumer:
    def __init__(self, settings: InvoicingSettings, service: InvoicingService) -> None:
        self._settings = settings
        self._service = service
        self._topic = settings.subscription_events_topic
        self.consumer: AIOKafkaConsumer = make_consumer(
            settings, settings.invoicing_consumer_group, max_poll_records=500)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self.consumer.subscribe([self._topic])
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="invoicing-consumer")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def _run(self) -> None:
        delay = 0.05
        while not self._stopping:
            try:
                batch = await self.consumer.getmany(timeout_ms=100, max_records=500)
                for tp, messages in batch.items():
                    for message in messages:
                        await self._handle(message.value)
                    if messages:
                        await self.consumer.commit({tp: messages[-1].offset + 1})
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:  # store or broker away: nothing committed, retried later
                log.warning("subscription event handling failed; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                # Re-read from the last commit: the invoice writes are idempotent.
                with contextlib.suppress(Exception):
                    for tp in self.consumer.assignment():
                        committed = await self.consumer.committed(tp)
                        if committed is not None:
                            self.consumer.seek(tp, committed)

    async def _handle(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("skipping a subscription event that is not JSON")
            return
        if isinstance(event, dict):
            await self._service.on_subscription_event(event)

    async def caught_up(self) -> None:
        """Barrier of the manual clock: entitlements' outbox drained, and every event in the
        topic consumed and committed, so immediate invoices come before later ones."""
        deadline = time.monotonic() + self._settings.invoicing_barrier_timeout_s
        while await self._service.state.outbox_size() > 0:
            if time.monotonic() > deadline:
                log.warning("entitlements outbox not drained before the clock moved")
                return
            await asyncio.sleep(0.01)
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                log.warning("invoicing consumer has no partitions; not waiting")
                return
            await asyncio.sleep(0.02)
        tps = [TopicPartition(self._topic, p)
               for p in (self.consumer.partitions_for_topic(self._topic) or set())]
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            while True:
                committed = await self.consumer.committed(tp)
                if (committed or 0) >= ends[tp]:
                    break
                if time.monotonic() > deadline:
                    log.warning("subscription events not caught up before the clock moved")
                    return
                await asyncio.sleep(0.01)
