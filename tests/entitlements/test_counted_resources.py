"""Counted resources (R7.4) end to end: events through metering's real consumer into the live
sets, checks answered by entitlements from them, packs bought through the API.

The session platform runs the demo catalog (deploy/catalog/2026-11.yaml): essentials grants 2,000
contacts and no secondary account; `contacts-1000` adds 1,000 contacts a unit,
`sub-accounts` one secondary account a unit. A platform of its own runs a test catalog that
declares `projects` (3 on essentials, 10 on professional, `projects-5` packs): limited and
checked with no code of its own.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from services.entitlements.part import EntitlementsPart
from services.metering.part import MeteringPart
from services.metering.rebuild import LiveRebuild
from shared import keys
from shared.catalog import CatalogError
from shared.settings import CommonSettings
from shared.stack import Endpoints
from tests.conftest import (
    ADMIN,
    RunningApp,
    cloud_event,
    create_tenant,
    eventually,
    flush_database,
    produce,
    redis_db_url,
    serving,
    settings_for,
)
from tests.entitlements.ent_support import purchase, tenant_doc

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "catalog" / "2026-11.yaml"
PROJECTS_DB = 2  # a valkey database no other test uses


async def _send(app: RunningApp, events: list[dict[str, Any]]) -> None:
    r = await app.client.post("/v1/events", json=events, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": len(events), "rejected": []}


def _event(tenant: str, kind: str, data: dict[str, Any], event_id: str | None = None
           ) -> dict[str, Any]:
    return cloud_event(tenant, kind, data, event_id=event_id or uuid.uuid4().hex)


async def _check(app: RunningApp, tenant: str, query: str) -> dict[str, Any]:
    r = await app.client.get(f"/v1/tenants/{tenant}/check?{query}", headers=ADMIN)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def _used(app: RunningApp, tenant: str, resource: str, expected: int) -> None:
    async def counted() -> bool:
        return bool((await _check(app, tenant, f"feature={resource}"))["used"] == expected)
    await eventually(counted, within=20)


async def test_r7_4_contacts_limit_reached_and_raised_by_a_pack_of_1000(
        platform: RunningApp, unique: str) -> None:
    """2,000 contacts fill essentials' 2,000: one more is denied naming contacts-1000, and
    the plan stays essentials (never an automatic upgrade, seed 002). One lot makes the limit
    3,000: 1,000 more are covered by it, 1,001 are not."""
    tenant = f"ctc-{unique}"
    await create_tenant(platform.client, tenant)
    start = await _check(platform, tenant, "feature=contacts&quantity=2000")
    assert start == {"decision": "covered", "reason": "plan", "covered_by": None,
                     "limit": 2000, "used": 0, "remaining": 2000}
    await _send(platform, [_event(tenant, "contact.created", {"contact_id": f"c-{i}"})
                           for i in range(2000)])
    await _used(platform, tenant, "contacts", 2000)
    full = await _check(platform, tenant, "feature=contacts&quantity=1")
    assert full == {"decision": "denied", "reason": "limit_reached", "covered_by": None,
                    "limit": 2000, "used": 2000, "remaining": 0, "raise_with": "contacts-1000"}
    document = await tenant_doc(platform.client, tenant)
    assert (document["plan"], document["lots"]) == ("essentials", [])

    bought = await purchase(platform.client, tenant, "contacts-1000")
    assert bought.status_code == 201, bought.text
    lot = bought.json()["lot"]["id"]
    more = await _check(platform, tenant, "feature=contacts&quantity=1000")
    assert more == {"decision": "covered", "reason": "resource_pack", "covered_by": lot,
                    "limit": 3000, "used": 2000, "remaining": 1000}
    beyond = await _check(platform, tenant, "feature=contacts&quantity=1001")
    assert (beyond["decision"], beyond["raise_with"]) == ("denied", "contacts-1000")
    batch = await platform.client.post("/v1/check", headers=ADMIN, json={"checks": [
        {"tenant": tenant, "feature": "contacts", "quantity": 1000},
        {"tenant": tenant, "feature": "contacts", "quantity": 1001},
        {"tenant": tenant, "feature": "sub_accounts"}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"] == [more, beyond, {
        "decision": "denied", "reason": "limit_reached", "covered_by": None, "limit": 0,
        "used": 0, "remaining": 0, "raise_with": "sub-accounts"}]


async def test_r7_4_a_secondary_account_beyond_the_pack_waits_for_a_second_lot(
        platform: RunningApp, unique: str) -> None:
    """Essentials grants no secondary account (seed 001: each is an add-on): the first needs
    a lot of `sub-accounts`; with one account created, the second is denied until a second
    lot is bought."""
    tenant = f"sub-{unique}"
    await create_tenant(platform.client, tenant)
    none = await _check(platform, tenant, "feature=sub_accounts")
    assert (none["decision"], none["limit"], none["raise_with"]) == ("denied", 0,
                                                                     "sub-accounts")
    first = (await purchase(platform.client, tenant, "sub-accounts")).json()["lot"]["id"]
    ok = await _check(platform, tenant, "feature=sub_accounts")
    assert (ok["decision"], ok["reason"], ok["covered_by"], ok["limit"]) == (
        "covered", "resource_pack", first, 1)
    await _send(platform, [_event(tenant, "subaccount.created", {"account_id": "acc-1"})])
    await _used(platform, tenant, "sub_accounts", 1)
    beyond = await _check(platform, tenant, "feature=sub_accounts")
    assert beyond == {"decision": "denied", "reason": "limit_reached", "covered_by": None,
                      "limit": 1, "used": 1, "remaining": 0, "raise_with": "sub-accounts"}
    second = (await purchase(platform.client, tenant, "sub-accounts")).json()["lot"]["id"]
    allowed = await _check(platform, tenant, "feature=sub_accounts")
    assert allowed == {"decision": "covered", "reason": "resource_pack", "covered_by": second,
                       "limit": 2, "used": 1, "remaining": 1}


async def test_r7_4_copies_replays_and_strays_never_double_count(
        platform: RunningApp, endpoints: Endpoints, unique: str) -> None:
    """c-1 created by e-1, e-1 again over HTTP and over Kafka (copies), and by e-2 (a replay
    under another id); c-9 deleted, never created; c-2 created then deleted twice (e-4, e-5)
    and e-4 again. The set ends as {c-1}: 1 contact, never 2 and never negative. Every
    distinct event is stored (6 of them); the copies are not."""
    tenant = f"dup-{unique}"
    await create_tenant(platform.client, tenant)

    def ev(event_id: str, kind: str, contact: str) -> dict[str, Any]:
        return _event(tenant, f"contact.{kind}", {"contact_id": contact}, f"{unique}-{event_id}")

    await _send(platform, [ev("e-1", "created", "c-1"), ev("e-1", "created", "c-1"),
                           ev("e-2", "created", "c-1"), ev("e-9", "deleted", "c-9"),
                           ev("e-3", "created", "c-2"), ev("e-4", "deleted", "c-2"),
                           ev("e-5", "deleted", "c-2")])
    await produce(endpoints.kafka_bootstrap, "usage-events", [
        (tenant.encode(), orjson.dumps(ev("e-1", "created", "c-1"))),
        (tenant.encode(), orjson.dumps(ev("e-4", "deleted", "c-2"))),
        # After them on the tenant's partition: once it counts, all of them were read.
        (tenant.encode(), orjson.dumps(_event(tenant, "subaccount.created",
                                              {"account_id": "marker"})))])
    await _used(platform, tenant, "sub_accounts", 1)
    assert (await _check(platform, tenant, "feature=contacts"))["used"] == 1
    members = await platform.runtime.redis.smembers(keys.resource_key(tenant, "contacts"))
    assert {m.decode() if isinstance(m, bytes) else m for m in members} == {"c-1"}
    rows = await platform.runtime.clickhouse.rows(
        "SELECT count(), uniqExact(source, id) FROM usage_events WHERE tenant = {t:String}"
        " AND type LIKE 'contact.%'", {"t": tenant})
    assert rows == [(6, 6)]


@pytest.fixture
async def dlq_reader(endpoints: Endpoints) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer("usage-events.dlq", bootstrap_servers=endpoints.kafka_bootstrap,
                                group_id=f"dlq-reader-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=1000, heartbeat_interval_ms=200)
    await consumer.start()
    yield consumer
    await consumer.stop()


async def test_r7_4_bad_resource_events_go_to_the_dlq_with_their_reason(
        platform: RunningApp, endpoints: Endpoints, dlq_reader: AIOKafkaConsumer,
        unique: str) -> None:
    tenant = f"bad-{unique}"
    cases: dict[bytes, tuple[str, str]] = {
        orjson.dumps(_event(tenant, "contact.created", {})): ("missing_field",
                                                              "data.contact_id"),
        orjson.dumps(_event(tenant, "contact.created", {"contact_id": ""})): (
            "invalid_field", "data.contact_id"),
        orjson.dumps(_event(tenant, "contact.deleted", {"contact_id": 7})): (
            "invalid_field", "data.contact_id"),
        orjson.dumps(_event(tenant, "subaccount.deleted", {"account_id": "a" * 257})): (
            "invalid_field", "data.account_id"),
        # Not declared by the demo catalog: refused as before (the test catalog's type).
        orjson.dumps(_event(tenant, "project.created", {"project_id": "p-1"})): (
            "unknown_type", "type"),
    }
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [(tenant.encode(), value) for value in cases] + [(tenant.encode(), orjson.dumps(
                      _event(tenant, "contact.created", {"contact_id": "good"})))])
    found: dict[bytes | None, dict[str, str]] = {}

    async def all_dead() -> bool:
        for records in (await dlq_reader.getmany(timeout_ms=200)).values():
            for record in records:
                if record.value in cases:
                    found[record.value] = {k: v.decode() for k, v in record.headers}
        return set(found) == set(cases)

    await eventually(all_dead, within=20)
    for value, (code, field) in cases.items():
        assert (found[value]["error.code"], found[value]["error.field"]) == (code, field)
        assert found[value]["error.message"]
    await create_tenant(platform.client, tenant)
    await _used(platform, tenant, "contacts", 1)  # the stream went on: the good one counts
    over_http = await platform.client.post(
        "/v1/events", json=_event(tenant, "contact.created", {"contact_id": " "}),
        headers=ADMIN)
    assert over_http.status_code == 422
    assert over_http.json()["error"]["field"] == "data.contact_id"


# --- a resource declared only by a test catalog ---------------------------------------------


def _projects_catalog(path: Path) -> Path:
    """The demo catalog plus `projects`: 3 on essentials, 10 on professional, projects-5."""
    raw = yaml.safe_load(DEMO.read_text())
    raw["resources"].append({"id": "projects", "created": "project.created",
                             "deleted": "project.deleted", "key": "project_id"})
    allowances = {"essentials": 3, "professional": 10}
    for plan in raw["plans"]:
        plan.setdefault("allowances", {})["projects"] = allowances[plan["id"]]
    raw["packs"].append({"id": "projects-5", "kind": "resource", "resource": "projects",
                         "units": 5, "price": {"P1M": "9.00", "P1Y": "90.00"}})
    path.write_text(yaml.safe_dump(raw))
    return path


@asynccontextmanager
async def _projects_platform(endpoints: Endpoints, catalog: Path) -> AsyncIterator[RunningApp]:
    """Metering and entitlements on the test catalog, with their own topics, group and
    valkey database (so its clock, outbox and live counters are its own)."""
    url = redis_db_url(endpoints, PROJECTS_DB)
    await flush_database(url)
    name = uuid.uuid4().hex[:8]
    values = settings_for(endpoints, redis_url=url, catalog=catalog,
                          usage_events_topic=f"usage-{name}",
                          usage_events_dlq_topic=f"usage-{name}.dlq",
                          consumer_group=f"metering-{name}",
                          subscription_events_topic=f"subscriptions-{name}",
                          entitlements_invoice_wait_s=0)
    common = {k: v for k, v in values.items()
              if k in CommonSettings.model_fields or k.startswith("entitlements_")}
    async with serving(values, [MeteringPart(values), EntitlementsPart(common)]) as running:
        yield running


async def test_r7_4_a_resource_declared_by_the_catalog_alone_is_limited_and_checked(
        endpoints: Endpoints, tmp_path: Path, unique: str) -> None:
    """Three projects fill essentials' 3: the 4th is denied naming projects-5, which makes the
    limit 8; a deleted project frees its place; the live set rebuilt from ClickHouse holds the
    same ids."""
    catalog = _projects_catalog(tmp_path / "catalog.yaml")
    async with _projects_platform(endpoints, catalog) as app:
        tenant = f"prj-{unique}"
        await create_tenant(app.client, tenant)
        await _send(app, [_event(tenant, "project.created", {"project_id": f"p-{i}"})
                          for i in (1, 2, 3)])
        await _used(app, tenant, "projects", 3)
        full = await _check(app, tenant, "feature=projects")
        assert full == {"decision": "denied", "reason": "limit_reached", "covered_by": None,
                        "limit": 3, "used": 3, "remaining": 0, "raise_with": "projects-5"}
        lot = (await purchase(app.client, tenant, "projects-5")).json()["lot"]["id"]
        more = await _check(app, tenant, "feature=projects&quantity=5")
        assert (more["decision"], more["reason"], more["covered_by"], more["limit"],
                more["remaining"]) == ("covered", "resource_pack", lot, 8, 5)
        await _send(app, [_event(tenant, "project.deleted", {"project_id": "p-2"})])
        await _used(app, tenant, "projects", 2)

        redis = app.runtime.redis
        key = keys.resource_key(tenant, "projects")
        part = next(p for p in app.parts if isinstance(p, MeteringPart))
        rebuild = LiveRebuild(app.runtime.clickhouse, redis, part.resources.events)
        utc: defaultdict[str, ZoneInfo] = defaultdict(lambda: ZoneInfo("UTC"))
        state = await rebuild.compute(utc)
        assert state.members[key] == {"p-1", "p-3"}
        await redis.delete(key)  # lost: the rebuild writes it back
        await rebuild.run(f"test-{unique}", utc)
        assert {m.decode() if isinstance(m, bytes) else m
                for m in await redis.smembers(key)} == {"p-1", "p-3"}
        assert (await _check(app, tenant, "feature=projects"))["used"] == 2


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r["resources"].append({"id": "firms", "created": "company.created",
                                      "deleted": "firm.deleted", "key": "id"}),
     "resources.2.created"),
    (lambda r: r["plans"][0]["allowances"].update({"projects": 3}),
     "plans.0.allowances.projects"),
])
def test_r7_4_an_invalid_declaration_stops_every_service_naming_the_field(
        tmp_path: Path, change: Any, field: str) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    change(raw)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    for make in (MeteringPart, EntitlementsPart):
        with pytest.raises(CatalogError) as raised:
            make({"catalog": path})
        assert raised.value.field == field
