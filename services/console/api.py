"""The console's routes under `/console`: sign-in, the home redirect, the tenants list, the
operators page and the stylesheet; the tenant, usage and finance pages are in their own
modules, included here. Thin, like the API's routes: each asks the services, then renders."""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import REGISTRY

from services.console import account, finance, usage
from services.console.sessions import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    new_token,
)
from services.console.web import (
    EXPORT,
    OPERATE,
    READ_INVOICES,
    READ_TENANT,
    csrf_refused,
    error_page,
    page,
    posted_form,
    read_form,
    render,
    services_of,
    signed_in,
)
from shared.auth import KEY_ID_SCOPE, Role, RoleCheck, key_from_reply
from shared.errors import AppError, NotFound, Unauthorized
from shared.keys import TENANT_ZONES
from shared.platform_api import readiness
from shared.redis import text

router = APIRouter(prefix="/console", include_in_schema=False)
router.include_router(usage.router)
router.include_router(account.router)
router.include_router(finance.router)

STYLESHEET = resources.files("services.console").joinpath("static/console.css").read_bytes()
# Any key may sign in and out; what it then sees is decided page by page.
ANYONE = RoleCheck(Role.INGEST, Role.DASHBOARD, Role.FINANCE)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(STYLESHEET, media_type="text/css",
                    headers={"Cache-Control": "max-age=3600"})


@router.get("/login")
async def login_form(request: Request) -> Response:
    token = new_token()
    response = render(request, "login.html", None, login_csrf=token, problem=None)
    _cookie(response, request, LOGIN_COOKIE, token, 3_600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await _login_fields(request)
    if isinstance(fields, Response):
        return fields
    store = services_of(request).sessions
    secret = fields.get("key", "").strip()
    try:
        if not secret or len(secret) > 256:
            raise Unauthorized("an API key is required", field="key")
        key = key_from_reply(await store.keys.record(secret))
    except Unauthorized:
        token = new_token()
        refused = render(request, "login.html", None, status=401, login_csrf=token,
                         problem="That key is unknown or revoked.")
        _cookie(refused, request, LOGIN_COOKIE, token, 3_600)
        return refused
    request.scope[KEY_ID_SCOPE] = key.id  # the access log names who signed in
    session = await store.open(key)
    signed = RedirectResponse("/console", status_code=303)
    _cookie(signed, request, SESSION_COOKIE, session.token, store.ttl_s)
    signed.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return signed


async def _login_fields(request: Request) -> dict[str, str] | Response:
    """The login form's fields, or the refusal page: the form's token must match its cookie
    (double submit: no session exists yet)."""
    try:
        fields = await read_form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(fields.get("csrf", ""), expected):
            raise csrf_refused()
    except AppError as error:
        return render(request, "error.html", None, status=error.status, error=error)
    return fields


@router.post("/logout")
@page
async def logout(request: Request) -> Response:
    viewer = await signed_in(request, ANYONE)
    await posted_form(request, viewer)
    await services_of(request).sessions.close(viewer.session.token)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@router.get("")
@page
async def home(request: Request) -> Response:
    """The first section the key may open."""
    viewer = await signed_in(request, ANYONE)
    scope = viewer.session.key.tenant
    if viewer.may(READ_TENANT):
        target = "/console/tenants" if scope is None else f"/console/tenants/{scope}/usage"
    elif viewer.may(READ_INVOICES) or viewer.may(EXPORT):
        target = "/console/finance"
    else:
        target = "/console/operators"
    return RedirectResponse(target, status_code=303)


# A page lists at most this many tenants; the search narrows a larger platform down.
TENANTS_SHOWN = 500


@router.get("/tenants")
@page
async def tenants(request: Request) -> Response:
    viewer = await signed_in(request, READ_TENANT)
    scope = viewer.session.key.tenant
    if scope is not None:
        return RedirectResponse(f"/console/tenants/{scope}/usage", status_code=303)
    search = request.query_params.get("q", "")[:128]
    names = sorted(name for name in (text(t) for t in await services_of(
        request).sessions.redis.hkeys(TENANT_ZONES)) if search in name)
    return render(request, "tenants.html", viewer, tenants=names[:TENANTS_SHOWN],
                  more=max(0, len(names) - TENANTS_SHOWN), search=search, tenant=None,
                  may_invoices=viewer.may(READ_INVOICES))


# The series an operator watches, as /metrics exposes them (names without `_total`).
OPERATOR_SERIES = ("consumer_lag_messages", "metering_dead_letters", "invoicing_billing_runs",
                   "invoicing_invoices_issued", "entitlements_outbox_backlog",
                   "metering_events_stored", "metering_events_duplicate")


def _series() -> list[tuple[str, str, float]]:
    """(series, labels, value) of OPERATOR_SERIES as /metrics has them, partitions summed
    (lag per consumer, dead letters per reason)."""
    summed: dict[tuple[str, str], float] = {(name, ""): 0.0 for name in OPERATOR_SERIES}
    for family in REGISTRY.collect():
        if family.name not in OPERATOR_SERIES:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = " ".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k != "partition")
            summed.pop((family.name, ""), None)
            summed[family.name, labels] = summed.get((family.name, labels), 0.0) + sample.value
    return [(name, labels, value) for (name, labels), value in summed.items()]


@router.get("/operators")
@page
async def operators(request: Request) -> Response:
    viewer = await signed_in(request, OPERATE)
    services = services_of(request)
    health = await readiness(request.app.state.runtime)
    latest = await services.invoicing.reads.list_invoices(None, None, None, None, "period")
    last_run: dict[str, Any] | None = latest["data"][0] if latest["data"] else None
    return render(request, "operators.html", viewer, tenant=None, health=health,
                  series=_series(), last_run=last_run,
                  clock=await services.invoicing.clock.now())


# Last: routes match in order, so this one only takes what no page above took.
@router.get("/{unknown:path}")
async def no_such_page(request: Request, unknown: str) -> Response:
    """Any other console address: an HTML 404, like every console page's refusals."""
    return error_page(request, NotFound(f"no console page at /console/{unknown[:200]}",
                                        field="path"))
