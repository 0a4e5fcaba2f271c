"""`/docs` (Swagger UI) and `/redoc` (ReDoc) with their scripts and styles served by the
process itself, so both pages work without internet (FastAPI's own pages load them from a
CDN). The files come from the `fastapi-offline` package, which ships Swagger UI's and
ReDoc's release bundles (docs/api.md, "OpenAPI document", says which and why).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL: Final = "/docs-assets"
ASSETS_DIR: Final = Path(str(files("fastapi_offline") / "static"))
# Swagger UI would send the document to an online validator and show its badge.
SWAGGER_UI_PARAMETERS: Final = {"validatorUrl": None}
# The browser fetches nothing but this process's own addresses (ReDoc's menu shows a logo
# from its vendor's CDN: refused here, the page hides it). The pages' inline script and
# styles, the icons as data URLs and ReDoc's search worker (a blob) are what they need.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'")


def install_api_docs(app: FastAPI) -> None:
    """Serve the two pages and their assets on `app` (created with `docs_url=None,
    redoc_url=None`, so FastAPI's CDN pages are not also registered)."""
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _local_only(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False))


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
