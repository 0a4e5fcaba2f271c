"""Metered limits and thresholds (R10.4) end to end: usage events through metering's consumer
into the live counters, checks answered by entitlements from them, threshold events on
`subscription-events` through the outbox.

The test catalog is the demo one plus two plans (by hand, below):

- `metered` (rank 9) prices `api_calls` (SUM of `count`) with 100 included and a hard limit of
  1,000 a period, thresholds 0.8 and 1.0 of the limit (800 and 1,000 calls); `exports` (COUNT)
  with 1 included and a soft limit of 3; `sms_sent` (SUM) with 10 included, no limit, a
  threshold of 0.5 of the included quantity (5 SMS).
- `metered-plus` (rank 10) allows 5,000 calls: the plan a denial names.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from services.metering.rebuild import LiveRebuild
from shared import keys
from shared.catalog import CatalogError
from shared.stack import Endpoints
from tests.builders import demo_catalog_with
from tests.conftest import ADMIN, RunningApp, cloud_event, eventually, produce, set_clock
from tests.entitlements.ent_support import events_for
from tests.invoicing.inv_support import private_platform

METERS = """
meters:
  - {slug: api_calls, event_type: api.calls, aggregation: SUM, value_property: count}
  - {slug: sms_sent, event_type: sms.sent, aggregation: SUM, value_property: count}
  - {slug: exports, event_type: export.completed, aggregation: COUNT}
  - {slug: peak_jobs, event_type: jobs.peak, aggregation: MAX, value_property: jobs}
  - {slug: visitors, event_type: page.viewed, aggregation: UNIQUE_COUNT,
     value_property: visitor}
