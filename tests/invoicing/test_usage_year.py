"""Usage charges on declared meters over a simulated year (R10.1–R10.3), on the manual clock:
a tenant whose plan prices one meter graduated, one by volume and one by packages, with a
minimum commitment. Every invoice matches the table of docs/invoicing.md ("Usage charges over
a year"), computed by hand there and below."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from shared.stack import Endpoints
from tests.builders import demo_catalog_with
from tests.conftest import ADMIN, eventually
from tests.invoicing.inv_support import invoices_of, private_platform

YEAR = 2027
METERS = """
meters:
  - {slug: api_calls, event_type: api.calls, aggregation: SUM, value_property: count}
  - {slug: sms_sent, event_type: sms.sent, aggregation: SUM, value_property: count}
  - {slug: exports, event_type: export.completed, aggregation: COUNT}
"""
METERED_PLAN: dict[str, Any] = {
    "id": "metered", "rank": 9, "modules": ["sales"], "price": {"P1M": "10.00"},
    "companies": 1, "contacts": 100, "features": [],
    "usage": [
        # 1,000 included; 0.002 up to 10,000 billable, then 0.001 and 5.00 once reached
        {"meter": "api_calls", "included": "1000", "model": "graduated",
         "tiers": [{"up_to": "10000", "unit_price": "0.002", "flat": "0"},
                   {"up_to": None, "unit_price": "0.001", "flat": "5.00"}]},
        # every SMS at its tier's price: 0.10 up to 100, 0.08 (+2.00) up to 1,000, then 0.05
        {"meter": "sms_sent", "module": "sales", "model": "volume",
         "tiers": [{"up_to": "100", "unit_price": "0.10"},
                   {"up_to": "1000", "unit_price": "0.08", "flat": "2.00"},
                   {"up_to": None, "unit_price": "0.05"}]},
        # packages of 10 exports at 1.50
        {"meter": "exports", "model": "package", "package_size": "10",
         "package_price": "1.50"}],
    "minimum": {"P1M": "20.00"}}

# (api calls, SMS, exports) used in each month, January to December.
USAGE = [(1000, 100, 10), (11000, 101, 11), (11001, 1000, 0), (0, 0, 0), (3500, 1001, 25),
         (1250, 3, 1), (1001, 99, 9), (1003, 1000, 10), (26000, 0, 20), (1250, 1, 0),
         (11001, 101, 101), (0, 1234, 0)]

# By hand (VAT 20 %; 10.00 of plan in advance on each; usage of the month before):
# 01-01  first period: 10.00                                               -> 12.00
# 02-01  Jan: api 1,000 = included: 0.00; sms 100 in tier 1: 100 x 0.10 = 10.00; exports
#        10 = 1 package: 1.50; usage 11.50 < 20.00: minimum 8.50. 30.00    -> 36.00
# 03-01  Feb: api 10,000 billable, exactly at the bound: 10,000 x 0.002 = 20.00; sms 101
#        in tier 2: 101 x 0.08 + 2.00 = 10.08; exports 11 = 2 packages: 3.00;
#        plan 10.00 + 33.08 = 43.08, tax 8.616 -> 8.62                     -> 51.70
# 04-01  Mar: api 10,001 billable: 20.00 + 1 x 0.001 + 5.00 = 25.001 -> 25.00;
#        sms 1,000: 1,000 x 0.08 + 2.00 = 82.00; no export, no line. 117.00 -> 140.40
# 05-01  Apr: nothing used: the minimum, 20.00. 30.00                      -> 36.00
# 06-01  May: api 2,500 billable x 0.002 = 5.00; sms 1,001 in tier 3: 1,001 x 0.05 =
#        50.05; exports 25 = 3 packages: 4.50. 69.55, tax 13.91            -> 83.46
# 07-01  Jun: api 250 x 0.002 = 0.50; sms 3 x 0.10 = 0.30; exports 1 package 1.50;
#        usage 2.30: minimum 17.70. 30.00                                  -> 36.00
# 08-01  Jul: api 1 billable x 0.002 = 0.002 -> 0.00 (a line all the same); sms 99 in tier
#        1: 9.90; exports 9 = 1 package: 1.50; usage 11.40: minimum 8.60. 30.00 -> 36.00
# 09-01  Aug: api 3 x 0.002 = 0.006 -> 0.01; sms 1,000, exactly at tier 2's bound:
#        1,000 x 0.08 + 2.00 = 82.00; exports 10 = exactly 1 package: 1.50.
#        93.51, tax 18.702 -> 18.70                                         -> 112.21
# 10-01  Sep: api 25,000 billable: 20.00 + 15,000 x 0.001 = 15.00 + 5.00 = 40.00; no SMS,
#        no line; exports 20 = 2 packages: 3.00. 53.00, tax 10.60           -> 63.60
# 11-01  Oct: api 250 x 0.002 = 0.50; sms 1 x 0.10 = 0.10; usage 0.60: minimum 19.40.
#        30.00                                                              -> 36.00
# 12-01  Nov: api 10,001 billable: 25.001 -> 25.00; sms 101: 10.08; exports 101 = 11
#        packages: 16.50. 61.58, tax 12.316 -> 12.32                        -> 73.90
# 2028-01-01  Dec: sms 1,234 in tier 3: 1,234 x 0.05 = 61.70. 71.70, tax 14.34 -> 86.04
EXPECTED: list[tuple[str, dict[str, str]]] = [
    ("12.00", {"plan": "10.00"}),
    ("36.00", {"plan": "10.00", "api_calls": "0.00", "sms_sent": "10.00", "exports": "1.50",
               "minimum_commitment": "8.50"}),
    ("51.70", {"plan": "10.00", "api_calls": "20.00", "sms_sent": "10.08", "exports": "3.00"}),
    ("140.40", {"plan": "10.00", "api_calls": "25.00", "sms_sent": "82.00"}),
    ("36.00", {"plan": "10.00", "minimum_commitment": "20.00"}),
    ("83.46", {"plan": "10.00", "api_calls": "5.00", "sms_sent": "50.05", "exports": "4.50"}),
    ("36.00", {"plan": "10.00", "api_calls": "0.50", "sms_sent": "0.30", "exports": "1.50",
               "minimum_commitment": "17.70"}),
    ("36.00", {"plan": "10.00", "api_calls": "0.00", "sms_sent": "9.90", "exports": "1.50",
               "minimum_commitment": "8.60"}),
    ("112.21", {"plan": "10.00", "api_calls": "0.01", "sms_sent": "82.00", "exports": "1.50"}),
    ("63.60", {"plan": "10.00", "api_calls": "40.00", "exports": "3.00"}),
    ("36.00", {"plan": "10.00", "api_calls": "0.50", "sms_sent": "0.10",
               "minimum_commitment": "19.40"}),
    ("73.90", {"plan": "10.00", "api_calls": "25.00", "sms_sent": "10.08", "exports": "16.50"}),
    ("86.04", {"plan": "10.00", "sms_sent": "61.70"}),
]


def usage_catalog(tmp_path: Path) -> tuple[Path, Path]:
    """The demo catalog plus the metered plan, and the meters it prices."""
    return demo_catalog_with(tmp_path, [METERED_PLAN], METERS)


def month_events(tenant: str, month: int, api: int, sms: int, exports: int
                 ) -> list[dict[str, Any]]:
    def event(kind: str, n: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"specversion": "1.0", "id": f"{tenant}-{kind}-{month}-{n}", "source": "year",
                "type": kind, "subject": tenant, "data": data,
                "time": f"{YEAR}-{month:02d}-15T12:{n % 60:02d}:00Z"}

    found = [event("api.calls", 0, {"count": api})] if api else []
    found += [event("sms.sent", 0, {"count": sms})] if sms else []
    return found + [event("export.completed", n, {}) for n in range(exports)]


def amounts(invoice: dict[str, Any]) -> dict[str, str]:
    """Each line's amount by kind, usage lines by meter."""
    return {(line["source"]["meter"] if line["kind"] == "usage" else line["kind"]):
            line["amount"] for line in invoice["lines"]}


