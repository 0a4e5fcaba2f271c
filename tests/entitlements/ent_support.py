"""Helpers shared by the entitlements tests (not a conftest: fixtures come from tests/).

`isolated_app` starts an entitlements-only app on its own Redis database, so that its manual
clock, tenants and outbox are its own: tests that need exact dates (R4.2's example, R2.3's
anchors) set the clock where they want without moving the session's shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.entitlements.part import EntitlementsPart
from shared.settings import SUBSCRIPTION_EVENTS_TOPIC
from shared.stack import Endpoints
from tests.conftest import (
    ADMIN,
    OWNER,
    RunningApp,
    flush_database,
    redis_db_url,
    serving,
    settings_for,
)

ISOLATED_DB = 7


@asynccontextmanager
async def isolated_app(endpoints: Endpoints, clock_start: datetime, *, flush: bool = True,
                       db: int = ISOLATED_DB, **extra: Any) -> AsyncIterator[RunningApp]:
    """An app with only the entitlements part, on a Redis database of its own."""
    url = redis_db_url(endpoints, db)
    if flush:
        await flush_database(url)
    # No invoicing part here: a purchase need not wait for an invoice number.
    values = settings_for(endpoints, redis_url=url, clock_start=clock_start,
                          entitlements_invoice_wait_s=0, **extra)
    common = {k: v for k, v in values.items() if k not in ("batch_max_wait_ms",
                                                           "retry_initial_s", "retry_max_s")}
    async with serving(values, [EntitlementsPart(common)]) as running:
        yield running


async def purchase(client: httpx.AsyncClient, tenant: str, item: str, *,
                   quantity: int | None = None, confirm: bool = True,
                   actor: dict[str, str] | None = None, action: str = "buy",
                   headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"actor": actor or OWNER, "action": action, "item": item,
                            "confirm": confirm}
    if quantity is not None:
        body["quantity"] = quantity
    return await client.post(f"/v1/tenants/{tenant}/purchases", json=body,
                             headers=headers or ADMIN)


async def tenant_doc(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tenants/{tenant}", headers=ADMIN)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def history(client: httpx.AsyncClient, tenant: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/tenants/{tenant}/history?limit=1000", headers=ADMIN)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def events_for(bootstrap: str, tenant: str, want: int = 1, within: float = 10.0,
                     topic: str = SUBSCRIPTION_EVENTS_TOPIC) -> list[dict[str, Any]]:
    """Every `subscription-events` message of `tenant` so far (waits for at least `want`);
    `topic`: a private platform's name for it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        idle = 0
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                idle += 1
                if len(found) >= want and idle >= 2:
                    break
                continue
            idle = 0
            for records in batch.values():
                for record in records:
                    if record.key == tenant.encode() and record.value is not None:
                        found.append(orjson.loads(record.value))
    finally:
        await consumer.stop()
    return found
