"""ClickHouse or valkey unreachable: the consumer retries with back-off, commits nothing, and
catches up when they return, with nothing lost and nothing doubled."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from services.metering.part import MeteringPart
from shared.clickhouse.client import connect
from shared.stack import EmbeddedStack, Endpoints
from tests.conftest import RunningApp, cloud_event, eventually, produce, settles


def _retries(step: str) -> float:
    return REGISTRY.get_sample_value("metering_retries_total", {"step": step}) or 0.0


async def _committed(platform: RunningApp) -> dict[int, int | None]:
    (metering,) = [p for p in platform.parts if isinstance(p, MeteringPart)]
    assert metering.consumer is not None
    consumer = metering.consumer.consumer
    partitions = consumer.partitions_for_topic("usage-events") or set()
    return {p: await consumer.committed(TopicPartition("usage-events", p)) for p in partitions}


async def _steady_commits(platform: RunningApp) -> dict[int, int | None]:
    """The committed offsets once they stop moving: a usage total can already show a batch
    whose commit, a moment later, is still to come."""
    last = await _committed(platform)
    for _ in range(40):
        await asyncio.sleep(0.25)
        now = await _committed(platform)
        if now == last:
            break
        last = now
    return last


async def _total(platform: RunningApp, tenant: str) -> int:
    response = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
        "tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00Z"})
    if response.status_code != 200:
        return -1
    return sum(p["value"] for p in response.json()["data"])


def _emails(tenant: str, first: int, last: int) -> list[tuple[bytes | None, bytes]]:
    return [(tenant.encode(), orjson.dumps(cloud_event(
        tenant, "email.sent", {"count": 1}, event_id=f"{tenant}-{n}"))) for n in
        range(first, last)]


async def test_valkey_down_then_back(platform: RunningApp, endpoints: Endpoints,
                                     stack: EmbeddedStack, unique: str) -> None:
    tenant = f"valkey-down-{unique}"
    await produce(endpoints.kafka_bootstrap, "usage-events", _emails(tenant, 0, 10))
    await settles(lambda: _total(platform, tenant), 10)
    before = await _steady_commits(platform)
    retries = _retries("redis")
    stack.valkey.stop()
    try:
        await produce(endpoints.kafka_bootstrap, "usage-events", _emails(tenant, 5, 30))
        await eventually(lambda: _retried("redis", retries + 2), within=15)
        assert await _committed(platform) == before  # nothing committed meanwhile
    finally:
        stack.valkey.start()
    await settles(lambda: _total(platform, tenant), 30, within=20)
    # The batch's commit follows its write: a moment later, not with it.
    await eventually(lambda: _committed_past(platform, before), within=40)


async def _committed_past(platform: RunningApp, before: dict[int, int | None]) -> bool:
    return await _committed(platform) != before


async def test_clickhouse_writes_failing_then_back(platform: RunningApp, endpoints: Endpoints,
                                                   unique: str) -> None:
    tenant = f"ch-down-{unique}"
    clickhouse = connect(endpoints.clickhouse_dsn)
    before = await _steady_commits(platform)
    retries = _retries("clickhouse")
    await clickhouse.command("DETACH TABLE usage_events")
    try:
        await produce(endpoints.kafka_bootstrap, "usage-events", _emails(tenant, 0, 20))
        await eventually(lambda: _retried("clickhouse", retries + 2), within=15)
        assert await _committed(platform) == before
        # The routes answer 503 naming the part, never a 500.
        response = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
            "tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
            "to": "2026-02-01T00:00:00Z"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "clickhouse_unavailable"
    finally:
        await clickhouse.command("ATTACH TABLE usage_events")
    await settles(lambda: _total(platform, tenant), 20, within=20)
    rows = await clickhouse.rows("SELECT count() FROM usage_events WHERE tenant = {t:String}",
                                 {"t": tenant})
    assert rows == [(20,)]


async def _retried(step: str, at_least: float) -> bool:
    return _retries(step) >= at_least
