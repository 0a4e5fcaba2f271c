"""The console's test site: a platform of its own (valkey database, topics, consumer groups and
invoice database; the manual clock on 2026-03-20), served over real HTTP with the console
part, the `make run` demo loaded through the API, and keys of every role. One site for the
whole package; the browser is Debian's chromium driven by Playwright.

A missing browser fails the tests: they are never skipped (`.ci/run` installs chromium).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from services import demo
from services.console.part import ConsolePart
from shared.stack import Endpoints, free_port
from tests.conftest import ADMIN, ADMIN_KEY, create_tenant
from tests.invoicing.inv_support import private_platform

CHROMIUM = "/usr/bin/chromium"
CONSOLE_DB = 1  # a valkey database no other test uses
# Not the demo year's first instant: the demo loads its tenant and a month of events only.
CLOCK_START = datetime(2026, 3, 20, 10, tzinfo=UTC)
OTHER_TENANT = "globex"
SCOPED_ROLES = ("admin", "dashboard", "finance", "ingest")


@dataclass
class Site:
    base: str
    api: httpx.AsyncClient  # the platform's API, as the admin key
    keys: dict[str, str] = field(default_factory=dict)  # "<role>" (acme) or "admin-all"

    async def mint(self, role: str, tenant: str | None) -> str:
        answer = await self.api.post("/v1/api-keys", json={"role": role, "tenant": tenant})
        assert answer.status_code == 201, answer.text
        secret: str = answer.json()["key"]
        return secret


@pytest.fixture(scope="package")
async def site(endpoints: Endpoints) -> AsyncIterator[Site]:
    unique = "console"
    async with private_platform(endpoints, unique, CLOCK_START, db=CONSOLE_DB,
                                more_parts=[ConsolePart]) as app:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=port,
                                               lifespan="off", log_config=None,
                                               access_log=False))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            assert not serving.done(), "the console's server did not start"
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=60) as api:
                await demo.load(base, ADMIN_KEY)
                await create_tenant(api, OTHER_TENANT)
                site = Site(base, api, {"admin-all": ADMIN_KEY})
                for role in SCOPED_ROLES:
                    site.keys[role] = await site.mint(role, demo.DEMO_TENANT)
                yield site
        finally:
            server.should_exit = True
            await serving


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the console's "
                    "browser tests are never skipped)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=["--no-sandbox"])
        yield chromium
        await chromium.close()


async def sign_in(browser: Browser, site: Site, secret: str) -> Page:
    """A fresh browser context (its own cookies) signed in with `secret`."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900},
                                        accept_downloads=True)
    page = await context.new_page()
    await page.goto(f"{site.base}/console/login")
    await page.fill("input[name=key]", secret)
    await page.click("form[action='/console/login'] button")
    await page.wait_for_url(lambda url: "/console/login" not in url)
    return page


async def nav_labels(page: Page) -> list[str]:
    labels: list[str] = await page.locator("header nav a").all_inner_texts()
    return labels


def data_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()
