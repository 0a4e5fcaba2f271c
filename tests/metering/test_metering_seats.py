"""Seats from grants and revocations arriving late and out of order (R6.3, R6.4)."""

from __future__ import annotations

import random

import orjson

from shared import keys
from shared.stack import Endpoints
from tests.conftest import RunningApp, cloud_event, eventually, produce

GRANT, REVOKE = "user.access.granted", "user.access.revoked"


async def test_r6_4_distinct_users_with_access_at_any_moment_out_of_order(
        platform: RunningApp, endpoints: Endpoints, unique: str) -> None:
    tenant = f"seats-{unique}"
    history = [
        # (user, module, kind, time)
        ("u-1", "crm", GRANT, "2026-01-05T09:00:00Z"),
        ("u-1", "crm", REVOKE, "2026-01-20T09:00:00Z"),
        ("u-2", "crm", GRANT, "2026-02-10T09:00:00Z"),
        ("u-3", "crm", GRANT, "2025-12-01T09:00:00Z"),   # held through January
        ("u-4", "crm", GRANT, "2025-12-01T09:00:00Z"),
        ("u-4", "crm", REVOKE, "2025-12-31T23:00:00Z"),  # gone before January
        ("u-5", "crm", GRANT, "2026-01-31T23:00:00Z"),   # the last hour counts
        ("u-6", "crm", GRANT, "2026-01-02T09:00:00Z"),
        ("u-6", "crm", REVOKE, "2026-01-10T09:00:00Z"),
        ("u-7", "crm", GRANT, "2026-01-01T00:00:00Z"),   # granted and revoked at one
        ("u-7", "crm", REVOKE, "2026-01-01T00:00:00Z"),  # instant: never held
        ("u-8", "sales", GRANT, "2026-01-03T09:00:00Z"),
    ]
    messages = [(tenant.encode(), orjson.dumps(cloud_event(
        tenant, kind, {"user_id": user, "module": module}, event_id=f"{tenant}-{i}",
        time=when))) for i, (user, module, kind, when) in enumerate(history)]
    random.Random(3).shuffle(messages)
    # Revocations first, in their own batch, then the grants: the worst order.
    revocations = [m for m in messages if b"revoked" in m[1]]
    await produce(endpoints.kafka_bootstrap, "usage-events", revocations)
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [m for m in messages if m not in revocations])

    async def seats(start: str, end: str) -> dict[str, int]:
        response = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
            "tenant": tenant, "meter": "users_with_access", "from": start, "to": end,
            "group_by": "module"})
        assert response.status_code == 200, response.text
        return {p["group"]["module"]: p["value"] for p in response.json()["data"]}

    january = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
    # By hand: crm had u-1, u-3, u-5, u-6 (not u-4, gone; not u-7, zero length; not u-2,
    # February); sales had u-8.
    async def january_settled() -> bool:
        return await seats(*january) == {"crm": 4, "sales": 1}

    await eventually(january_settled)
    # February: u-2 arrives, u-3 and u-5 stay, u-1 and u-6 are gone.
    assert await seats("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z") == {"crm": 3, "sales": 1}

    # The live set (R6.3) holds who has access now, ranked by grant time, ties by id.
    ranked = await platform.runtime.redis.zrange(keys.users_key(tenant, "crm"), 0, -1)
    assert ranked == ["u-3", "u-5", "u-2"]


async def test_seat_windows_follow_the_callers_zone(platform: RunningApp, endpoints: Endpoints,
                                                    unique: str) -> None:
    tenant = f"seats-tz-{unique}"
    # 23:30 UTC on 1 March is already 2 March in Paris.
    event = cloud_event(tenant, GRANT, {"user_id": "u-1", "module": "crm"},
                        event_id=f"{tenant}-1", time="2026-03-01T23:30:00Z")
    await produce(endpoints.kafka_bootstrap, "usage-events", [(None, orjson.dumps(event))])

    async def days() -> list[tuple[str, int]]:
        response = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
            "tenant": tenant, "meter": "users_with_access", "window": "day",
            "tz": "Europe/Paris", "from": "2026-03-01T00:00:00+01:00",
            "to": "2026-03-03T00:00:00+01:00"})
        return [(p["from"], p["value"]) for p in response.json()["data"]]

    await eventually(days)
    assert await days() == [("2026-03-02T00:00:00+01:00", 1)]
