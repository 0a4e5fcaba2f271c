"""R8 on the real embedded parts (shared platform, clock fixed at 2026-01-01T00:00Z, which is
2026-01-01 01:00 in Europe/Paris). Demo prices: VIP 680.00/year, VIP Diamond 1,450.00/year
(professional only, R8.5), OrangeCare 120.00 per user per year; support plans are sold to
annual subscriptions (P1Y) only."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ADMIN, OWNER, RunningApp, create_tenant, eventually


async def _buy(c: httpx.AsyncClient, tenant: str, item: str, action: str = "buy",
               quantity: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"actor": OWNER, "item": item, "confirm": True, "action": action}
    if quantity is not None:
        body["quantity"] = quantity
    return await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)


def _session(tenant: str, event_id: str, minutes: Any, level: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "support-desk",
            "type": "support.session.completed", "subject": tenant,
            "time": "2026-01-01T00:00:00Z", "data": {"minutes": minutes, "level": level}}


async def test_r8_2_second_vip_refused_same_year_diamond_allowed(platform: RunningApp,
                                                                  unique: str) -> None:
    """R8.2: professional P1Y tenant buys VIP on 2026-01-01: one contract [2026-01-01,
    2027-01-01), charged in full 680.00 (its own year, not prorated). A second VIP the same
    year → 409 naming R8.2; VIP Diamond (another kind) → 1,450.00, allowed alongside. R8.5:
    an essentials tenant may not buy VIP Diamond."""
    c = platform.client
    tenant = f"r82-{unique}"
    await create_tenant(c, tenant, plan="professional", cycle="P1Y")
    first = await _buy(c, tenant, "vip")
    assert first.status_code == 201, first.text
    assert first.json()["charges"][0]["amount"] == "680.00"
    assert first.json()["charges"][0]["kind"] == "support_contract"
    assert first.json()["contract"] == {"from": "2026-01-01", "to": "2027-01-01"}
    second = await _buy(c, tenant, "vip")
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "support_plan_per_year"
    assert "R8.2" in second.json()["error"]["message"]
    diamond = await _buy(c, tenant, "vip-diamond")
    assert diamond.status_code == 201, diamond.text
    assert diamond.json()["charges"][0]["amount"] == "1450.00"
    other = f"r85-{unique}"
    await create_tenant(c, other, plan="essentials", cycle="P1Y")
    refused = await _buy(c, other, "vip-diamond")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_eligible"  # R8.5 still holds


async def test_r8_3_checks_daily_then_bank_then_level_3(platform: RunningApp,
                                                        unique: str) -> None:
    """R8.3 checks: OrangeCare × 2 users (60 min today) + VIP (600 min).
    - nothing used: `covered` by the daily plan, limit 60, used 0, remaining 60;
    - after 70 minutes reported today (40 + 30, each session rounded up, R8.1: 45 + 30 = 75):
      the daily allowance is spent (75 ≥ 60), so `covered` by the VIP bank, which gave the
      75 − 60 = 15 minutes beyond it: 600 − 15 = 585 left;
    - level 3: never the daily plan, VIP does not cover it → `billable` (overage 90.00/h).
    The fast path (GET) and POST /v1/check agree."""
    c = platform.client
    tenant = f"r83-{unique}"
    await create_tenant(c, tenant, plan="essentials", cycle="P1Y")
    assert (await _buy(c, tenant, "orangecare", quantity=2)).status_code == 201
    assert (await _buy(c, tenant, "vip")).status_code == 201

    async def check(level: int | None = None) -> dict[str, Any]:
        params = {"feature": "support"} | ({"level": str(level)} if level else {})
        item: dict[str, Any] = {"tenant": tenant, "feature": "support"}
        if level:
            item["level"] = level
        for _ in range(50):  # the counters may move between the two calls: ask again
            got = await c.get(f"/v1/tenants/{tenant}/check", params=params, headers=ADMIN)
            assert got.status_code == 200, got.text
            batch = await c.post("/v1/check", json={"checks": [item]}, headers=ADMIN)
            if batch.json()["results"][0] == got.json():
                break
        assert batch.json()["results"][0] == got.json()
        body: dict[str, Any] = got.json()
        return body

    first = await check()
    assert (first["decision"], first["reason"], first["limit"], first["used"],
            first["remaining"]) == ("covered", "support_daily", 60, 0, 60)
    sent = await c.post("/v1/events", headers=ADMIN, json=[
        _session(tenant, f"{unique}-a", 40, 1), _session(tenant, f"{unique}-b", 30, 2)])
    assert sent.status_code == 202, sent.text

    async def bank_in_use() -> bool:
        return bool((await check())["reason"] == "support_bank")
    await eventually(bank_in_use, within=15)
    after = await check()
    assert (after["decision"], after["remaining"]) == ("covered", 585)
    assert after["support"]["today"] == {"lot": after["support"]["today"]["lot"],
                                         "limit": 60, "used": 75, "remaining": 0}
    level3 = await check(3)
    assert (level3["decision"], level3["reason"]) == ("billable", "overage")
    assert level3["support"]["overage_price_per_hour"] == "90.00"
    assert level3["support"]["level_3_covered"] is False


async def test_r8_check_without_plan_and_bad_level(platform: RunningApp, unique: str) -> None:
    """No support plan: billable at the catalog's rate (support module, 120.00/h). A level
    other than 1–3 → 422 naming `level`."""
    c = platform.client
    tenant = f"r8n-{unique}"
    await create_tenant(c, tenant)
    got = await c.get(f"/v1/tenants/{tenant}/check", params={"feature": "support"},
                      headers=ADMIN)
    assert (got.json()["decision"], got.json()["reason"]) == ("billable", "no_support_plan")
    assert got.json()["support"]["overage_price_per_hour"] == "120.00"
    bad = await c.get(f"/v1/tenants/{tenant}/check", params={"feature": "support",
                                                             "level": "4"}, headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "level"


async def test_r8_bad_sessions_refused_with_reason(platform: RunningApp, unique: str) -> None:
    """Zero or negative minutes and an unknown level are refused at ingest, each named with
    its field (and would go to the DLQ from Kafka, tests/metering/test_metering_bad_input)."""
    tenant = f"r8b-{unique}"
    sent = await platform.client.post("/v1/events", headers=ADMIN, json=[
        _session(tenant, f"{unique}-0", 0, 1), _session(tenant, f"{unique}-n", -5, 2),
        _session(tenant, f"{unique}-l", 10, 4), _session(tenant, f"{unique}-ok", 10, 1)])
    assert sent.status_code == 202, sent.text
    body = sent.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (0, "data.minutes"), (1, "data.minutes"), (2, "data.level")]
