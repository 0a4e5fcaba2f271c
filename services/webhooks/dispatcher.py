"""The delivery loop: attempts each due queue's head, records the outcome, and moves on
(docs/webhooks.md, "Delivery").

Each queue holds one endpoint's deliveries for one tenant, oldest first, and only its head is
attempted, so a tenant's events reach an endpoint in order. A queue is drained by one task
at a time, under a lease in valkey (so two replicas never send the same head at once; it
expires by itself after a crash). Concurrency is bounded per endpoint and in all: a receiver
that never answers holds its own endpoint's slots, each for one attempt's timeout at most,
and every other endpoint goes on.

Due times are instants of the platform clock, so back-off follows it: under the manual
clock, moving it forward makes retries due, as if that time had passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from functools import partial
from typing import Final

from services.webhooks.schedule import Backoff
from services.webhooks.sender import Attempt, Sender
from services.webhooks.store import Delivery, Endpoint, Outcome, WebhookStore
from shared.clock import Clock
from shared.consumer import OUTAGES, LoopHealth
from shared.observability import WEBHOOK_BACKLOG, WEBHOOK_DELIVERIES
from shared.settings import WebhooksSettings
from shared.times import micros

log = logging.getLogger(__name__)

LOOP: Final = "webhooks-dispatcher"
# Due queues looked at per pass: more than can be in flight, so queues of a saturated
# endpoint, skipped, do not hide the others' behind them.
SCAN: Final = 2_000


class Dispatcher:
    def __init__(self, store: WebhookStore, sender: Sender, clock: Clock,
                 settings: WebhooksSettings, health: LoopHealth) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._settings = settings
        self._health = health
        self._backoff = Backoff(settings.webhooks_retry_first_s, settings.webhooks_retry_cap_s,
                                settings.webhooks_retry_window_h)
        # Longer than an attempt can take: a live drainer renews it between attempts.
        self._lease_ms = int((settings.webhooks_timeout_s + 5) * 1_000)
        self._holder = f"dispatcher-{secrets.token_hex(8)}"
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=LOOP)
        self._health.supervise(self._task)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the pass: a wake-up during it makes the next pass start at once.
            self._wake.clear()
            try:
                await self.dispatch_due()
                WEBHOOK_BACKLOG.set(await self._store.backlog())
            except OUTAGES as outage:  # valkey away: the deliveries wait in it
                log.warning("%s: store unavailable: %s", LOOP, outage)
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=self._settings.webhooks_poll_s)
            finally:
                waiter.cancel()

    async def dispatch_due(self) -> None:
        """Start a drainer for each due queue this replica has room for."""
        limit = self._settings.webhooks_concurrency
        if len(self._inflight) >= limit:
            return
        now_us = micros(await self._clock.now())
        for queue in await self._store.due_queues(now_us, SCAN):
            endpoint = queue.split("/", 1)[0]
            if len(self._inflight) >= limit:
                return
            if queue in self._inflight or \
                    self._per_endpoint[endpoint] >= self._settings.webhooks_endpoint_concurrency:
                continue
            if not await self._store.take_lease(queue, self._holder, self._lease_ms):
                continue
            self._per_endpoint[endpoint] += 1
            task = asyncio.create_task(self._drain(queue), name=f"webhook {queue}")
            self._inflight[queue] = task
            task.add_done_callback(partial(self._drained, queue, endpoint))

    def _drained(self, queue: str, endpoint: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(queue, None)
        self._per_endpoint[endpoint] -= 1
        if self._per_endpoint[endpoint] <= 0:
            del self._per_endpoint[endpoint]
        if not task.cancelled() and task.exception() is not None:
            # The lease expires by itself and the head is due again: nothing is lost.
            log.warning("%s: draining %s failed: %r", LOOP, queue, task.exception())
        self._wake.set()

    async def _drain(self, queue: str) -> None:
        """Send the queue's heads one after the other until it is empty, its head is to be
        retried later, or the loop stops. The endpoint is read once per drain: were it
        deleted meanwhile, its queue is gone and recording an attempt finds nothing."""
        try:
            endpoint = await self._store.endpoint(queue.split("/", 1)[0])
            secret = None if endpoint is None else await self._store.secret(endpoint.id)
            delivery = None if secret is None else await self._store.head(queue)
            if endpoint is None or secret is None or delivery is None:
                await self._store.drop_queue(queue)
                return
            renewed = time.monotonic()
            while delivery is not None and not self._stopping:
                started_us = micros(await self._clock.now())
                if delivery.next_us is not None and delivery.next_us > started_us:
                    return  # not due yet (another replica recorded a failure meanwhile)
                delivery = await self._attempt(endpoint, secret, delivery, started_us)
                if time.monotonic() - renewed > self._lease_ms / 3_000:
                    await self._store.take_lease(queue, self._holder, self._lease_ms)
                    renewed = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await self._store.release_lease(queue, self._holder)

    async def _attempt(self, endpoint: Endpoint, secret: str, delivery: Delivery,
                       started_us: int) -> Delivery | None:
        """One attempt, recorded; the queue's next delivery to send, if any now."""
        window = started_us if delivery.window_us is None else delivery.window_us
        attempt = await self._sender.send(endpoint.url, secret, delivery.id, delivery.body)
        outcome = self._outcome(delivery, attempt, micros(await self._clock.now()), window)
        recorded, following = await self._store.finish(delivery, outcome, window,
                                                       self._settings.webhooks_log_size)
        if recorded:
            WEBHOOK_DELIVERIES.labels(outcome.result).inc()
        return following

    def _outcome(self, delivery: Delivery, attempt: Attempt, now_us: int, window: int
                 ) -> Outcome:
        if attempt.ok:
            return Outcome("delivered", now_us, None, attempt.status, attempt.body, "")
        next_us = self._backoff.next_attempt_us(window, now_us, delivery.failures + 1)
        return Outcome("failed" if next_us is None else "retry", now_us, next_us,
                       attempt.status, attempt.body, attempt.error)
