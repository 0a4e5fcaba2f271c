"""Every event counted once (docs/events.md: `(source, id)` identifies an event), whether its copy
comes in the same batch, a later batch or after the consumer restarted; the stored rows, not
only the figures, hold no duplicate, so no figure depends on a background merge."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from services.metering.part import MeteringPart
from shared import keys
from shared.clickhouse.client import connect
from shared.stack import Endpoints
from tests.conftest import RunningApp, cloud_event, eventually, produce


def _email(tenant: str, n: int, count: int = 1, day: int = 15) -> tuple[bytes, bytes]:
    event = cloud_event(tenant, "email.sent", {"count": count}, event_id=f"{tenant}-e-{n}",
                        time=f"2026-01-{day:02d}T10:00:00Z")
    return tenant.encode(), orjson.dumps(event)


async def _usage(platform: RunningApp, tenant: str, **params: Any) -> list[dict[str, Any]]:
    query = {"tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
             "to": "2026-02-01T00:00:00Z", **params}
    response = await platform.client.get("/v1/usage", params=query,
                                         headers=platform.as_admin())
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def _stored_rows(endpoints: Endpoints, tenant: str) -> int:
    rows = await connect(endpoints.clickhouse_dsn).rows(
        "SELECT count() FROM usage_events WHERE tenant = {t:String}", {"t": tenant})
    return int(rows[0][0])


async def _counted(platform: RunningApp, tenant: str, expected: int) -> bool:
    data = await _usage(platform, tenant)
    return bool(data) and data[0]["value"] == expected


async def test_copies_in_the_same_batch_count_once(platform: RunningApp, endpoints: Endpoints,
                                                   unique: str) -> None:
    tenant = f"same-batch-{unique}"
    messages = [_email(tenant, n, count=n) for n in (1, 2, 3)]
    # Each event three times over, interleaved, in one send: one poll reads them together.
    await produce(endpoints.kafka_bootstrap, "usage-events", messages * 3)
    await eventually(lambda: _counted(platform, tenant, 1 + 2 + 3))
    await platform.runtime.scheduler.advance_to(await platform.runtime.clock.now())
    assert await _stored_rows(endpoints, tenant) == 3
    emails = await platform.runtime.redis.get(keys.emails_key(tenant, date(2026, 1, 15)))
    assert emails == "6"


async def test_a_copy_in_a_later_batch_counts_once(platform: RunningApp, endpoints: Endpoints,
                                                   unique: str) -> None:
    tenant = f"later-batch-{unique}"
    await produce(endpoints.kafka_bootstrap, "usage-events", [_email(tenant, 1, count=5)])
    await eventually(lambda: _counted(platform, tenant, 5))
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [_email(tenant, 1, count=5), _email(tenant, 2, count=7)])
    await eventually(lambda: _counted(platform, tenant, 12))
    # The late copy was read and dropped before the newer event was counted.
    assert await _stored_rows(endpoints, tenant) == 2
    emails = await platform.runtime.redis.get(keys.emails_key(tenant, date(2026, 1, 15)))
    assert emails == "12"


async def test_a_copy_after_a_restart_counts_once(platform: RunningApp, endpoints: Endpoints,
                                                  unique: str) -> None:
    tenant = f"restart-{unique}"
    await produce(endpoints.kafka_bootstrap, "usage-events", [_email(tenant, 1, count=4)])
    await eventually(lambda: _counted(platform, tenant, 4))
    (metering,) = [p for p in platform.parts if isinstance(p, MeteringPart)]
    await metering.stop()
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [_email(tenant, 1, count=4), _email(tenant, 2, count=1)])
    await metering.start(platform.runtime)
    await eventually(lambda: _counted(platform, tenant, 5), within=20)
    assert await _stored_rows(endpoints, tenant) == 2


async def test_a_copy_older_than_the_claim_window_is_found_in_clickhouse(
        platform: RunningApp, endpoints: Endpoints, unique: str) -> None:
    """Redis forgets claims after the dedupe window; ClickHouse is the record."""
    tenant = f"old-{unique}"
    old = cloud_event(tenant, "email.sent", {"count": 3}, event_id=f"{tenant}-old",
                      time="2025-01-10T10:00:00Z")
    await produce(endpoints.kafka_bootstrap, "usage-events", [(None, orjson.dumps(old))])
    query = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
    await eventually(lambda: _usage(platform, tenant, **query))
    # Forget every claim of this event, as an expired TTL would.
    async for key in platform.runtime.redis.scan_iter("claim:*"):
        await platform.runtime.redis.delete(key)
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [(None, orjson.dumps(old)), _email(tenant, 9, count=1)])
    await eventually(lambda: _counted(platform, tenant, 1))
    assert [p["value"] for p in await _usage(platform, tenant, **query)] == [3]
    assert await _stored_rows(endpoints, tenant) == 2


async def test_the_http_ingest_and_kafka_share_one_identity(platform: RunningApp,
                                                            unique: str) -> None:
    tenant = f"http-{unique}"
    event = cloud_event(tenant, "email.sent", {"count": 2}, event_id=f"{tenant}-http")
    for _ in range(3):
        response = await platform.client.post("/v1/events", json=event,
                                              headers=platform.as_admin())
        assert response.status_code == 202
        assert response.json() == {"accepted": 1, "rejected": []}
    # The clock's barrier waits for metering to catch up with what was accepted (docs/api.md).
    await platform.client.put("/v1/clock", json={"now": "2026-01-01T00:00:00Z"},
                              headers=platform.as_admin())
    assert [p["value"] for p in await _usage(platform, tenant)] == [2]
