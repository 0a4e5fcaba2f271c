"""`/docs` (Swagger UI) and `/redoc` (ReDoc) in real chromium with the network unplugged: every
request for anything but the platform's own address is aborted, and both pages still draw the
API's operations from the assets the process serves itself."""

from __future__ import annotations

from playwright.async_api import Browser, Route

from tests.console.conftest import Site

WAIT_MS = 20_000


async def test_the_api_docs_render_with_the_network_unplugged(browser: Browser, site: Site
                                                              ) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    outside: list[str] = []

    async def unplugged(route: Route) -> None:
        if route.request.url.startswith(site.base):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", unplugged)
    try:
        page = await context.new_page()
        await page.goto(f"{site.base}/docs")
        await page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
        paths = await page.locator(".opblock-summary-path").all_inner_texts()
        assert "/v1/invoices/{number}" in [p.replace("\u200b", "") for p in paths]

        await page.goto(f"{site.base}/redoc")
        await page.get_by_text("/v1/invoices/{number}").first.wait_for(
            state="attached", timeout=WAIT_MS)
        assert outside == [], outside  # the pages asked nothing of the internet
    finally:
        await context.close()
