"""Webhook tests' harness: a real HTTP receiver on loopback (uvicorn), and a platform of the
test's own (its Redis database, topics, consumer groups and ClickHouse database), with
loopback endpoints allowed as in local development."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import uvicorn
from standardwebhooks import Webhook

from services.demo_webhooks import request_body
from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from services.webhooks.part import WebhooksPart
from shared.app import ServicePart
from shared.stack import Endpoints, free_port
from tests.conftest import (
    ADMIN,
    RunningApp,
    flush_database,
    redis_db_url,
    serving,
    settings_for,
)

WEBHOOKS_DB = 13


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST. `mode`: `ok` answers 204, `hang`
    never answers, `garbage` answers 200 with bytes that are no JSON. `stop()` takes it
    down (connections refused) and `start()` brings it back on the same port."""

    mode: str = "ok"
    delay_s: float = 0.0  # how long each answer takes
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        if self.mode == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay_s)
        status, answer = (200, b"\x00\xff not json") if self.mode == "garbage" else (204, b"")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    async def start(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        self._server = self._task = None

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every request's event, each checked with the `standardwebhooks` library (raises
        on a bad signature or a stale timestamp)."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.received]

    def deduplicated(self) -> list[Received]:
        """What a receiver deduplicating by `webhook-id` keeps: the first of each."""
        seen: set[str] = set()
        kept = []
        for request in self.received:
            if request.headers["webhook-id"] not in seen:
                seen.add(request.headers["webhook-id"])
                kept.append(request)
        return kept


@contextlib.asynccontextmanager
async def receiver(mode: str = "ok", delay_s: float = 0.0) -> AsyncIterator[Receiver]:
    running = Receiver(mode, delay_s)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def platform_values(endpoints: Endpoints, unique: str, clock_start: datetime,
                    db: int = WEBHOOKS_DB, **extra: Any) -> dict[str, Any]:
    return settings_for(
        endpoints, redis_url=redis_db_url(endpoints, db), clock_start=clock_start,
        usage_events_topic=f"usage-wh-{unique}", consumer_group=f"metering-wh-{unique}",
        subscription_events_topic=f"subscriptions-wh-{unique}",
        invoicing_consumer_group=f"invoicing-wh-{unique}",
        webhooks_consumer_group=f"webhooks-{unique}",
        invoicing_clickhouse_database=f"wh_{unique}", webhooks_allow_http_loopback=True,
        entitlements_outbox_poll_s=0.05, invoicing_outbox_poll_s=0.05,
        webhooks_poll_s=0.05, **extra)


@contextlib.asynccontextmanager
async def webhook_platform(endpoints: Endpoints, unique: str, clock_start: datetime,
                           db: int = WEBHOOKS_DB, **extra: Any) -> AsyncIterator[RunningApp]:
    """The four parts on a Redis database of the test's own, flushed first."""
    values = platform_values(endpoints, unique, clock_start, db, **extra)
    await flush_database(values["redis_url"])
    parts: list[ServicePart] = [MeteringPart(values), EntitlementsPart(values),
                                InvoicingPart(values), WebhooksPart(values)]
    async with serving(values, parts) as running:
        yield running


async def register(client: httpx.AsyncClient, url: str, events: list[str],
                   tenant: str | None = None, headers: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, "events": events,
                                                       "tenant": tenant},
                                 headers=headers or ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(client: httpx.AsyncClient, webhook: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook}/deliveries?limit=500",
                                headers=ADMIN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found
