"""R9.4 for support (R8): a session reported after its period was invoiced is billed on the
next invoice as an adjustment naming the period it corrects, at the rate of the line it
corrects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.stack import Endpoints
from tests.conftest import create_tenant, set_clock
from tests.invoicing.inv_support import invoices_of, private_platform, send


def session(tenant: str, event_id: str, time: str, minutes: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "tests",
            "type": "support.session.completed", "subject": tenant, "time": time,
            "data": {"minutes": minutes, "level": 1}}


async def test_r9_4_a_late_support_session_is_an_adjustment(endpoints: Endpoints,
                                                            unique: str) -> None:
    """By hand. essentials, yearly (490.00), anchor 2027-01-01, no support plan, so every
    session is billed at the catalog's 120.00/h (docs/support.md), VAT 20 %.
    - 2027-03-10: 50 min → 60 (R8.1): the 2028-01-01 invoice bills 1 h × 120.00 = 120.00
      for 2027 in arrears, with the plan's 490.00 in advance: 610.00 → 732.00.
    - Reported after that invoice: 2027-06-01, 20 min → 30 = 0.5 h.
    - 2029-01-01: plan 490.00 + an adjustment for 2027-01-01..2028-01-01 of
      (1.5 − 1) h × 120.00 = 60.00: 550.00 → 660.00."""
    tenant = f"late-support-{unique}"
    start = datetime(2027, 1, 1, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=6) as app:
        c = app.client
        await create_tenant(c, tenant, cycle="P1Y")
        await send(c, [session(tenant, f"{unique}-on-time", "2027-03-10T10:00:00Z", 50)])
        await set_clock(c, "2028-01-01T12:00:00Z")
        await send(c, [session(tenant, f"{unique}-late", "2027-06-01T10:00:00Z", 20)])
        await set_clock(c, "2029-01-01T12:00:00Z")
        invoices = await invoices_of(c, tenant)

    by_date = {i["billing_date"]: i for i in invoices if i["kind"] == "period"}
    first, second = by_date["2028-01-01"], by_date["2029-01-01"]
    assert first["total"] == "732.00"
    assert [(line["kind"], line["quantity"], line["amount"]) for line in first["lines"]
            if line["module"] == "support"] == [("support_overage", "1", "120.00")]
    adjustments = [line for line in second["lines"] if line["kind"] == "adjustment"]
    assert len(adjustments) == 1
    adjustment = adjustments[0]
    assert (adjustment["module"], adjustment["unit_price"], adjustment["amount"]) == (
        "support", "120.00", "60.00")
    assert adjustment["period"] == {"from": "2027-01-01", "to": "2028-01-01"}
    assert f"{unique}-late" in adjustment["source"]["late_event_ids"]
    assert second["total"] == "660.00"
