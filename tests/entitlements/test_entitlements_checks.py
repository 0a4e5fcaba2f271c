"""Checks (R6.3, R7.2, R7.3, features) against metering's live counters, fed by real events."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from tests.conftest import ADMIN, RunningApp, create_tenant, eventually
from tests.entitlements.ent_support import purchase


async def _now(platform: RunningApp) -> datetime:
    raw = (await platform.client.get("/v1/clock", headers=ADMIN)).json()["now"]
    return datetime.fromisoformat(raw)


async def _send(platform: RunningApp, tenant: str, kind: str, data: dict[str, Any],
                at: datetime) -> None:
    event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "tests", "type": kind,
             "subject": tenant, "time": at.isoformat(), "data": data}
    r = await platform.client.post("/v1/events", json=event, headers=ADMIN)
    assert r.status_code == 202, r.text


async def _check(platform: RunningApp, tenant: str, query: str) -> dict[str, Any]:
    r = await platform.client.get(f"/v1/tenants/{tenant}/check?{query}", headers=ADMIN)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_r6_3_seat_ranking_admin_packs_and_consumption(platform: RunningApp,
                                                             unique: str) -> None:
    tenant = f"r63-{unique}"
    await create_tenant(platform.client, tenant, admin_user="u-admin")
    lot = (await purchase(platform.client, tenant, "seats-crm", quantity=1)).json()["lot"]["id"]
    suite = (await purchase(platform.client, tenant, "seats-business")).json()["lot"]["id"]
    now = await _now(platform)
    # Admin first, then u-b and u-a at the same instant (ties by user id), then u-c.
    grants = [("u-admin", 50), ("u-b", 40), ("u-a", 40), ("u-c", 30)]
    for user, seconds in grants:
        await _send(platform, tenant, "user.access.granted", {"user_id": user, "module": "crm"},
                    now - timedelta(seconds=seconds))

    async def all_granted() -> bool:
        return bool((await _check(platform, tenant, "module=crm&user=u-c"))["used"] == 3)
    await eventually(all_granted)
    admin = await _check(platform, tenant, "module=crm&user=u-admin")
    assert (admin["decision"], admin["reason"]) == ("covered", "admin")
    first = await _check(platform, tenant, "module=crm&user=u-a")
    assert (first["decision"], first["reason"], first["covered_by"]) == (
        "covered", "seat_pack", lot)  # rank 1: the module's own pack
    second = await _check(platform, tenant, "module=crm&user=u-b")
    assert second["covered_by"] == suite  # rank 2: the suite pack covers crm (R6.2)
    third = await _check(platform, tenant, "module=crm&user=u-c")
    assert (third["decision"], third["reason"], third["covered_by"]) == (
        "billable", "consumption", None)
    assert (third["limit"], third["used"], third["remaining"]) == (2, 3, 0)
    newcomer = await _check(platform, tenant, "module=crm&user=u-new")  # as if granted now
    assert newcomer["decision"] == "billable"
    assert (await _check(platform, tenant, "module=accounting&user=u-a"))["reason"] == \
        "module_inactive"
    # A module that denies extra users (catalog `extra_users: deny`).
    denied = await _check(platform, tenant, "module=emailing&user=u-z")
    assert (denied["decision"], denied["reason"]) == ("denied", "extra_users_denied")


async def test_r7_2_emails_allowance_and_overage(platform: RunningApp, unique: str) -> None:
    tenant = f"r72-{unique}"
    await create_tenant(platform.client, tenant, time_zone="UTC")
    none = await _check(platform, tenant, "feature=emails&quantity=1")
    assert (none["decision"], none["reason"]) == ("denied", "no_email_pack")
    lot = (await purchase(platform.client, tenant, "emails-1000")).json()["lot"]["id"]
    now = await _now(platform)
    await _send(platform, tenant, "email.sent", {"count": 900}, now)

    async def counted() -> bool:
        return bool((await _check(platform, tenant, "feature=emails&quantity=1"))["used"] == 900)
    await eventually(counted)
    ok = await _check(platform, tenant, "feature=emails&quantity=100")
    assert ok == {"decision": "covered", "reason": "email_pack", "covered_by": lot,
                  "limit": 1000, "used": 900, "remaining": 100}
    over = await _check(platform, tenant, "feature=emails&quantity=101")
    assert (over["decision"], over["reason"]) == ("billable", "overage")  # priced 0.002


async def test_r7_3_companies_limit(platform: RunningApp, unique: str) -> None:
    tenant = f"r73-{unique}"
    await create_tenant(platform.client, tenant)
    first = await _check(platform, tenant, "feature=companies")
    assert (first["decision"], first["reason"], first["limit"]) == ("covered", "plan", 1)
    now = await _now(platform)
    await _send(platform, tenant, "company.created", {"company_id": "c-1"},
                now - timedelta(seconds=1))

    async def counted() -> bool:
        return bool((await _check(platform, tenant, "feature=companies"))["used"] == 1)
    await eventually(counted)
    full = await _check(platform, tenant, "feature=companies")
    assert (full["decision"], full["reason"], full["remaining"]) == ("denied", "limit_reached", 0)
    lot = (await purchase(platform.client, tenant, "companies-5")).json()["lot"]["id"]
    more = await _check(platform, tenant, "feature=companies")
    assert (more["decision"], more["covered_by"], more["limit"]) == ("covered", lot, 6)


async def test_feature_flags_and_batch(platform: RunningApp, unique: str) -> None:
    ess, pro = f"ffe-{unique}", f"ffp-{unique}"
    await create_tenant(platform.client, ess)
    await create_tenant(platform.client, pro, plan="professional")
    r = await platform.client.post("/v1/check", headers=ADMIN, json={"checks": [
        {"tenant": ess, "feature": "ai_assist"}, {"tenant": pro, "feature": "ai_assist"},
        {"tenant": pro, "module": "accounting"}, {"tenant": ess, "module": "accounting"},
        {"tenant": ess, "feature": "bogus"}, {"tenant": f"none-{unique}", "module": "crm"}]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("decision") for x in results[:4]] == ["denied", "covered", "covered",
                                                        "denied"]
    assert results[1]["reason"] == "plan"
    assert results[4]["error"]["field"] == "feature"
    assert results[5]["error"]["code"] == "not_found"
    lot = (await purchase(platform.client, ess, "ai-assist")).json()["lot"]["id"]
    bought = await _check(platform, ess, "feature=ai_assist")
    assert (bought["decision"], bought["reason"], bought["covered_by"]) == (
        "covered", "feature_pack", lot)
    bad = await platform.client.get(f"/v1/tenants/{ess}/check?feature=emails&quantity=x",
                                    headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "quantity"
    bad = await platform.client.get(f"/v1/tenants/{ess}/check?module=nope", headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "module"


async def test_catalog_route_shape(platform: RunningApp) -> None:
    r = await platform.client.get("/v1/catalog", headers=ADMIN)
    body = r.json()
    assert body["currency"] == "EUR"
    pack = next(p for p in body["packs"] if p["id"] == "seats-crm")
    assert pack["price"]["P1M"] == "10.00"
    assert pack["kind"] == "seats"
    assert body["email_overage_price"] == "0.002"