"""
API_CALLS: dict[str, Any] = {
    "meter": "api_calls", "included": "100", "model": "per_unit", "unit_price": "0.01",
    "limit": {"per_period": "1000", "mode": "hard"}, "thresholds": ["0.8", "1.0"]}
METERED: dict[str, Any] = {
    "id": "metered", "rank": 9, "modules": ["sales"], "price": {"P1M": "10.00"},
    "companies": 1, "contacts": 100, "features": [],
    "usage": [API_CALLS,
              {"meter": "exports", "included": "1", "model": "per_unit", "unit_price": "1.00",
               "limit": {"per_period": "3", "mode": "soft"}},
              {"meter": "sms_sent", "included": "10", "model": "per_unit",
               "unit_price": "0.10", "thresholds": ["0.5"]}]}
METERED_PLUS: dict[str, Any] = {
    **METERED, "id": "metered-plus", "rank": 10, "price": {"P1M": "50.00"},
    "usage": [{**API_CALLS, "limit": {"per_period": "5000", "mode": "hard"}}]}
START = datetime(2027, 1, 1, tzinfo=UTC)
LIMITS_DB = 12  # a valkey database no other test uses


def write_catalog(tmp_path: Path, *plans: dict[str, Any]) -> tuple[Path, Path]:
    return demo_catalog_with(tmp_path, list(plans), METERS)


@asynccontextmanager
async def limits_platform(endpoints: Endpoints, unique: str, written: tuple[Path, Path]
                          ) -> AsyncIterator[RunningApp]:
    """A platform of the test's own, on a valkey database of its own, serving the catalog
    and meters `written`."""
    catalog, meters = written
    async with private_platform(endpoints, unique, START,
                                db=LIMITS_DB, catalog=catalog, meters=meters) as app:
        yield app


def usage(tenant: str, kind: str, data: dict[str, Any], event_id: str, at: str
          ) -> dict[str, Any]:
    return cloud_event(tenant, kind, data, event_id=event_id, time=at)


async def send(app: RunningApp, events: list[dict[str, Any]]) -> None:
    response = await app.client.post("/v1/events", json=events, headers=ADMIN)
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == []


async def check(app: RunningApp, tenant: str, feature: str, quantity: int = 1
                ) -> dict[str, Any]:
    response = await app.client.get(f"/v1/tenants/{tenant}/check", headers=ADMIN,
                                    params={"feature": feature, "quantity": quantity})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def used_reaches(app: RunningApp, tenant: str, feature: str, used: float) -> None:
    async def there() -> bool:
        return bool((await check(app, tenant, feature))["used"] == used)

    await eventually(there)


async def thresholds_published(endpoints: Endpoints, app: RunningApp, tenant: str,
                               want: int) -> list[dict[str, Any]]:
    """The tenant's `usage.threshold_reached` events, once `want` are there and a few more
    rounds of the watcher added none."""
    topic = app.parts[1].settings.subscription_events_topic  # type: ignore[attr-defined]

    async def published() -> list[dict[str, Any]]:
        return [e for e in await events_for(endpoints.kafka_bootstrap, tenant, 0, 2.0, topic)
                if e["type"] == "usage.threshold_reached"]

    deadline = time.monotonic() + 15
    while len(await published()) < want and time.monotonic() < deadline:
        pass
    await asyncio.sleep(1.0)  # five more rounds of the watcher (0.2 s)
    return await published()


async def create_metered(app: RunningApp, tenant: str) -> None:
    """A `metered` tenant from 2027-01-01 (UTC), the clock then moved to January 10."""
    response = await app.client.post("/v1/tenants", headers=ADMIN, json={
        "id": tenant, "plan": "metered", "cycle": "P1M", "anchor": "2027-01-01",
        "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"})
    assert response.status_code == 201, response.text
    await set_clock(app.client, "2027-01-10T12:00:00Z")


async def test_r10_4_a_hard_limit_denies_within_a_second_and_counts_copies_once(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """By hand, January 2027 (one period, 1,000 calls allowed):
    700 calls (sent twice) + 100 = 800 used: 200 more are covered (800 + 200 = 1,000), 201
    are denied naming `metered-plus` (5,000 allowed), remaining 200; 800 reaches 0.8 × 1,000.
    200 more, sent with copies of itself and of the first: 1,000 used, denied for one more
    within a second of the 202, remaining 0; 1.0 reached. Every copy sent or produced again
    changes nothing. February, its own period: 900 calls, 900 used, 0.8 reached again (for
    February); 100 more, 1.0 reached again. Each threshold is announced once a period."""
    tenant = f"{unique}-hard"
    async with limits_platform(endpoints, unique,
                               write_catalog(tmp_path, METERED, METERED_PLUS)) as app:
        await create_metered(app, tenant)
        jan = "2027-01-10T09:00:00Z"
        first = usage(tenant, "api.calls", {"count": 700}, "a-1", jan)
        await send(app, [first, first])
        await send(app, [first, usage(tenant, "api.calls", {"count": 100}, "a-2", jan)])
        await used_reaches(app, tenant, "api_calls", 800)
        assert await check(app, tenant, "api_calls", 200) == {
            "decision": "covered", "reason": "usage_charge", "covered_by": None,
            "limit": 1000, "used": 800, "remaining": 200}
        assert await check(app, tenant, "api_calls", 201) == {
            "decision": "denied", "reason": "limit_reached", "covered_by": None,
            "limit": 1000, "used": 800, "remaining": 200, "raise_with": "metered-plus"}

        last = usage(tenant, "api.calls", {"count": 200}, "a-3", jan)
        await send(app, [last, first, last])
        accepted = time.monotonic()
        while (await check(app, tenant, "api_calls"))["decision"] != "denied":
            assert time.monotonic() - accepted < 1.0, "not denied within one second"
        assert (await check(app, tenant, "api_calls"))["remaining"] == 0

        # Copies: sent again, and produced again straight to the topic (a replay).
        await send(app, [first, last])
        topic = app.parts[0].settings.usage_events_topic  # type: ignore[attr-defined]
        await produce(endpoints.kafka_bootstrap, topic,
                      [(tenant.encode(), orjson.dumps(e)) for e in (first, last)])
        await set_clock(app.client, "2027-01-10T12:00:00Z")  # waits until all are counted
        assert (await check(app, tenant, "api_calls"))["used"] == 1000

        await set_clock(app.client, "2027-02-03T12:00:00Z")
        await send(app, [usage(tenant, "api.calls", {"count": 900}, "b-1",
                               "2027-02-02T10:00:00Z")])
        await used_reaches(app, tenant, "api_calls", 900)
        assert (await thresholds_published(endpoints, app, tenant, 3))[-1]["data"][
            "period"]["start"] == "2027-02-01"
        await send(app, [usage(tenant, "api.calls", {"count": 100}, "b-2",
                               "2027-02-03T10:00:00Z")])
        await used_reaches(app, tenant, "api_calls", 1000)
        published = await thresholds_published(endpoints, app, tenant, 4)
        assert sorted((e["data"]["period"]["start"], e["data"]["threshold"],
                       e["data"]["level"]) for e in published) == [
            ("2027-01-01", "0.8", "800"), ("2027-01-01", "1", "1000"),
            ("2027-02-01", "0.8", "800"), ("2027-02-01", "1", "1000")]
        january = next(e for e in published if e["data"]["threshold"] == "1")
        assert january["subject"] == tenant
        assert {k: v for k, v in january["data"].items() if k != "used"} == {
            "tenant": tenant, "actor": None, "meter": "api_calls", "module": None,
            "plan": "metered", "threshold": "1", "of": "limit", "level": "1000",
            "included": "100", "limit": {"per_period": "1000", "mode": "hard"},
            "period": {"start": "2027-01-01", "end": "2027-02-01"}}
        assert january["data"]["used"] == "1000"
        await rebuilt_counters_agree(app, tenant)


async def rebuilt_counters_agree(app: RunningApp, tenant: str) -> None:
    """The counters rebuilt from ClickHouse (a broker replaced, a crash) are the consumer's:
    January 10 holds 1,000 calls, February 2 holds 900 (and the 3rd 100)."""
    part = app.parts[0]
    assert isinstance(part, MeteringPart)
    rebuild = LiveRebuild(app.runtime.clickhouse, app.runtime.redis, part.resources.events,
                          part.meters)
    utc: defaultdict[str, ZoneInfo] = defaultdict(lambda: ZoneInfo("UTC"))
    january = keys.meter_key(tenant, "api_calls", date(2027, 1, 10))
    february = keys.meter_key(tenant, "api_calls", date(2027, 2, 2))
    state = await rebuild.compute(utc)
    assert (state.counters[january], state.counters[february]) == (1000, 900)
    await app.runtime.redis.delete(february)  # lost: the rebuild writes it back
    await rebuild.run(f"test-{uuid.uuid4().hex}", utc)
    assert (await check(app, tenant, "api_calls"))["used"] == 1000


async def test_r10_4_soft_limit_billable_and_thresholds_of_the_included_quantity(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """By hand: exports (COUNT, 1 included, soft limit 3): after 2, one more is covered by the
    usage charge (3 ≤ 3); after 4, one more is billable (soft limit exceeded), remaining 0.
    SMS (SUM, 10 included, no limit): 2.25 + 2.75 = 5 used, exactly 0.5 × 10: the threshold
    of the included quantity is reached once; 5 more are covered by the included 10."""
    tenant = f"{unique}-soft"
    async with limits_platform(endpoints, unique,
                               write_catalog(tmp_path, METERED, METERED_PLUS)) as app:
        await create_metered(app, tenant)
        at = "2027-01-10T09:00:00Z"
        exports = [usage(tenant, "export.completed", {}, f"e-{n}", at) for n in range(4)]
        await send(app, exports[:2])
        await used_reaches(app, tenant, "exports", 2)
        assert (await check(app, tenant, "exports"))["reason"] == "usage_charge"
        await send(app, exports[2:])
        await used_reaches(app, tenant, "exports", 4)
        assert await check(app, tenant, "exports") == {
            "decision": "billable", "reason": "soft_limit_exceeded", "covered_by": None,
            "limit": 3, "used": 4, "remaining": 0}

        await send(app, [usage(tenant, "sms.sent", {"count": 2.25}, "s-1", at),
                         usage(tenant, "sms.sent", {"count": "2.75"}, "s-2", at)])
        await used_reaches(app, tenant, "sms_sent", 5)
        assert await check(app, tenant, "sms_sent", 5) == {
            "decision": "covered", "reason": "included", "covered_by": None,
            "limit": None, "used": 5, "remaining": None}
        batch = await app.client.post("/v1/check", headers=ADMIN, json={"checks": [
            {"tenant": tenant, "feature": "sms_sent", "quantity": 6}]})
        assert batch.json()["results"][0]["reason"] == "usage_charge"
        [event] = await thresholds_published(endpoints, app, tenant, 1)
        assert (event["data"]["meter"], event["data"]["threshold"], event["data"]["of"],
                event["data"]["level"], event["data"]["limit"]) == (
            "sms_sent", "0.5", "included", "5", None)
        # Every touch was looked at and cleared, the exports' (no threshold) included.
        touched = keys.EntitlementsKeys().meter_touched
        assert await app.runtime.redis.hlen(touched) == 0


async def test_r10_4_a_meter_priced_by_another_plan_only_is_not_limited(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """`metered-plus` prices no export: its tenants' exports are neither limited nor billed;
    an unpriced meter is not a feature the check knows."""
    tenant = f"{unique}-plus"
    async with limits_platform(endpoints, unique,
                               write_catalog(tmp_path, METERED, METERED_PLUS)) as app:
        response = await app.client.post("/v1/tenants", headers=ADMIN, json={
            "id": tenant, "plan": "metered-plus", "cycle": "P1M", "time_zone": "UTC",
            "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"})
        assert response.status_code == 201, response.text
        assert (await check(app, tenant, "exports", 50))["reason"] == "not_priced"
        unknown = await app.client.get(f"/v1/tenants/{tenant}/check", headers=ADMIN,
                                       params={"feature": "peak_jobs"})
        assert unknown.status_code == 422
        assert unknown.json()["error"]["field"] == "feature"


@pytest.mark.parametrize(("meter", "charge", "field"), [
    ("peak_jobs", {"limit": {"per_period": "10", "mode": "hard"}}, "plans.2.usage.0.limit"),
    ("visitors", {"included": "100", "thresholds": ["0.5"]}, "plans.2.usage.0.thresholds"),
])
def test_r10_4_a_limit_no_live_counter_holds_stops_every_service_naming_the_field(
        tmp_path: Path, meter: str, charge: dict[str, Any], field: str) -> None:
    """MAX and UNIQUE_COUNT cannot be added up event by event: no limit or threshold on them."""
    plan = {**METERED, "usage": [{"meter": meter, "model": "per_unit", "unit_price": "1",
                                  **charge}]}
    catalog, meters = write_catalog(tmp_path, plan)
    for make in (MeteringPart, EntitlementsPart, InvoicingPart):
        with pytest.raises(CatalogError) as raised:
            make({"catalog": catalog, "meters": meters})
        assert raised.value.field == field, make


async def test_r10_4_large_and_fractional_values_add_up_exactly(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """By hand: 11 × 999,999,999,999,999 SMS + 0.5 + 0.5 = 10,999,999,999,999,990, in one
    batch. The eleven large ones sum past 2^53, where valkey's Lua (doubles) could not add
    them exactly: 10,999,999,999,999,989 is odd, no double holds it."""
    tenant = f"{unique}-large"
    async with limits_platform(endpoints, unique,
                               write_catalog(tmp_path, METERED, METERED_PLUS)) as app:
        await create_metered(app, tenant)
        at = "2027-01-10T09:00:00Z"
        counts = ["999999999999999"] * 11 + ["0.5", "0.5"]
        await send(app, [usage(tenant, "sms.sent", {"count": count}, f"l-{n}", at)
                         for n, count in enumerate(counts)])
        await used_reaches(app, tenant, "sms_sent", 10_999_999_999_999_990)


def write_versions(tmp_path: Path) -> tuple[Path, Path]:
    """Two catalog versions: 2027-01 with `metered` as above (1,000 calls a period, hard), and
    2027-02 where `metered` allows 2,000."""
    catalog, meters = write_catalog(tmp_path, METERED, METERED_PLUS)
    raw: dict[str, Any] = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    versions = tmp_path / "versions"
    versions.mkdir()
    raw["version"] = "2027-01"
    (versions / "2027-01.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    raw["version"] = "2027-02"
    raised = {**API_CALLS, "limit": {"per_period": "2000", "mode": "hard"}}
    raw["plans"] = [{**p, "usage": [raised, *p["usage"][1:]]} if p["id"] == "metered" else p
                    for p in raw["plans"]]
    (versions / "2027-02.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    return versions, meters


async def test_r10_5_limits_and_thresholds_come_from_the_tenants_own_version(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """A `metered` tenant created on version 2027-01 while 2027-02 is current. By hand, in
    January 2027: 900 calls used; 200 more make 1,100, over its version's 1,000 (denied,
    remaining 100), though 2027-02 would allow 2,000; and 900 ≥ 0.8 × 1,000 = 800 reaches
    its threshold 0.8 at level 800 (under 2027-02 the level would be 1,600, not reached).
    Migrated to 2027-02 from February 1: in February, 1,500 calls, and 200 more are covered
    (1,700 ≤ 2,000, remaining 500); 1,500 < 0.8 × 2,000 = 1,600, so no threshold for February."""
    tenant = f"{unique}-pinned"
    async with limits_platform(endpoints, unique, write_versions(tmp_path)) as app:
        response = await app.client.post("/v1/tenants", headers=ADMIN, json={
            "id": tenant, "plan": "metered", "cycle": "P1M", "anchor": "2027-01-01",
            "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1",
            "catalog_version": "2027-01"})
        assert response.status_code == 201, response.text
        await set_clock(app.client, "2027-01-10T12:00:00Z")
        await send(app, [usage(tenant, "api.calls", {"count": 900}, "p-1",
                               "2027-01-10T09:00:00Z")])
        await used_reaches(app, tenant, "api_calls", 900)
        assert await check(app, tenant, "api_calls", 200) == {
            "decision": "denied", "reason": "limit_reached", "covered_by": None,
            "limit": 1000, "used": 900, "remaining": 100, "raise_with": "metered-plus"}
        [january] = await thresholds_published(endpoints, app, tenant, 1)
        assert (january["data"]["threshold"], january["data"]["level"],
                january["data"]["limit"]) == ("0.8", "800",
                                              {"per_period": "1000", "mode": "hard"})

        moved = await app.client.post(f"/v1/tenants/{tenant}/migrations", headers=ADMIN,
                                      json={"version": "2027-02", "confirm": True})
        assert moved.status_code == 202, moved.text
        assert moved.json()["takes_effect"].startswith("2027-02-01")
        await set_clock(app.client, "2027-02-03T12:00:00Z")
        await send(app, [usage(tenant, "api.calls", {"count": 1500}, "p-2",
                               "2027-02-02T09:00:00Z")])
        await used_reaches(app, tenant, "api_calls", 1500)
        assert await check(app, tenant, "api_calls", 200) == {
            "decision": "covered", "reason": "usage_charge", "covered_by": None,
            "limit": 2000, "used": 1500, "remaining": 500}
        assert len(await thresholds_published(endpoints, app, tenant, 1)) == 1
