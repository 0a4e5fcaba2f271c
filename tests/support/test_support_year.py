"""A simulated support contract year on a private platform's manual clock; the invoices match
the table in docs/support.md.

Tenant: professional, P1Y (990.00/year), Europe/Paris, VAT 20 %, anchor 2026-01-01.
- 2026-01-01: OrangeCare × 2 users (2 × 120.00 = 240.00), VIP (680.00), both charged in full
  for [2026-01-01, 2027-01-01).
- Sessions (R8.1 rounded, R8.3 allowance 2 × 30 = 60 min/day, VIP 600 min):
  03-10: 40 min L1 → 45 + 30 min L2 → 30: 60 from the allowance, 15 from VIP (585 left);
  06-02: 50 min L3 → 60: never the allowance, VIP has no level 3 → 60 min billed;
  09-15: 590 min L1 → 600: 60 allowance + 540 VIP (45 left);
  10-01: 120 min L2 → 120: 60 allowance + 45 VIP (0 left) + 15 billed.
  Overage 60 + 15 = 75 min = 1.25 h × 90.00 = 112.50.
- 2026-12-01 (one month before 2027-01-01): OrangeCare renews by itself, invoiced
  2 × 120.00 × 0.90 = 216.00 (R8.4).
- 2026-12-20: VIP renewed on time: 680.00 × 0.90 = 612.00, nothing left to carry.
- 2027-01-01: plan 990.00 in advance + support overage 112.50 in arrears = 1,102.50.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, create_tenant, set_clock
from tests.invoicing.inv_support import invoices_of, private_platform, send, summary

SUPPORT_DB = 5


def session(tenant: str, event_id: str, time: str, minutes: int, level: int
            ) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "support-desk",
            "type": "support.session.completed", "subject": tenant, "time": time,
            "data": {"minutes": minutes, "level": level}}


async def test_r8_support_contract_year(endpoints: Endpoints, unique: str) -> None:
    async with private_platform(endpoints, f"sup{unique}", datetime(2026, 1, 1, 9, tzinfo=UTC),
                                db=SUPPORT_DB) as app:
        c = app.client
        tenant = f"year-{unique}"
        await create_tenant(c, tenant, plan="professional", cycle="P1Y")
        for item, quantity in (("orangecare", 2), ("vip", None)):
            body: dict[str, Any] = {"actor": OWNER, "item": item, "confirm": True}
            if quantity:
                body["quantity"] = quantity
            r = await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
        plan = [("2026-03-10T09:00:00Z", 40, 1), ("2026-03-10T10:00:00Z", 30, 2),
                ("2026-06-02T09:00:00Z", 50, 3), ("2026-09-15T09:00:00Z", 590, 1),
                ("2026-10-01T09:00:00Z", 120, 2)]
        for i, (time, minutes, level) in enumerate(plan):
            await set_clock(c, time)
            await send(c, [session(tenant, f"{unique}-s{i}", time, minutes, level)])
        await set_clock(c, "2026-12-20T09:00:00Z")
        renew = await c.post(f"/v1/tenants/{tenant}/purchases", headers=ADMIN, json={
            "actor": OWNER, "item": "vip", "action": "renew", "confirm": True})
        assert renew.status_code == 201, renew.text
        assert renew.json()["contract"] == {"from": "2027-01-01", "to": "2028-01-01"}
        await set_clock(c, "2027-01-02T00:00:00Z")
        found = await invoices_of(c, tenant)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-01-01..2027-01-01", "1188.00"),
            ("immediate", None, "288.00"),
            ("immediate", None, "816.00"),
            ("immediate", None, "259.20"),
            ("immediate", None, "734.40"),
            ("period", "2027-01-01..2028-01-01", "1323.00"),
        ]
        assert [i["issued_at"][:10] for i in found] == [
            "2026-01-01", "2026-01-01", "2026-01-01", "2026-11-30", "2026-12-20",
            "2026-12-31"]
        last = found[-1]
        overage = [x for x in last["lines"] if x["kind"] == "support_overage"]
        assert [(x["module"], x["quantity"], x["unit_price"], x["amount"])
                for x in overage] == [("support", "1.25", "90.00", "112.50")]
        assert overage[0]["period"] == {"from": "2026-01-01", "to": "2027-01-01"}
        assert sorted(overage[0]["source"]["event_ids"]) == [f"{unique}-s2", f"{unique}-s4"]
        kinds = [x["kind"] for i in found[1:5] for x in i["lines"]]
        assert kinds == ["support_contract", "support_contract", "support_renewal",
                         "support_renewal"]
