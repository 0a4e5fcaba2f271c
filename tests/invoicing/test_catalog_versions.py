"""Catalog versions and migrations (R10.5) on the manual clock, through the public API.

Version 2027-01 is the demo catalog plus a plan `metered` (10.00 a month; API calls: 10,000
included, then 0.002 each; a minimum of 20.00 on usage). Version 2027-02, published later by
a restart with both files, changes its prices: 12.00 a month, 0.003 a call, minimum 25.00.
Tenant `old` is created while 2027-01 is the only version; tenant `new` after 2027-02 is
published, with the same usage. VAT 20 %, monthly periods from 2027-01-01, UTC.

API calls: January 20,000 (10,000 billable), February 6,000 (none), March 16,000 (6,000).

By hand:
- `old`, 2027-02-01 (2027-01's prices, unchanged by 2027-02): February's plan 10.00;
  January's calls 10,000 × 0.002 = 20.00, not below the minimum 20.00, no minimum line.
  Subtotal 30.00, total 36.00.
- `new`, 2027-02-01: plan 12.00; calls 10,000 × 0.003 = 30.00 (≥ 25.00). Total 50.40.
- Preview of `old` to 2027-02 on 2027-02-01: next period (March) fees 10.00 now, 12.00
  after; January re-priced: plan 10.00 → 12.00, calls 20.00 → 30.00: 30.00 → 42.00, which
  is `new`'s January (its first invoice's plan and its February invoice's calls).
- Confirmed, the move applies 2027-03-01. `old`, 2027-03-01: March's plan at 12.00 (new);
  February's calls 6,000 within the included 10,000: 0.00, and the minimum of February's
  version, 20.00 − 0.00 = 20.00. Subtotal 32.00, total 38.40.
- `old`, 2027-04-01, all 2027-02: April's plan 12.00; March's calls 6,000 × 0.003 = 18.00,
  below the minimum 25.00: 7.00. Subtotal 37.00, total 44.40.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.settings import CommonSettings
from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, eventually, set_clock
from tests.invoicing.inv_support import invoices_of, private_platform

DB = 13
METERED: dict[str, Any] = {
    "id": "metered", "rank": 9, "modules": ["sales"], "price": {"P1M": "10.00"},
    "companies": 1, "contacts": 100, "features": [],
    "usage": [{"meter": "api_calls", "included": "10000", "model": "per_unit",
               "unit_price": "0.002"}],
    "minimum": {"P1M": "20.00"}}
REPRICED = {**METERED, "price": {"P1M": "12.00"}, "minimum": {"P1M": "25.00"},
            "usage": [{**METERED["usage"][0], "unit_price": "0.003"}]}
CALLS = {1: 20_000, 2: 6_000, 3: 16_000}


def write_version(directory: Path, version: str, plan: dict[str, Any]) -> None:
    raw: dict[str, Any] = yaml.safe_load(
        Path(CommonSettings.model_fields["catalog"].default).read_text(encoding="utf-8"))
    raw["version"] = version
    raw["plans"].append(plan)
    (directory / f"{version}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False),
                                               encoding="utf-8")


def calls(tenant: str) -> list[dict[str, Any]]:
    return [{"specversion": "1.0", "id": f"{tenant}-calls-{month}", "source": "versions",
             "type": "api.calls", "subject": tenant, "time": f"2027-{month:02d}-15T12:00:00Z",
             "data": {"count": count}} for month, count in CALLS.items()]


async def start_tenant(client: httpx.AsyncClient, tenant: str) -> None:
    created = await client.post("/v1/tenants", headers=ADMIN, json={
        "id": tenant, "plan": "metered", "cycle": "P1M", "anchor": "2027-01-01",
        "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"})
    assert created.status_code == 201, created.text
    sent = await client.post("/v1/events", json=calls(tenant), headers={
        **ADMIN, "Content-Type": "application/cloudevents-batch+json"})
    assert sent.status_code < 300, sent.text


def amounts(lines: list[dict[str, Any]]) -> dict[str, str]:
    return {(line["source"]["meter"] if line["kind"] == "usage" else line["kind"]):
            line["amount"] for line in lines}


def of_period(invoices: list[dict[str, Any]], month: int) -> dict[str, str]:
    """Amounts of every line issued for 2027-`month`, on whichever invoice."""
    start = f"2027-{month:02d}-01"
    return amounts([line for invoice in invoices for line in invoice["lines"]
                    if (line["period"] or {}).get("from") == start])


async def migrate(client: httpx.AsyncClient, tenant: str, confirm: bool,
                  version: str = "2027-02") -> httpx.Response:
    return await client.post(f"/v1/tenants/{tenant}/migrations", headers=ADMIN, json={
        "version": version, "confirm": confirm, "actor": OWNER})


async def test_a_new_version_prices_new_tenants_and_a_migration_moves_an_old_one(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    first, both = tmp_path / "first", tmp_path / "both"
    first.mkdir()
    both.mkdir()
    write_version(first, "2027-01", METERED)
    write_version(both, "2027-01", METERED)
    write_version(both, "2027-02", REPRICED)
    old, new = f"{unique}-old", f"{unique}-new"
    start = datetime(2027, 1, 1, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=DB, catalog=first) as app:
        await start_tenant(app.client, old)
        await eventually(lambda: _stored(app.client, old))
    # A release publishes 2027-02: the platform restarts with both files.
    async with private_platform(endpoints, unique, start, db=DB, flush=False,
                                catalog=both) as app:
        client = app.client
        versions = (await client.get("/v1/catalog/versions", headers=ADMIN)).json()
        assert versions["current"] == "2027-02"
        assert [v["version"] for v in versions["data"]] == ["2027-01", "2027-02"]
        assert (await client.get("/v1/catalog", headers=ADMIN)).json()["version"] == "2027-02"
        pinned = await client.get("/v1/catalog", params={"version": "2027-01"}, headers=ADMIN)
        assert pinned.json()["version"] == "2027-01"
        unknown = await client.get("/v1/catalog", params={"version": "1999-01"},
                                   headers=ADMIN)
        assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "version")
        await start_tenant(client, new)
        assert (await client.get(f"/v1/tenants/{old}", headers=ADMIN)
                ).json()["catalog_version"] == "2027-01"
        assert (await client.get(f"/v1/tenants/{new}", headers=ADMIN)
                ).json()["catalog_version"] == "2027-02"
        await eventually(lambda: _stored(client, new))

        await set_clock(client, "2027-02-01T12:00:00Z")
        olds, news = await invoices_of(client, old), await invoices_of(client, new)
        assert [i["total"] for i in olds] == ["12.00", "36.00"]  # unchanged by 2027-02
        assert amounts(olds[1]["lines"]) == {"plan": "10.00", "api_calls": "20.00"}
        assert [i["total"] for i in news] == ["14.40", "50.40"]

        preview = await migrate(client, old, confirm=False)
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert (body["status"], body["from"], body["to"], body["takes_effect"]) == (
            "preview", "2027-01", "2027-02", "2027-03-01T00:00:00Z")
        fees = body["next_period"]
        assert (fees["current"]["subtotal"], fees["new"]["subtotal"]) == ("10.00", "12.00")
        january = body["last_closed_period"]
        assert january["period"] == {"from": "2027-01-01", "to": "2027-02-01"}
        assert (january["invoiced"], january["repriced"]) == ("30.00", "42.00")
        side = {row["kind"]: (row["invoiced"]["amount"], row["repriced"]["amount"])
                for row in january["lines"]}
        assert side == {"plan": ("10.00", "12.00"), "usage": ("20.00", "30.00")}
        # What a billing run under 2027-02 issued for the same January: `new`'s lines.
        assert of_period(news, 1) == {"plan": "12.00", "api_calls": "30.00"}
        assert sorted(r["repriced"]["amount"] for r in january["lines"]) == sorted(
            of_period(news, 1).values())

        for _ in range(2):  # a retried confirmation schedules once
            confirmed = await migrate(client, old, confirm=True)
            assert confirmed.status_code == 202, confirmed.text
            assert confirmed.json()["status"] == "scheduled"
        tenant = (await client.get(f"/v1/tenants/{old}", headers=ADMIN)).json()
        assert tenant["pending_catalog"] == {"version": "2027-02",
                                             "at": "2027-03-01T00:00:00Z"}

        await set_clock(client, "2027-04-01T12:00:00Z")
        olds = await invoices_of(client, old)
        assert [i["total"] for i in olds] == ["12.00", "36.00", "38.40", "44.40"]
        assert amounts(olds[2]["lines"]) == {"plan": "12.00", "api_calls": "0.00",
                                             "minimum_commitment": "20.00"}
        assert amounts(olds[3]["lines"]) == {"plan": "12.00", "api_calls": "18.00",
                                             "minimum_commitment": "7.00"}
        tenant = (await client.get(f"/v1/tenants/{old}", headers=ADMIN)).json()
        assert (tenant["catalog_version"], tenant["pending_catalog"]) == ("2027-02", None)
        history = (await client.get(f"/v1/tenants/{old}/history", headers=ADMIN)).json()
        kinds = [entry["type"] for entry in history["data"]]
        assert kinds.count("catalog.migration_scheduled") == 1
        assert kinds.count("catalog.migrated") == 1


async def _stored(client: httpx.AsyncClient, tenant: str) -> bool:
    """Metering stored the tenant's calls (all three months)."""
    usage = await client.get("/v1/usage", headers=ADMIN, params={
        "tenant": tenant, "meter": "api_calls", "from": "2027-01-01T00:00:00Z",
        "to": "2027-04-01T00:00:00Z"})
    return usage.status_code == 200 and "42000" in usage.text


