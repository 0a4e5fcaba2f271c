"""Concurrency, idempotency, bad input, tenant scoping and the outbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.entitlements.part import EntitlementsPart
from shared.catalog import CatalogError
from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, RunningApp, create_tenant
from tests.entitlements.ent_support import events_for, history, isolated_app, purchase, tenant_doc


async def test_50_concurrent_single_instance_purchases_give_one_lot(platform: RunningApp,
                                                                    unique: str) -> None:
    c = platform.client
    tenant = f"ci-{unique}"
    await create_tenant(c, tenant)
    answers = await asyncio.gather(*(purchase(c, tenant, "analytics") for _ in range(50)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 1
    assert codes.count(409) == 49
    assert len((await tenant_doc(c, tenant))["lots"]) == 1
    bought = [h for h in await history(c, tenant) if h["type"] == "purchase.confirmed"]
    assert len(bought) == 1  # charged once


async def test_50_concurrent_seat_packs_give_50_lots(platform: RunningApp, unique: str) -> None:
    c = platform.client
    tenant = f"cs-{unique}"
    await create_tenant(c, tenant)
    answers = await asyncio.gather(*(purchase(c, tenant, "seats-crm", quantity=2)
                                     for _ in range(50)))
    assert all(r.status_code == 201 for r in answers)
    lots = (await tenant_doc(c, tenant))["lots"]
    assert len(lots) == 50
    assert len({lot["id"] for lot in lots}) == 50
    check = await c.get(f"/v1/tenants/{tenant}/check?module=crm&user=u-x", headers=ADMIN)
    assert check.json()["limit"] == 100  # capacity exact: 50 lots × 2 seats


async def test_same_idempotency_key_ten_times_at_once_is_one_purchase(platform: RunningApp,
                                                                      unique: str) -> None:
    c = platform.client
    tenant = f"ik-{unique}"
    await create_tenant(c, tenant)
    body = {"actor": OWNER, "item": "seats-crm", "quantity": 3, "confirm": True}
    headers = {**ADMIN, "Idempotency-Key": f"key-{unique}"}
    answers = await asyncio.gather(*(c.post(f"/v1/tenants/{tenant}/purchases", json=body,
                                            headers=headers) for _ in range(10)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["lot"]["id"] for r in answers}) == 1  # the first answer, replayed
    assert len((await tenant_doc(c, tenant))["lots"]) == 1
    # The key with another body is a mistake, not a retry.
    other = await c.post(f"/v1/tenants/{tenant}/purchases", headers=headers,
                         json={**body, "quantity": 4})
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"


BAD_TENANTS: list[tuple[dict[str, Any], str]] = [
    ({"plan": "platinum"}, "plan"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"time_zone": "../etc/passwd"}, "time_zone"),
    ({"anchor": "2025-12-31"}, "anchor"),
    ({"currency": "USD"}, "currency"),
    ({"vat_rate": "1.5"}, "vat_rate"),
    ({"vat_rate": "-0.1"}, "vat_rate"),
    ({"vat_rate": "abc"}, "vat_rate"),
    ({"cycle": "P2W"}, "cycle"),
    ({"id": "bad id!"}, "id"),
]


@pytest.mark.parametrize(("change", "field"), BAD_TENANTS)
async def test_bad_tenant_refused_naming_the_field(platform: RunningApp, unique: str,
                                                   change: dict[str, Any], field: str) -> None:
    c = platform.client
    body = {"id": f"bt-{unique}", "plan": "essentials", "cycle": "P1M",
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-1", **change}
    if field == "anchor":
        clock = (await c.get("/v1/clock", headers=ADMIN)).json()["now"]
        body["anchor"] = "2000-01-01" if clock else body["anchor"]
    r = await c.post("/v1/tenants", json=body, headers=ADMIN)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["field"] == field
    assert (await c.get(f"/v1/tenants/{body['id']}", headers=ADMIN)).status_code == 404


async def test_bad_purchases_refused_and_nothing_changed(platform: RunningApp,
                                                         unique: str) -> None:
    c = platform.client
    tenant = f"bp-{unique}"
    await create_tenant(c, tenant)
    await purchase(c, tenant, "analytics", action="trial")
    before, entries = await tenant_doc(c, tenant), await history(c, tenant)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"item": "no-such-pack"}, 422, "item"),
        ({"item": "seats-crm", "quantity": 0}, 422, "quantity"),
        ({"item": "seats-crm", "quantity": -3}, 422, "quantity"),
        ({"item": "seats-crm", "quantity": 10**9}, 422, "quantity"),
        ({"item": "seats-crm", "actor": {"user_id": "u-1", "role": "agent"}}, 403,
         "actor.role"),
        ({"item": "seats-crm", "actor": {"user_id": "u-1", "role": "janitor"}}, 422,
         "actor.role"),
        ({"item": "analytics", "action": "trial"}, 409, "item"),  # already trialing/used
        ({"item": "vip-diamond"}, 409, "item"),  # R8.5: professional only
        ({"item": "vip"}, 422, "item"),  # no P1M price: names the cycle
    ]
    for change, status, field in cases:
        body = {"actor": OWNER, "confirm": True, **change}
        r = await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
        assert r.status_code == status, (change, r.text)
        assert r.json()["error"]["field"] == field, (change, r.text)
    vip = await purchase(c, tenant, "vip")
    assert "P1M" in vip.json()["error"]["message"]
    unknown = await purchase(c, f"nobody-{unique}", "seats-crm")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "tenant"
    assert await tenant_doc(c, tenant) == before
    assert await history(c, tenant) == entries


async def test_wrong_api_key_roles_get_403_naming_the_role(platform: RunningApp,
                                                           unique: str) -> None:
    c = platform.client
    tenant = f"wr-{unique}"
    await create_tenant(c, tenant)
    minted = {}
    for role in ("finance", "dashboard", "ingest"):
        r = await c.post("/v1/api-keys", json={"role": role, "tenant": None}, headers=ADMIN)
        minted[role] = {"Authorization": f"Bearer {r.json()['key']}"}
    buy = {"actor": OWNER, "item": "seats-crm", "confirm": True}
    for role in ("finance", "dashboard"):
        r = await c.post(f"/v1/tenants/{tenant}/purchases", json=buy, headers=minted[role])
        assert r.status_code == 403
        assert f"role '{role}'" in r.json()["error"]["message"]
    r = await c.post("/v1/tenants", headers=minted["ingest"], json={})
    assert r.status_code == 403
    assert (await c.get(f"/v1/tenants/{tenant}/check?module=crm",
                        headers=minted["finance"])).status_code == 403
    assert (await c.get(f"/v1/tenants/{tenant}/history",
                        headers=minted["dashboard"])).status_code == 200
    assert (await c.get("/v1/catalog", headers=minted["finance"])).status_code == 403
    assert (await tenant_doc(c, tenant))["lots"] == []


async def test_tenant_limited_key_gets_404_on_every_route_of_another(platform: RunningApp,
                                                                     unique: str) -> None:
    c = platform.client
    a, b = f"sa-{unique}", f"sb-{unique}"
    await create_tenant(c, a)
    await create_tenant(c, b)
    lot = (await purchase(c, b, "seats-crm")).json()["lot"]["id"]
    r = await c.post("/v1/api-keys", json={"role": "ingest", "tenant": a}, headers=ADMIN)
    ingest_a = {"Authorization": f"Bearer {r.json()['key']}"}
    r = await c.post("/v1/api-keys", json={"role": "admin", "tenant": a}, headers=ADMIN)
    admin_a = {"Authorization": f"Bearer {r.json()['key']}"}
    r = await c.post("/v1/api-keys", json={"role": "dashboard", "tenant": a}, headers=ADMIN)
    dashboard_a = {"Authorization": f"Bearer {r.json()['key']}"}
    buy = {"actor": OWNER, "item": "seats-crm", "confirm": True}
    routes = [
        ("GET", f"/v1/tenants/{b}", None),
        ("PATCH", f"/v1/tenants/{b}", {"renewal": False, "actor": OWNER}),
        ("POST", f"/v1/tenants/{b}/purchases", buy),
        ("POST", f"/v1/tenants/{b}/lots/{lot}/cancel", {"actor": OWNER}),
        ("POST", f"/v1/tenants/{b}/lots/{lot}/uncancel", {"actor": OWNER}),
        ("GET", f"/v1/tenants/{b}/history", None),
        ("GET", f"/v1/tenants/{b}/check?module=crm", None),
        ("GET", f"/v1/tenants/{b}/check?module=crm&user=u-1", None),
        ("GET", f"/v1/tenants/{b}/check?feature=emails&quantity=1", None),
        ("GET", f"/v1/tenants/{b}/check?feature=companies", None),
    ]
    for method, path, body in routes:
        key = dashboard_a if path.endswith("/history") else ingest_a
        r = await c.request(method, path, json=body, headers=key)
        assert r.status_code == 404, (method, path, r.text)
        # Exactly what a tenant that does not exist answers.
        ghost = await c.request(method, path.replace(b, f"ghost-{unique}"), json=body,
                                headers=key)
        assert ghost.status_code == 404
        assert ghost.json() == {
            **r.json(), "error": {**r.json()["error"],
                                  "message": r.json()["error"]["message"].replace(
                                      b, f"ghost-{unique}")}}
    batch = await c.post("/v1/check", headers=ingest_a, json={"checks": [
        {"tenant": b, "module": "crm"}, {"tenant": a, "module": "crm"}]})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert results[0]["error"]["code"] == "not_found"
    assert results[1]["decision"] == "covered"
    r = await c.post("/v1/tenants", headers=admin_a, json={
        "id": f"sc-{unique}", "plan": "essentials", "time_zone": "UTC", "currency": "EUR",
        "vat_rate": "0.2", "admin_user": "u"})
    # Creating a tenant acts on the platform: a tenant's admin key may not (docs/api.md "Keys").
    assert r.status_code == 403
    assert (await c.get(f"/v1/tenants/sc-{unique}", headers=ADMIN)).status_code == 404
    assert (await tenant_doc(c, b))["lots"][0]["state"] == "active"  # nothing changed


async def test_outbox_change_without_publish_is_published_once_after_restart(
        endpoints: Endpoints, unique: str) -> None:
    tenant = f"ob-{unique}"
    start = datetime(2026, 3, 1, tzinfo=UTC)
    # A process that commits changes but dies before its publisher drains them.
    async with isolated_app(endpoints, start, entitlements_outbox_publisher=False) as app:
        await create_tenant(app.client, tenant, time_zone="UTC")
        lot = (await purchase(app.client, tenant, "seats-crm")).json()["lot"]["id"]
        assert await app.runtime.redis.xlen("ent:outbox") == 2
    assert await events_for(endpoints.kafka_bootstrap, tenant, want=0, within=1.0) == []
    # The restart publishes what was committed, once.
    async with isolated_app(endpoints, start, flush=False) as app:
        async def drained() -> bool:
            return int(await app.runtime.redis.xlen("ent:outbox")) == 0
        for _ in range(100):
            if await drained():
                break
            await asyncio.sleep(0.05)
        events = await events_for(endpoints.kafka_bootstrap, tenant, want=2)
    assert [e["type"] for e in events] == ["tenant.created", "purchase.confirmed"]
    assert events[1]["data"]["lot"] == lot
    assert len({e["id"] for e in events}) == 2  # once each
    # A third start finds nothing left to publish.
    async with isolated_app(endpoints, start, flush=False):
        await asyncio.sleep(0.3)
    assert len(await events_for(endpoints.kafka_bootstrap, tenant, want=2)) == 2


def test_r1_4_invalid_catalog_stops_start_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text('{"version": "x", "currency": "EUR", "modules": [{"id": "crm", '
                   '"extra_users": "bill", "extra_user_price": {"P1M": 15.5}}], '
                   '"plans": [], "packs": []}')
    with pytest.raises(CatalogError) as caught:
        EntitlementsPart({"catalog": bad})
    assert caught.value.field.startswith("modules.0.extra_user_price")
