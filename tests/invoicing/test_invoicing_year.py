"""A simulated year of three tenants on the manual clock: every
invoice's total matches the table of docs/invoicing.md ("A simulated year"), computed by hand
there and below, and the numbers run from 1 without a gap."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from services import demo_year
from shared.stack import Endpoints
from tests.conftest import ADMIN, eventually
from tests.invoicing.inv_support import invoices_of, private_platform

# By hand (prices from deploy/catalog/2026-11.yaml, VAT 20 %, each total = subtotal × 1.2):
# alpine  essentials 49.00/month: the first period at start (1 Jan) and 11 renewals
#         (1 Feb .. 1 Dec) -> 12 invoices of 58.80 = 705.60.
# baltic  professional 990.00/year at start -> 1,188.00; 2 CRM seats bought the first day of
#         a 365-day period: 2 x 100.00 x 365/365 = 200.00 -> 240.00. No other billing date
#         in the year: 1,428.00.
# coral   essentials from 15 Jan -> 58.80; the e-mail pack bought on its first day:
#         5.00 x 31/31 = 5.00 -> 6.00; 11 renewals (15 Feb .. 15 Dec), each 49.00 + 5.00 in
#         advance and (1,500 - 1,000) x 0.002 = 1.00 of e-mail overage in arrears = 55.00
#         -> 66.00; 11 x 66.00 = 726.00. Total 790.80.
EXPECTED = {
    "alpine": Counter({"58.80": 12}),
    "baltic": Counter({"1188.00": 1, "240.00": 1}),
    "coral": Counter({"58.80": 1, "6.00": 1, "66.00": 11}),
}
YEAR_TOTALS = {"alpine": Decimal("705.60"), "baltic": Decimal("1428.00"),
               "coral": Decimal("790.80")}


async def test_a_year_of_three_tenants(endpoints: Endpoints, unique: str) -> None:
    start = datetime(demo_year.YEAR, 1, 1, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=4) as app:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app),
                                   base_url="http://test", headers=ADMIN, timeout=120)
        tenants = await demo_year.play(client, prefix=f"{unique}-")
        numbers: list[str] = []
        for tenant, name in zip(tenants, demo_year.TENANTS, strict=True):
            invoices = await invoices_of(app.client, tenant)
            assert Counter(i["total"] for i in invoices) == EXPECTED[name], name
            assert sum(Decimal(i["total"]) for i in invoices) == YEAR_TOTALS[name]
            numbers.extend(i["number"] for i in invoices)
        # dolomite, besides the table: professional for the year, 990.00 + 20 % = 1,188.00;
        # a VIP contract, 680.00 + 20 % = 816.00, ending on 1 January 2028, so its renewal
        # notices fall at Paris midnight 30 and 7 days before (R8.6); OrangeCare for one
        # user, 120.00 + 20 % = 144.00, its renewal invoiced on 1 December at 10 % off,
        # 108.00 + 20 % = 129.60, declined on 31 December and credited in full: 129.60.
        dolomite = f"{unique}-{demo_year.NOTICES_TENANT}"

        async def credited() -> list[dict[str, object]]:
            found = await invoices_of(app.client, dolomite)
            return found if any(i["kind"] == "credit_note" for i in found) else []

        invoices = await eventually(credited)
        assert Counter((i["kind"] == "credit_note", i["total"]) for i in invoices) == {
            (False, "1188.00"): 1, (False, "816.00"): 1, (False, "144.00"): 1,
            (False, "129.60"): 1, (True, "129.60"): 1}
        numbers.extend(i["number"] for i in invoices if i["kind"] != "credit_note")
        assert await demo_year.renewal_notices(client, prefix=f"{unique}-") == [
            "2027-12-01T23:00:00Z", "2027-12-24T23:00:00Z"]
        await client.aclose()
    assert sorted(numbers) == [f"INV-{demo_year.YEAR}-{n:06d}" for n in range(1, 32)]
