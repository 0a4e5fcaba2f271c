"""Screenshots of every console page at 1400×900 on the demo data, written to docs/console/
(the README links them): taken again by every run, so they show the console as it is.

Stored with a 64-colour palette: a page of text and flat colours loses nothing visible, and
each file stays a few tens of kilobytes."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image
from playwright.async_api import Browser

from services.demo import DEMO_TENANT
from tests.console.conftest import Site, data_of, sign_in

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
MAX_BYTES = 80_000


def _store(png: bytes, name: str) -> tuple[tuple[int, int], int]:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    small.save(path, optimize=True)
    return image.size, path.stat().st_size


async def test_screenshots_of_every_console_page(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    login = await context.new_page()
    await login.goto(f"{site.base}/console/login")
    shots = {"login": await login.screenshot()}
    page = await sign_in(browser, site, site.keys["admin-all"])
    latest = data_of(await site.api.get("/v1/invoices", params={
        "tenant": DEMO_TENANT, "kind": "immediate"}))["data"][0]["number"]
    for name, path in (("tenants", "/console/tenants"),
                       ("usage", f"/console/tenants/{DEMO_TENANT}/usage"),
                       ("subscription", f"/console/tenants/{DEMO_TENANT}/subscription"),
                       ("finance", "/console/finance"),
                       ("invoice", f"/console/invoices/{latest}"),
                       ("operators", "/console/operators")):
        await page.goto(site.base + path)
        shots[name] = await page.screenshot()
    await page.goto(f"{site.base}/console/tenants/{DEMO_TENANT}/subscription")
    await page.select_option("select[name=item_0]", "seats-accounting")
    await page.fill("input[name=quantity_0]", "3")
    await page.click("[data-testid=preview-button]")
    await page.locator("#buy").scroll_into_view_if_needed()
    shots["purchase-preview"] = await page.screenshot()
    for name, png in shots.items():
        size, stored = await asyncio.to_thread(_store, png, name)
        assert size == (1400, 900), name
        assert stored < MAX_BYTES, (name, stored)
    await context.close()