async def test_a_migration_is_refused_when_it_cannot_bill_the_tenant(
        endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """Unknown version: 404 naming `version`; the version already billed: 409; a confirm
    by a role that may not commit the owner's money: 403 (R5). A scheduled move is undone by
    confirming the version the tenant is billed by. An admin may create a tenant
    on an earlier version (a customer signed on an older price list), not an unknown one."""
    write_version(tmp_path, "2027-01", METERED)
    write_version(tmp_path, "2027-02", REPRICED)
    tenant = f"{unique}-refused"
    async with private_platform(endpoints, unique, datetime(2027, 1, 1, tzinfo=UTC), db=DB,
                                catalog=tmp_path) as app:
        client = app.client
        await start_tenant(client, tenant)
        unknown = await migrate(client, tenant, confirm=False, version="2030-01")
        assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "version")
        same = await migrate(client, tenant, confirm=True)
        assert (same.status_code, same.json()["error"]["code"]) == (409, "same_version")
        agent = await client.post(f"/v1/tenants/{tenant}/migrations", headers=ADMIN, json={
            "version": "2027-01", "confirm": True,
            "actor": {"user_id": "u-9", "role": "agent"}})
        assert (agent.status_code, agent.json()["error"]["field"]) == (403, "actor.role")
        back = await migrate(client, tenant, confirm=True, version="2027-01")
        assert back.status_code == 202, back.text
        undone = await migrate(client, tenant, confirm=True)
        assert (undone.status_code, undone.json()["status"]) == (200, "cancelled")
        assert (await client.get(f"/v1/tenants/{tenant}", headers=ADMIN)
                ).json()["pending_catalog"] is None
        body = {"id": f"{tenant}-signed", "plan": "metered", "cycle": "P1M",
                "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"}
        signed = await client.post("/v1/tenants", headers=ADMIN,
                                   json=body | {"catalog_version": "2027-01"})
        assert signed.json()["catalog_version"] == "2027-01"
        bad = await client.post("/v1/tenants", headers=ADMIN,
                                json=body | {"id": f"{tenant}-x", "catalog_version": "2020-01"})
        assert (bad.status_code, bad.json()["error"]["field"]) == (422, "catalog_version")
