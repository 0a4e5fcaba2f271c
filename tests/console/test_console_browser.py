"""The console in real headless Chromium, on the demo data (a missing browser fails them).

Each key signs in through the login form; what it sees is checked against the API's role
table by hand (docs/api.md "Keys"), and every number the console shows is compared with
what the API answers for the same question.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from services.demo import DEMO_TENANT
from tests.console.conftest import OTHER_TENANT, Site, data_of, nav_labels, sign_in

USAGE = f"/console/tenants/{DEMO_TENANT}/usage"
SUBSCRIPTION = f"/console/tenants/{DEMO_TENANT}/subscription"


async def status_of(page: Page, url: str) -> int:
    response = await page.goto(url)
    assert response is not None
    status: int = response.status
    return status


async def test_each_role_sees_only_what_it_may(browser: Browser, site: Site) -> None:
    """The role table: dashboard reads usage, tenants, history and invoices; ingest reads
    tenants and buys, but reads no usage, history or invoice; finance reads invoices and
    exports, nothing of the tenant; a tenant's admin sees its tenant, not the platform."""
    dashboard = await sign_in(browser, site, site.keys["dashboard"])
    assert dashboard.url.endswith(USAGE)
    assert await nav_labels(dashboard) == ["Usage", "Subscription", "Finance"]
    assert await dashboard.locator("[data-testid=usage-chart]").count() == 1
    await dashboard.goto(site.base + SUBSCRIPTION)
    assert await dashboard.locator("[data-testid=history]").count() == 1
    assert await dashboard.locator("#buy").count() == 0  # no purchase form
    assert await dashboard.locator("form[action$='/renewal']").count() == 0
    assert await status_of(dashboard, site.base + "/console/operators") == 403
    await dashboard.goto(site.base + "/console/finance")
    assert await dashboard.locator("[data-testid=export]").count() == 0  # finance only

    ingest = await sign_in(browser, site, site.keys["ingest"])
    assert await nav_labels(ingest) == ["Usage", "Subscription"]
    assert await ingest.locator("[data-testid=usage-chart]").count() == 0  # no GET /v1/usage
    assert await ingest.locator("[data-testid=entitlements]").count() == 1
    await ingest.goto(site.base + SUBSCRIPTION)
    assert await ingest.locator("#buy").count() == 1
    assert await ingest.locator("[data-testid=history]").count() == 0
    assert await status_of(ingest, site.base + "/console/finance") == 403

    finance = await sign_in(browser, site, site.keys["finance"])
    assert finance.url.endswith("/console/finance")
    assert await nav_labels(finance) == ["Finance"]
    assert await finance.locator("[data-testid=export]").count() == 1
    first = await finance.locator("[data-testid=invoices] a").first.get_attribute("href")
    await finance.goto(site.base + str(first))
    assert await finance.locator("[data-testid=credit]").count() == 0  # admin only
    assert await status_of(finance, site.base + USAGE) == 403
    assert await status_of(finance, site.base + SUBSCRIPTION) == 403

    tenant_admin = await sign_in(browser, site, site.keys["admin"])
    assert await nav_labels(tenant_admin) == ["Usage", "Subscription", "Finance"]
    assert await status_of(tenant_admin, site.base + "/console/operators") == 403

    platform_admin = await sign_in(browser, site, site.keys["admin-all"])
    assert platform_admin.url.endswith("/console/tenants")
    assert await nav_labels(platform_admin) == ["Tenants", "Finance", "Operators"]
    await platform_admin.goto(site.base + "/console/operators")
    health = await platform_admin.locator("[data-testid=health]").inner_text()
    assert all(part in health for part in ("kafka", "redis", "clickhouse"))


