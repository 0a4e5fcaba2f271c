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
from functools import partial

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.invoicing.service import InvoicingService
from shared.consumer import (
    DeadLetterLimit,
    LoopHealth,
    Retrier,
    Stopping,
    SubscribedLoop,
    dead_letter_headers,
    send_dead_letters,
)
from shared.events import InvalidEvent
from shared.kafka import make_consumer
from shared.observability import BILLING_RUNS, CONSUMER_LAG
from shared.settings import InvoicingSettings

log = logging.getLogger(__name__)

LOOP = "invoicing-consumer"
LAG_NAME = LOOP
BATCH = 500


class BillingJob:
    """A `DueJob`: each tenant's billing dates fall due at local midnight (R2.1); under the
    manual clock `PUT /v1/clock` runs them in time order."""

    name = "invoicing-billing"

    def __init__(self, service: InvoicingService) -> None:
        self._service = service

    async def next_due(self) -> datetime | None:
        return await self._service.next_due()

    async def run_due(self, now: datetime) -> None:
        BILLING_RUNS.labels("scheduled").inc()
        await self._service.run_due(now)


class SubscriptionConsumer:
    """Poll a bounded batch, handle each event in order, commit after the writes. An outage
    is retried (the invoice writes are idempotent); an event that cannot be handled goes to
    `subscription-events.dlq` with the reason, and the stream goes on."""

    def __init__(self, settings: InvoicingSettings, service: InvoicingService,
                 producer: AIOKafkaProducer, health: LoopHealth) -> None:
        self._settings = settings
        self._service = service
        self._producer = producer
        self._topic = settings.subscription_events_topic
        self._retrier = Retrier(LOOP, health, initial_s=settings.retry_initial_s,
                                max_s=settings.retry_max_s)
        self._dead_letter_limit = DeadLetterLimit(LOOP, health, settings.dead_letter_limit)
        self.consumer: AIOKafkaConsumer = make_consumer(
            settings, settings.invoicing_consumer_group, max_poll_records=BATCH)
        self._loop = SubscribedLoop(self.consumer, self._topic, LOOP, LAG_NAME, health,
                                    self._retrier)

    async def start(self) -> None:
        await self._loop.start(self._run)

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        with contextlib.suppress(Stopping):
            while True:
                batch = await self._retrier.run("poll", lambda: self.consumer.getmany(
                    timeout_ms=100, max_records=BATCH))
                for tp, records in batch.items():
                    dead = [await self._handle(record) for record in records]
                    self._dead_letter_limit.observe(dead)
                    if records:
                        commit = partial(self.consumer.commit, {tp: records[-1].offset + 1})
                        await self._retrier.run("commit", commit)
                        CONSUMER_LAG.committed(LAG_NAME, {tp: records[-1].offset + 1})

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle one event; True when it went to the dead-letter queue."""
        try:
            await self._retrier.run("invoice", lambda: self._invoice(record.value))
        except Stopping:
            raise
        except Exception as error:
            log.exception("subscription event %s:%d:%d cannot be invoiced; dead-lettered",
                          record.topic, record.partition, record.offset)
            code, field = ((error.code, error.field) if isinstance(error, InvalidEvent)
                           else ("unprocessable", "body"))
            reason = error.reason if isinstance(error, InvalidEvent) else repr(error)
            await self._retrier.run("dlq", lambda: send_dead_letters(
                self._producer, self._settings.subscription_events_dlq_topic,
                [(record, dead_letter_headers(record, code, field, reason))]))
            return True
        return False

    async def _invoice(self, value: bytes | None) -> None:
        try:
            event = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            raise InvalidEvent("invalid_json", "body", "is not UTF-8 JSON") from None
        if not isinstance(event, dict):
            raise InvalidEvent("not_an_object", "body", "an event must be a JSON object")
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
