"""The consumer that turns `subscription-events` into deliveries (docs/webhooks.md).

A loop: poll a bounded batch, write its deliveries to valkey (each once, by delivery id),
commit the offsets after the write, wake the delivery loop. A crash before the commit reads
the batch again and writes nothing new; an outage is retried with back-off, and `/readyz`
says so once it lasts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Final

from services.webhooks.routing import deliveries_for
from services.webhooks.store import WebhookStore
from shared.clock import Clock
from shared.consumer import LoopConsumer, LoopHealth, SubscribedLoop
from shared.settings import WebhooksSettings
from shared.times import micros

LOOP: Final = "webhooks-consumer"
BATCH: Final = 500
FETCH_WAIT_MS: Final = 20


class DeliveryFeed(LoopConsumer):
    def __init__(self, settings: WebhooksSettings, store: WebhookStore, clock: Clock,
                 health: LoopHealth, written: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._written = written
        # A short fetch wait: a delivery's latency starts with it (the broker may hold an
        # empty fetch that long before it answers what arrived meanwhile).
        self.loop = SubscribedLoop.on_subscription_events(
            settings, settings.webhooks_consumer_group, LOOP, health, max_poll_records=BATCH,
            fetch_max_wait_ms=FETCH_WAIT_MS)
        self._retrier = self.loop.retrier

    async def run(self) -> None:
        while True:
            batch = await self.loop.poll(BATCH)
            ends = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
            if not ends:
                continue
            values = [r.value or b"" for records in batch.values() for r in records]
            await self._retrier.run("write", partial(self.write, values))
            await self.loop.commit(ends)
            self._written()

    async def write(self, values: list[bytes]) -> int:
        """The deliveries of these messages, in order, for the endpoints as they are now."""
        endpoints = await self._store.endpoints()
        deliveries = [d for value in values for d in deliveries_for(value, endpoints)]
        return await self._store.enqueue(deliveries, micros(await self._clock.now()))