async def test_a_tenant_scoped_key_never_sees_another_tenant(browser: Browser,
                                                             site: Site) -> None:
    """URL tampering: every page naming the other tenant, or one of its invoices, is 404."""
    others = data_of(await site.api.get("/v1/invoices", params={"tenant": OTHER_TENANT}))
    acme = data_of(await site.api.get("/v1/invoices", params={"tenant": DEMO_TENANT}))
    for role in ("dashboard", "admin"):
        page = await sign_in(browser, site, site.keys[role])
        for path in (f"/console/tenants/{OTHER_TENANT}/usage",
                     f"/console/tenants/{OTHER_TENANT}/subscription",
                     f"/console/finance?tenant={OTHER_TENANT}",
                     *(f"/console/invoices/{doc['number']}" for doc in others["data"])):
            assert await status_of(page, site.base + path) == 404, (role, path)
        assert await status_of(page, site.base + "/console/tenants") == 200
        assert page.url.endswith(USAGE)  # its own tenant, not the list of all
        await page.goto(site.base + "/console/finance")
        listed = await page.locator("[data-testid=invoices] tbody tr td:nth-child(3)"
                                    ).all_inner_texts()
        assert set(listed) == {DEMO_TENANT}
        assert len(listed) == len(acme["data"])
    assert others["data"], "the other tenant has an invoice to tamper with"


# (meter, window, grouped by module, [from, to) of the chart, buckets): the chart ends with
# the bucket holding the clock's instant, 2026-03-20 11:00 in Paris (UTC+1 until 29 March).
CHARTS = [
    ("emails_sent", "day", False, "2026-02-18T00:00:00+01:00", "2026-03-21T00:00:00+01:00", 31),
    ("users_with_access", "day", True, "2026-02-18T00:00:00+01:00",
     "2026-03-21T00:00:00+01:00", 31),
    # Twelve local months: April 2025 (UTC+2, summer time) to March 2026.
    ("access_grants", "month", True, "2025-04-01T00:00:00+02:00",
     "2026-04-01T00:00:00+02:00", 12),
]


@pytest.mark.parametrize(("meter", "window", "by_module", "start", "end", "buckets"), CHARTS)
async def test_the_usage_chart_draws_the_numbers_of_the_usage_api(
        browser: Browser, site: Site, meter: str, window: str, by_module: bool, start: str,
        end: str, buckets: int) -> None:
    """One bar per bucket of the tenant's calendar, buckets without usage drawn as zero, and
    each segment (a module's share when the meter groups by module) the API's point."""
    page = await sign_in(browser, site, site.keys["dashboard"])
    await page.goto(f"{site.base}{USAGE}?meter={meter}&window={window}")
    chart = page.locator("[data-testid=usage-chart]")
    drawn_range = (await chart.get_attribute("data-from"), await chart.get_attribute("data-to"))
    assert drawn_range == (start, end)
    bars = page.locator("[data-testid=usage-chart] g.bucket")
    assert await bars.count() == buckets
    totals = [await b.get_attribute("data-total") for b in await bars.all()]
    assert "0" in totals  # the demo's usage starts 20 days back: earlier buckets are zero
    drawn = {}
    for segment in await page.locator("[data-testid=usage-chart] rect.segment").all():
        bucket = segment.locator("xpath=..")
        key = (datetime.fromisoformat(str(await bucket.get_attribute("data-from"))),
               await segment.get_attribute("data-series"))
        drawn[key] = float(str(await segment.get_attribute("data-value")))
    params = {"tenant": DEMO_TENANT, "meter": meter, "window": window, "tz": "Europe/Paris",
              "from": start, "to": end}
    if by_module:
        params["group_by"] = "module"
    api = data_of(await site.api.get("/v1/usage", params=params))
    expected: dict[tuple[datetime, str | None], float] = {}
    for point in api["data"]:
        key = (datetime.fromisoformat(point["from"]), point["group"].get("module", "all"))
        expected[key] = expected.get(key, 0.0) + float(point["value"])
    assert any(expected.values()), "the demo has usage in the window"
    assert drawn == expected


async def test_a_purchase_previewed_then_confirmed_makes_the_invoice_the_api_shows(
        browser: Browser, site: Site) -> None:
    """2 seats-crm on 2026-03-20, acme's period 2026-03-20 → 2026-04-20 (all 31 days left):
    2 × 10.00 = 20.00 now, 20.00 next cycle; the invoice adds 20 % VAT: 4.00, total 24.00."""
    page = await sign_in(browser, site, site.keys["admin"])
    await page.goto(site.base + SUBSCRIPTION)
    await page.select_option("select[name=item_0]", "seats-crm")
    await page.fill("input[name=quantity_0]", "2")
    await page.click("[data-testid=preview-button]")
    assert await page.locator("[data-testid=charge]").all_inner_texts() == ["20.00"]
    assert await page.locator("[data-testid=next-cycle]").inner_text() == "20.00"
    await page.click("[data-testid=confirm]")
    number = await page.locator("[data-testid=done-invoice]").inner_text()
    invoice = data_of(await site.api.get(f"/v1/invoices/{number}"))
    assert (invoice["tenant"], invoice["kind"]) == (DEMO_TENANT, "immediate")
    assert [(x["kind"], x["quantity"], x["amount"]) for x in invoice["lines"]] == [
        ("proration", "2", "20.00")]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("20.00", "4.00", "24.00")
    await page.goto(f"{site.base}/console/invoices/{number}")
    assert await page.locator("[data-testid=total]").inner_text() == "24.00"


