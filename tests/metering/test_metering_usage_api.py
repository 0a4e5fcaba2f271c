"""GET /v1/usage (docs/api.md): windows in any IANA zone, group-by, module filter, provenance
(R9.6), and a 4xx naming every bad parameter."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.stack import Endpoints
from tests.conftest import RunningApp, cloud_event, eventually, produce


@pytest.fixture(scope="module")
async def dst_tenant(platform: RunningApp, endpoints: Endpoints) -> str:
    """E-mails around Europe/Paris's spring change (29 March 2026, 02:00 -> 03:00)."""
    tenant = f"usage-dst-{uuid.uuid4().hex[:8]}"
    sends = [("2026-03-28T23:30:00Z", 1, "a"),   # 00:30 on the 29th in Paris
             ("2026-03-29T12:00:00Z", 2, "b"),   # 14:00 CEST on the 29th
             ("2026-03-30T00:30:00Z", 4, "a")]   # 02:30 CEST on the 30th
    await produce(endpoints.kafka_bootstrap, "usage-events", [
        (tenant.encode(), orjson.dumps(cloud_event(
            tenant, "email.sent", {"count": count, "campaign_id": campaign},
            event_id=f"{tenant}-{i}", time=when)))
        for i, (when, count, campaign) in enumerate(sends)])
    await eventually(lambda: _data(platform, tenant, {"from": "2026-03-01T00:00:00Z",
                                                      "to": "2026-04-01T00:00:00Z"}), within=30)
    return tenant


async def _data(platform: RunningApp, tenant: str, params: dict[str, Any],
                meter: str = "emails_sent") -> list[dict[str, Any]]:
    response = await platform.client.get("/v1/usage", headers=platform.as_admin(),
                                         params={"tenant": tenant, "meter": meter, **params})
    assert response.status_code == 200, response.text
    assert response.json()["tenant"] == tenant
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_day_windows_follow_local_midnight_across_dst(platform: RunningApp,
                                                            dst_tenant: str) -> None:
    data = await _data(platform, dst_tenant, {
        "window": "day", "tz": "Europe/Paris", "from": "2026-03-28T00:00:00+01:00",
        "to": "2026-03-31T00:00:00+02:00"})
    # The 29th is 23 hours long: it starts at +01:00 and ends at +02:00.
    assert data == [
        {"from": "2026-03-29T00:00:00+01:00", "to": "2026-03-30T00:00:00+02:00",
         "group": {}, "value": 3},
        {"from": "2026-03-30T00:00:00+02:00", "to": "2026-03-31T00:00:00+02:00",
         "group": {}, "value": 4},
    ]


async def test_hour_windows_in_a_half_hour_zone(platform: RunningApp, dst_tenant: str) -> None:
    data = await _data(platform, dst_tenant, {
        "window": "hour", "tz": "Asia/Kolkata", "from": "2026-03-29T12:00:00Z",
        "to": "2026-03-29T13:00:00Z"})
    assert data == [{"from": "2026-03-29T17:30:00+05:30", "to": "2026-03-29T18:30:00+05:30",
                     "group": {}, "value": 2}]


async def test_month_window_grouped_by_campaign(platform: RunningApp, dst_tenant: str) -> None:
    data = await _data(platform, dst_tenant, {
        "window": "month", "tz": "UTC", "group_by": "campaign_id",
        "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"})
    assert [(p["group"], p["value"]) for p in data] == [({"campaign_id": "a"}, 5),
                                                         ({"campaign_id": "b"}, 2)]
    assert data[0]["from"] == "2026-03-01T00:00:00+00:00"


async def test_the_events_behind_a_figure(platform: RunningApp, dst_tenant: str) -> None:
    response = await platform.client.get("/v1/usage/events", headers=platform.as_admin(), params={
        "tenant": dst_tenant, "meter": "emails_sent", "from": "2026-03-29T00:00:00Z",
        "to": "2026-04-01T00:00:00Z"})
    assert response.status_code == 200
    refs = response.json()["data"]
    assert [r["id"] for r in refs] == [f"{dst_tenant}-1", f"{dst_tenant}-2"]
    assert all(r["source"] == "tests" and r["topic"] == "usage-events" for r in refs)
    assert all(r["offset"] >= 0 and r["partition"] >= 0 for r in refs)


@pytest.mark.parametrize(("params", "status", "field"), [
    ({"tz": "Mars/Olympus"}, 422, "tz"),
    ({"to": "2025-01-01T00:00:00Z"}, 422, "to"),
    ({"window": "week"}, 422, "window"),
    ({"meter": "no_such_meter"}, 404, "meter"),
    ({"group_by": "nope"}, 422, "group_by"),
    ({"from": "yesterday"}, 422, "from"),
    ({"from": "2026-03-01T00:00:00"}, 422, "from"),
    ({"window": "hour", "from": "2000-01-01T00:00:00Z"}, 422, "window"),
    ({"tenant": None}, 422, "tenant"),
    ({"to": None}, 422, "to"),
])
async def test_a_bad_parameter_is_named(platform: RunningApp, params: dict[str, Any],
                                        status: int, field: str) -> None:
    query = {"tenant": "acme", "meter": "emails_sent", "from": "2026-03-01T00:00:00Z",
             "to": "2026-04-01T00:00:00Z", **params}
    response = await platform.client.get(
        "/v1/usage", headers=platform.as_admin(),
        params={k: v for k, v in query.items() if v is not None})
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
