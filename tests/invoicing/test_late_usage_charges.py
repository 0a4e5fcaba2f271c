"""R9.4 on usage charges (R10.1–R10.3): usage of a priced meter stored after its period was
invoiced corrects that period like any late usage, with adjustment lines naming it; since the
models are not linear, an adjustment is the amount of the value now minus the amount of the
quantity billed so far, and the minimum commitment's top-up is recomputed with them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.stack import Endpoints
from tests.conftest import ADMIN, set_clock
from tests.invoicing.inv_support import invoices_of, private_platform, send, summary
from tests.invoicing.test_late_usage_any_age import adjustments, line_period, own_broker
from tests.invoicing.test_usage_year import month_events, usage_catalog

__all__ = ["own_broker"]  # the fixture, shared with the other late-usage tests

JANUARY = "2027-01-01..2027-02-01"


def calls(tenant: str, count: int, at: str, event_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "late", "type": "api.calls",
            "subject": tenant, "time": at, "data": {"count": count}}


def adjusted(invoice: dict[str, Any]) -> list[tuple[str | None, str, str, str]]:
    """(meter, quantity, amount, period) of each adjustment line."""
    return [(line["source"]["meter"], line["quantity"], line["amount"], line_period(line))
            for line in adjustments(invoice)]


async def test_r9_4_late_usage_on_priced_meters_corrects_its_period(
        own_broker: Endpoints, unique: str, tmp_path: Path) -> None:
    """By hand. The `metered` plan of the usage year (10.00 a month; api_calls graduated,
    1,000 included, 0.002 up to 10,000 billable then 0.001 and a flat 5.00; exports in
    packages of 10 at 1.50; minimum 20.00), monthly from 2027-01-01 in UTC, VAT 20 %.
    - Jan: 1,000 calls on time. 02-01: plan 10.00, api 0.00, minimum 20.00: 30.00 → 36.00.
    - After it, late: 11,000 calls and 5 exports dated in January. January recomputed:
      12,000 calls, 11,000 billable: 20.00 + 1.00 + 5.00 = 26.00, billed 0.00: +26.00;
      exports 5 = 1 package: +1.50; usage 27.50 ≥ 20.00: the 20.00 top-up goes: −20.00.
    - Feb: 500 calls on time (within the included 1,000: 0.00), minimum 20.00.
      03-01: 10.00 + 0.00 + 20.00 + 26.00 + 1.50 − 20.00 = 37.50, tax 7.50 → 45.00.
    - After it, 1,000 more late January calls: 13,000, 12,000 billable: 20.00 + 2.00 + 5.00
      = 27.00, billed so far (the line's 1,000 + the adjustment's 11,000 = 12,000) 26.00:
      +1.00; the minimum stays at 0 (28.50 of usage): no line.
      04-01: 10.00 + March's minimum 20.00 + 1.00 = 31.00, tax 6.20 → 37.20."""
    catalog, meters = usage_catalog(tmp_path)
    tenant = f"late-metered-{unique}"
    async with private_platform(own_broker, unique, datetime(2027, 1, 1, tzinfo=UTC), db=13,
                                catalog=catalog, meters=meters) as app:
        c = app.client
        created = await c.post("/v1/tenants", headers=ADMIN, json={
            "id": tenant, "plan": "metered", "cycle": "P1M", "anchor": "2027-01-01",
            "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"})
        assert created.status_code == 201, created.text
        await send(c, month_events(tenant, 1, 1000, 0, 0))
        await set_clock(c, "2027-02-01T12:00:00Z")
        late_exports = month_events(tenant, 1, 0, 0, 5)
        for event in late_exports:
            event["id"] = f"late-{event['id']}"
        await send(c, [calls(tenant, 11000, "2027-01-20T10:00:00Z", "late-1"), *late_exports])
        await send(c, month_events(tenant, 2, 500, 0, 0))
        await set_clock(c, "2027-03-01T12:00:00Z")
        await send(c, [calls(tenant, 1000, "2027-01-21T10:00:00Z", "late-2")])
        await set_clock(c, "2027-04-01T12:00:00Z")
        found = await invoices_of(c, tenant)

    assert [summary(i) for i in found] == [
        ("immediate", JANUARY, "12.00"),
        ("period", "2027-02-01..2027-03-01", "36.00"),
        ("period", "2027-03-01..2027-04-01", "45.00"),
        ("period", "2027-04-01..2027-05-01", "37.20")]
    assert adjusted(found[1]) == []
    assert sorted(adjusted(found[2]), key=str) == sorted([
        ("api_calls", "11000", "26.00", JANUARY), ("exports", "5", "1.50", JANUARY),
        (None, "1", "-20.00", JANUARY)], key=str)
    assert adjusted(found[3]) == [("api_calls", "1000", "1.00", JANUARY)]
    api = next(line for line in adjustments(found[2]) if line["source"]["meter"] == "api_calls")
    assert api["source"]["late_event_ids"] == ["late-1"]
    assert (api["source"]["billed"], api["source"]["recomputed"]) == ("1000", "12000")