async def test_a_credit_note_issued_in_the_console_is_in_the_month_export(
        browser: Browser, site: Site) -> None:
    """1.20 credited (tax included) on an acme invoice of March 2026: the export of 2026-03
    carries the note's lines with negative amounts, 1.00 net and 0.20 of VAT at 20 %."""
    listed = data_of(await site.api.get("/v1/invoices", params={
        "tenant": DEMO_TENANT, "kind": "immediate", "month": "2026-03"}))
    target = listed["data"][-1]["number"]
    page = await sign_in(browser, site, site.keys["admin-all"])
    await page.goto(f"{site.base}/console/invoices/{target}")
    await page.fill("input[name=amount]", "1.20")
    await page.fill("input[name=reason]", "console goodwill")
    await page.click("[data-testid=credit]")
    note = await page.locator("[data-testid=number]").inner_text()
    assert note.startswith("CN-2026-")
    document = data_of(await site.api.get(f"/v1/invoices/{note}"))
    assert (document["credits"], document["total"]) == (target, "1.20")
    finance = await sign_in(browser, site, site.keys["finance"])
    async with finance.expect_download() as download_info:
        await finance.goto(f"{site.base}/console/finance")
        await finance.fill("form[action='/console/finance/export'] input[name=month]",
                           "2026-03")
        await finance.click("[data-testid=export]")
    download = await download_info.value
    saved = Path(str(await download.path()))
    text = await asyncio.to_thread(saved.read_text, encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    mine = [row for row in rows if row["invoice"] == note]
    assert mine, "the credit note's lines are in the month export"
    assert all(row["amount"].startswith("-") for row in mine)
    assert {(row["invoice_subtotal"], row["invoice_tax"], row["invoice_total"])
            for row in mine} == {
        ("-1.00", "-0.20", "-1.20")}
    api_export = await site.api.get("/v1/invoices/export", params={"month": "2026-03"})
    assert note in api_export.text


async def test_a_change_posted_without_the_csrf_token_is_refused(browser: Browser,
                                                                 site: Site) -> None:
    """A POST of the renewal switch with no token, or another session's, is 403 and
    changes nothing; the same form with the page's token goes through."""
    page = await sign_in(browser, site, site.keys["admin"])
    await page.goto(site.base + SUBSCRIPTION)
    own = await page.locator("form[action$='/renewal'] input[name=csrf]").get_attribute(
        "value")
    other = await sign_in(browser, site, site.keys["admin"])
    await other.goto(site.base + SUBSCRIPTION)
    stranger = await other.locator("input[name=csrf]").first.get_attribute("value")
    form: dict[str, str | float | bool] = {"renewal": "off", "actor_user": "u-1",
                                           "actor_role": "owner"}
    url = f"{site.base}/console/tenants/{DEMO_TENANT}/renewal"
    for token in (None, "", stranger):
        fields = form if token is None else {**form, "csrf": str(token)}
        refused = await page.request.post(url, form=fields, max_redirects=0)
        assert refused.status == 403, token
    assert data_of(await site.api.get(f"/v1/tenants/{DEMO_TENANT}"))["renewal"] is True
    for path in ("/console/logout", f"/console/tenants/{DEMO_TENANT}/purchase"):
        assert (await page.request.post(site.base + path, form={})).status == 403
    accepted = await page.request.post(url, form={**form, "csrf": str(own)}, max_redirects=0)
    assert accepted.status == 303
    assert data_of(await site.api.get(f"/v1/tenants/{DEMO_TENANT}"))["renewal"] is False
    back = await page.request.post(url, form={**form, "renewal": "on", "csrf": str(own)},
                                   max_redirects=0)
    assert back.status == 303
