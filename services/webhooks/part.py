"""Webhooks wired onto a runtime: store, service, routes, and (with `WEBHOOKS_WORKER`) the
consumer of `subscription-events` and the delivery loop."""

from __future__ import annotations

from typing import Any

from services.webhooks.api import router
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.feed import DeliveryFeed
from services.webhooks.sender import Sender
from services.webhooks.service import WebhooksService
from services.webhooks.store import WebhookStore
from shared.app import Runtime, stop_each
from shared.keys import WebhooksKeys
from shared.settings import WebhooksSettings


class WebhooksPart:
    name = "webhooks"
    router = router

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = WebhooksSettings(**(overrides or {}))
        self.feed: DeliveryFeed | None = None
        self.dispatcher: Dispatcher | None = None
        self.sender: Sender | None = None

    async def start(self, runtime: Runtime) -> None:
        settings = self.settings
        store = WebhookStore(runtime.redis, WebhooksKeys(settings.webhooks_key_prefix))
        runtime.app_state.webhooks = WebhooksService(store, runtime.redis, runtime.clock,
                                                     settings)
        if not settings.webhooks_worker:
            return
        self.sender = Sender(settings.webhooks_timeout_s, settings.webhooks_allow_http_loopback)
        self.dispatcher = Dispatcher(store, self.sender, runtime.clock, settings,
                                     runtime.health)
        self.dispatcher.start()
        self.feed = DeliveryFeed(settings, store, runtime.clock, runtime.health,
                                 self.dispatcher.notify)
        await self.feed.start()

    async def stop(self) -> None:
        await stop_each(self.feed, self.dispatcher, self.sender)
        self.feed = self.dispatcher = self.sender = None
