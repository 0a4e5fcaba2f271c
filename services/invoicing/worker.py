"""Invoicing's background work: the billing job on the platform scheduler, and the
`subscription-events` consumer that issues immediate invoices (R9.2).

The consumer commits an offset only after the invoice of its event is numbered and written;
a replay after a crash finds the event id already billed (`inv:events`) and issues nothing.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.invoicing.service import InvoicingService
from shared.consumer import (
    DeadLetterLimit,
    LoopConsumer,
    LoopHealth,
    Stopping,
    SubscribedLoop,
    committed_up_to,
    dead_letter_headers,
    send_dead_letters,
)
from shared.events import InvalidEvent
from shared.settings import InvoicingSettings

log = logging.getLogger(__name__)

LOOP = "invoicing-consumer"
BATCH = 500


class SubscriptionConsumer(LoopConsumer):
    """Poll a bounded batch, handle each event in order, commit after the writes. An outage
    is retried (the invoice writes are idempotent); an event that cannot be handled goes to
    `subscription-events.dlq` with the reason, and the stream goes on."""

    def __init__(self, settings: InvoicingSettings, service: InvoicingService,
                 producer: AIOKafkaProducer, health: LoopHealth) -> None:
        self._settings = settings
        self._service = service
        self._producer = producer
        self._dead_letter_limit = DeadLetterLimit(LOOP, health, settings.dead_letter_limit)
        self.loop = SubscribedLoop.on_subscription_events(
            settings, settings.invoicing_consumer_group, LOOP, health, max_poll_records=BATCH)
        self._retrier = self.loop.retrier
        self.consumer = self.loop.consumer
        self._topic = self.loop.topic

    async def run(self) -> None:
        while True:
            for tp, records in (await self.loop.poll(BATCH)).items():
                self._dead_letter_limit.observe([await self._handle(r) for r in records])
                if records:
                    await self.loop.commit({tp: records[-1].offset + 1})

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
        topic consumed and committed, so immediate invoices come before later ones. Given up
        with a warning at the deadline, which bounds the broker's answers too
        (`committed_up_to`)."""
        timeout_s = self._settings.invoicing_barrier_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._caught_up()
        except TimeoutError:
            log.warning("subscription events not caught up within %g s before the clock "
                        "moved", timeout_s)

    async def _caught_up(self) -> None:
        # Both are another party's state, with no event to wait on: they are polled.
        while await self._service.state.outbox_size() > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        while not self.consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        tps = [TopicPartition(self._topic, p)
               for p in (self.consumer.partitions_for_topic(self._topic) or set())]
        await committed_up_to(self.consumer, await self.consumer.end_offsets(tps))
