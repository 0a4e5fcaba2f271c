"""`/docs` (Swagger UI) and `/redoc` (ReDoc) work without internet: each page refers only to
addresses of the process itself, and each of those answers 200 with the asset's media type.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.conftest import RunningApp


class _References(HTMLParser):
    """Every `src` and `href` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.extend(value for name, value in attrs
                          if name in ("src", "href") and value is not None)


@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", {"/docs-assets/swagger-ui-bundle.js": "text/javascript",
               "/docs-assets/swagger-ui.css": "text/css",
               "/docs-assets/favicon.png": "image/png"}),
    ("/redoc", {"/docs-assets/redoc.standalone.js": "text/javascript",
                "/docs-assets/favicon.png": "image/png"}),
])
async def test_the_api_docs_load_nothing_from_elsewhere(platform: RunningApp, page: str,
                                                        assets: dict[str, str]) -> None:
    response = await platform.client.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    # No address of another host anywhere in the page: not in a tag, not in its script.
    assert "http://" not in html
    assert "https://" not in html
    parser = _References()
    parser.feed(html)
    # Every asset a path of this process (a "//host/..." address would not be one of them).
    assert sorted(set(parser.found)) == sorted(assets)
    assert "'/openapi.json'" in html or '"/openapi.json"' in html
    # The browser is told to fetch from this process only (ReDoc's menu would show a logo
    # from its vendor's CDN): every source is 'self', inline, or data made on the page.
    policy = dict(directive.strip().split(" ", 1)
                  for directive in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    sources = {source for value in policy.values() for source in value.split()}
    assert sources <= {"'self'", "'unsafe-inline'", "data:", "blob:"}, sources
    for url, media_type in assets.items():
        asset = await platform.client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == media_type, url
        assert len(asset.content) > 1_000, url
    document = await platform.client.get("/openapi.json")
    assert document.status_code == 200


async def test_swagger_ui_sends_the_document_to_no_validator(platform: RunningApp) -> None:
    """Swagger UI would otherwise post the document to an online validator for its badge."""
    html = (await platform.client.get("/docs")).text
    assert '"validatorUrl": null' in html
