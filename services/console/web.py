"""What every console page shares: who is signed in and what the key may see, forms with their
CSRF token, and HTML rendering (errors included: a console page answers HTML, never a 5xx for
what the browser sent).

The role checks are the API's own (`shared.auth.RoleCheck`), one per kind of route, so a key
sees in the console exactly what it could call through the API (docs/api.md "Keys").
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from services.console.sessions import SESSION_COOKIE, Session, SessionStore
from services.entitlements.service import EntitlementsService
from services.invoicing.service import InvoicingService
from services.metering.service import MeteringService
from shared.auth import KEY_ID_SCOPE, Principal, Role, RoleCheck
from shared.errors import AppError, Forbidden, PayloadTooLarge, ValidationFailed

# The API's checks, by what a page shows or does (docs/api.md role table).
READ_USAGE = RoleCheck(Role.DASHBOARD)                   # GET /v1/usage
READ_TENANT = RoleCheck(Role.INGEST, Role.DASHBOARD)     # GET /v1/tenants/{tenant}
READ_HISTORY = RoleCheck(Role.DASHBOARD)                 # GET /v1/tenants/{tenant}/history
CHANGE_TENANT = RoleCheck(Role.INGEST)                   # purchases, PATCH, lot (un)cancel
READ_INVOICES = RoleCheck(Role.FINANCE, Role.DASHBOARD)  # GET /v1/invoices[/{number}]
EXPORT = RoleCheck(Role.FINANCE)                         # CSV of an invoice, month export
CREDIT = RoleCheck()                                     # credit notes: admin only
OPERATE = RoleCheck(platform_wide=True)                  # the whole platform: admin, no tenant

# A console form is a few fields; anything bigger is not one of ours.
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64

TEMPLATES = Environment(loader=PackageLoader("services.console"),
                        autoescape=select_autoescape(default=True),
                        undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)


def plain(value: Any) -> str:
    """A provenance or history value for reading: lists joined, mappings as k=v."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    return str(value)


TEMPLATES.filters["plain"] = plain


class SignInNeeded(Exception):
    """No live session: the page sends the browser to the login form."""


@dataclass(frozen=True, slots=True)
class Services:
    sessions: SessionStore
    entitlements: EntitlementsService
    invoicing: InvoicingService
    metering: MeteringService


def services_of(request: Request) -> Services:
    state = request.app.state
    return Services(state.console_sessions, state.entitlements, state.invoicing,
                    state.metering)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in key, admitted to the page it asked for."""

    session: Session
    principal: Principal

    def may(self, check: RoleCheck) -> bool:
        return check.allows(self.session.key)

    def see_tenant(self, tenant: str) -> None:
        """A tenant-scoped key sees another tenant as if it did not exist (404)."""
        self.principal.ensure_tenant(tenant)


async def signed_in(request: Request, check: RoleCheck) -> Viewer:
    session = await services_of(request).sessions.find(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInNeeded
    request.scope[KEY_ID_SCOPE] = session.key.id  # the access log names the key, not a secret
    principal = check.admit(session.key, request.method, request.url.path)
    return Viewer(session, principal)


async def read_form(request: Request) -> dict[str, str]:
    """A posted form's fields, its size bounded."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"a console form is at most {MAX_FORM_BYTES} bytes",
                                  field="body")
    try:
        return dict(parse_qsl(body.decode("utf-8", errors="replace"),
                              max_num_fields=MAX_FORM_FIELDS))
    except ValueError:  # more fields than any console form has
        raise ValidationFailed(f"body: at most {MAX_FORM_FIELDS} fields", field="body"
                               ) from None


def csrf_refused() -> Forbidden:
    return Forbidden("the form's CSRF token is missing or stale: reload the page",
                     field="csrf", code="csrf_failed")


async def posted_form(request: Request, viewer: Viewer) -> dict[str, str]:
    """A posted form's fields, once its CSRF token matched the session's (else 403)."""
    fields = await read_form(request)
    if not viewer.session.csrf_ok(fields.get("csrf")):
        raise csrf_refused()
    return fields


def render(request: Request, template: str, viewer: Viewer | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        viewer=viewer, nav=navigation(viewer, context.get("tenant")), path=request.url.path,
        csrf=viewer.session.csrf if viewer else "", **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


# Pages are never framed, never cached, and load nothing but the console's own files.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "same-origin",
}


def navigation(viewer: Viewer | None, tenant: str | None) -> list[tuple[str, str]]:
    """The sections this key may open: (label, link)."""
    if viewer is None:
        return []
    links: list[tuple[str, str]] = []
    scope = viewer.session.key.tenant
    if viewer.may(READ_TENANT) and scope is None:
        links.append(("Tenants", "/console/tenants"))
    shown = tenant or scope
    if shown is not None and viewer.may(READ_TENANT):
        links += [("Usage", f"/console/tenants/{shown}/usage"),
                  ("Subscription", f"/console/tenants/{shown}/subscription")]
    if viewer.may(READ_INVOICES):
        links.append(("Finance", "/console/finance"))
    if viewer.may(OPERATE):
        links.append(("Operators", "/console/operators"))
    return links


P = ParamSpec("P")


def page(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """A console route: no session → the login form; a refusal or bad input → an HTML page
    with the API's status and message (4xx), never a trace."""

    @functools.wraps(handler)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs["request"]
        assert isinstance(request, Request)
        try:
            return await handler(*args, **kwargs)
        except SignInNeeded:
            return RedirectResponse("/console/login", status_code=303)
        except AppError as error:
            return error_page(request, error)
        except ValidationError as error:
            return error_page(request, invalid(error))

    return guarded


def invalid(error: ValidationError) -> ValidationFailed:
    """A model's refusal of form input, as the API's 422 naming the field."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return ValidationFailed(f"{where}: {first['msg']}", field=where)


def error_page(request: Request, error: AppError) -> HTMLResponse:
    return render(request, "error.html", None, status=error.status, error=error)


def bounded_int(fields: dict[str, str], name: str, default: int | None = None,
                low: int = 1, high: int = 1_000_000) -> int | None:
    """An integer form field within [low, high]; blank gives `default`."""
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise ValidationFailed(f"{name}: a whole number from {low} to {high}", field=name)
    return int(raw)