async def send(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events", json=events, headers={
        **ADMIN, "Content-Type": "application/cloudevents-batch+json"})
    assert response.status_code < 300, response.text


async def test_a_year_of_usage_charges(endpoints: Endpoints, unique: str,
                                            tmp_path: Path) -> None:
    catalog, meters = usage_catalog(tmp_path)
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    tenant = f"{unique}-metered"
    async with private_platform(endpoints, unique, start, db=11, catalog=catalog,
                                meters=meters) as app:
        client = app.client
        created = await client.post("/v1/tenants", headers=ADMIN, json={
            "id": tenant, "plan": "metered", "cycle": "P1M", "anchor": f"{YEAR}-01-01",
            "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1"})
        assert created.status_code == 201, created.text
        await send(client, [e for month, used in enumerate(USAGE, start=1)
                            for e in month_events(tenant, month, *used)])
        moved = await client.put("/v1/clock", headers=ADMIN,
                                 json={"now": f"{YEAR + 1}-01-01T12:00:00Z"})
        assert moved.status_code == 200, moved.text
        invoices = await invoices_of(client, tenant)
        assert [(i["total"], amounts(i)) for i in invoices] == EXPECTED
        assert sum(Decimal(i["total"]) for i in invoices) == Decimal("803.31")
        feb = invoices[2]
        api = next(line for line in feb["lines"] if line["kind"] == "usage"
                   and line["source"]["meter"] == "api_calls")
        # R9.6: meter, module, period and the query that measured it
        assert api["quantity"] == "11000"
        assert api["period"] == {"from": f"{YEAR}-02-01", "to": f"{YEAR}-03-01"}
        assert api["source"]["query"]["params"]["ts"] == [tenant]
        assert api["source"]["priced"]["tiers"][0]["units"] == "10000"
        sms = next(line for line in feb["lines"] if line["source"].get("meter") == "sms_sent")
        assert sms["module"] == "sales"
        # What has accrued so far in January 2028: 2,000 calls, 1,000 of them billable,
        # 2.00; the minimum tops it up to 20.00.
        await send(client, [{"specversion": "1.0", "id": f"{tenant}-next", "source": "year",
                             "type": "api.calls", "subject": tenant,
                             "time": f"{YEAR + 1}-01-01T10:00:00Z", "data": {"count": 2000}}])

        async def accrued() -> dict[str, Any] | None:
            found: dict[str, Any] = (await client.get(
                f"/v1/tenants/{tenant}/upcoming-invoice", headers=ADMIN)).json()
            return found if "api_calls" in amounts(found) else None

        upcoming = await eventually(accrued)  # once metering has stored the event
        assert upcoming["number"] is None
        assert amounts(upcoming) == {"plan": "10.00", "api_calls": "2.00",
                                     "minimum_commitment": "18.00"}
