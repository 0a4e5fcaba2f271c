"""The authorization matrix: every route of the published OpenAPI document × every role ×
three key scopes (unscoped; limited to tenant A, the tenant the request is about; limited to
tenant B, another existing tenant), each request pointing at real objects of tenant A (its
lot, its invoice, a key limited to it) with a well-formed body, so that authorization and
scope answer, not validation. Then focused tests of what a tenant-limited admin key may do
with keys, billing runs, credit notes and listings.

The policy (docs/api.md "Keys", and the rules the team wrote down for tenant-limited keys):
- a role the route does not admit: 403 `forbidden`, whatever the scope (role before scope);
- platform-wide routes (`PUT /v1/clock`, `POST /v1/tenants`) need an unscoped admin key:
  403 `forbidden` to a tenant-limited one;
- a key limited to B acting on A's data: 404 `not_found`, as if A did not exist. The two
  routes that answer item by item say so per item, in their own documented shape:
  `POST /v1/events` ("answers 202 with what was accepted and why anything was not": nothing
  accepted, 422 with the event's `unknown_tenant` rejection) and `POST /v1/check` (200, the
  item's `not_found` error at its position);
- a key limited to A acting on A's data: what an unscoped key of the same role gets;
- never a 5xx.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from services.webhooks.store import NewDelivery, WebhookStore
from shared.auth import Role
from tests.conftest import ADMIN, RunningApp, create_tenant, eventually
from tests.foundation.test_auth_routes import ALLOWED, PUBLIC

Headers = dict[str, str]
Route = tuple[str, str]

UNSCOPED, SCOPE_A, SCOPE_B = "unscoped", "limited to A", "limited to B"
SCOPES = (UNSCOPED, SCOPE_A, SCOPE_B)
OWNER_ADMIN = {"user_id": "u-admin", "role": "owner"}
FORBIDDEN = (403, "forbidden")
NOT_FOUND = (404, "not_found")


# --- the world the requests point at --------------------------------------------------------


@dataclass
class World:
    """Tenants A and B, A's lot and invoice, and a key of every role and scope."""

    client: httpx.AsyncClient
    unique: str
    a: str
    b: str
    anchor: date
    lot: str
    number: str
    webhooks: WebhookStore
    keys: dict[tuple[Role, str], Headers] = field(default_factory=dict)
    key_ids: dict[tuple[Role, str], str] = field(default_factory=dict)
    serial: itertools.count[int] = field(default_factory=itertools.count)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.unique}-{next(self.serial)}"

    def scope_tenant(self, scope: str) -> str | None:
        return {UNSCOPED: None, SCOPE_A: self.a, SCOPE_B: self.b}[scope]


async def mint(client: httpx.AsyncClient, role: Role | str, tenant: str | None
               ) -> tuple[str, Headers]:
    """A key minted by the bootstrap admin: its id and the headers that carry it."""
    response = await client.post("/v1/api-keys", json={"role": str(role), "tenant": tenant},
                                 headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return str(body["id"]), {"Authorization": f"Bearer {body['key']}"}


async def invoice_numbers(client: httpx.AsyncClient, tenant: str) -> list[str]:
    response = await client.get("/v1/invoices", params={"tenant": tenant}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return [str(doc["number"]) for doc in response.json()["data"]]


async def build_world(platform: RunningApp, unique: str) -> World:
    """Two tenants; A buys a CRM seat (a lot, and an immediate invoice)."""
    client = platform.client
    a, b = f"mx-a-{unique}", f"mx-b-{unique}"
    created = await create_tenant(client, a)
    await create_tenant(client, b)
    bought = await client.post(f"/v1/tenants/{a}/purchases", headers=ADMIN, json={
        "actor": OWNER_ADMIN, "item": "seats-crm", "quantity": 1, "confirm": True})
    assert bought.status_code == 201, bought.text
    answer = bought.json()
    lot = str(answer["lot"]["id"])
    number = answer["invoice"]
    if number is None:  # invoicing had not consumed the purchase within the answer's wait
        async def immediate() -> str | None:
            for candidate in await invoice_numbers(client, a):
                doc = (await client.get(f"/v1/invoices/{candidate}", headers=ADMIN)).json()
                if doc["kind"] == "immediate" and doc["lines"][0]["kind"] != "plan":
                    return candidate
            return None
        number = await eventually(immediate)
    world = World(client=client, unique=unique, a=a, b=b,
                  anchor=date.fromisoformat(created["anchor"]), lot=lot, number=str(number),
                  webhooks=platform.app.state.webhooks.store)
    for role in Role:
        for scope in SCOPES:
            key_id, headers = await mint(client, role, world.scope_tenant(scope))
            world.keys[(role, scope)] = headers
            world.key_ids[(role, scope)] = key_id
    return world


# --- one request per route ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    params: dict[str, str] | None = None
    # A call on an object made for it (a key to delete, an endpoint of A) names it: its id,
    # to clean up after.
    victim: str | None = None


Build = Callable[[World], Awaitable[Call]]
After = Callable[[World, Call, httpx.Response], Awaitable[None]]


async def _nothing_after(world: World, call: Call, response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Recipe:
    """How to call a route about tenant A, and what an admitted key on A's data gets."""

    ok: int
    build: Build
    ok_code: str | None = None  # the error code of an admitted call refused for its content
    about_a: bool = True  # the request names A's data (path, query, body or an object of A)
    platform_wide: bool = False  # needs an unscoped admin key
    out_of_scope: tuple[int, str] = NOT_FOUND  # what a key limited to B gets
    after: After = _nothing_after  # puts back what an admitted call changed


def fixed(method: str, url: Callable[[World], str], json: Callable[[World], Any] = lambda w: None,
          params: Callable[[World], dict[str, str] | None] = lambda w: None) -> Build:
    async def build(world: World) -> Call:
        return Call(method, url(world), json(world), params(world))
    return build


def usage_params(world: World) -> dict[str, str]:
    return {"tenant": world.a, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
            "to": "2026-02-01T00:00:00Z"}


async def _clock_now(world: World) -> str:
    response = await world.client.get("/v1/clock", headers=ADMIN)
    assert response.status_code == 200, response.text
    return str(response.json()["now"])


async def _put_clock(world: World) -> Call:
    # The very instant it is: a no-op (backwards is 409), so that no allowed key moves the
    # session's shared clock.
    return Call("PUT", "/v1/clock", {"now": await _clock_now(world)})


async def _event(world: World) -> Call:
    now = (await _clock_now(world)).replace("+00:00", "Z")
    return Call("POST", "/v1/events", {
        "specversion": "1.0", "id": world.next_id("ev"), "source": "tests/auth-matrix",
        "type": "email.sent", "subject": world.a, "time": now, "data": {"count": 1}})


async def _new_tenant(world: World) -> Call:
    return Call("POST", "/v1/tenants", {
        "id": world.next_id("mx-new"), "plan": "essentials", "cycle": "P1M",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-admin"})


async def _delete_key(world: World) -> Call:
    victim, _ = await mint(world.client, Role.INGEST, world.a)
    return Call("DELETE", f"/v1/api-keys/{victim}", victim=victim)


async def _revoke_victim(world: World, call: Call, response: httpx.Response) -> None:
    if call.victim is not None and response.status_code != 204:
        await world.client.delete(f"/v1/api-keys/{call.victim}", headers=ADMIN)


def _lot_url(world: World, action: str) -> str:
    return f"/v1/tenants/{world.a}/lots/{world.lot}/{action}"


async def _lot_action(world: World, action: str) -> None:
    response = await world.client.post(_lot_url(world, action), json={"actor": OWNER_ADMIN},
                                       headers=ADMIN)
    assert response.status_code == 200, response.text


async def _cancel(world: World) -> Call:
    return Call("POST", _lot_url(world, "cancel"), {"actor": OWNER_ADMIN})


async def _uncancel_if_cancelled(world: World, call: Call, response: httpx.Response) -> None:
    if response.is_success:
        await _lot_action(world, "uncancel")


async def _uncancel(world: World) -> Call:
    await _lot_action(world, "cancel")  # something to undo
    return Call("POST", _lot_url(world, "uncancel"), {"actor": OWNER_ADMIN})


async def _uncancel_if_refused(world: World, call: Call, response: httpx.Response) -> None:
    if not response.is_success:
        await _lot_action(world, "uncancel")


# A public address written in the URL (no name to resolve), for an event type nothing sends:
# the endpoints made here are never delivered to, and each is deleted after its call.
HOOK = {"url": "https://93.184.216.34/hooks", "events": ["tests.never"]}


async def _webhook_of_a(world: World) -> str:
    response = await world.client.post("/v1/webhooks", headers=ADMIN,
                                       json={**HOOK, "tenant": world.a})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _new_webhook(world: World) -> Call:
    return Call("POST", "/v1/webhooks", {**HOOK, "tenant": world.a})


async def _drop_new_webhook(world: World, call: Call, response: httpx.Response) -> None:
    if response.status_code == 201:
        await world.client.delete(f"/v1/webhooks/{response.json()['id']}", headers=ADMIN)


async def _delete_webhook(world: World) -> Call:
    hook = await _webhook_of_a(world)
    return Call("DELETE", f"/v1/webhooks/{hook}", victim=hook)


async def _deliveries(world: World) -> Call:
    hook = await _webhook_of_a(world)
    return Call("GET", f"/v1/webhooks/{hook}/deliveries", victim=hook)


async def _retry(world: World) -> Call:
    """A's endpoint with one pending delivery of an event of A's, written as the
    subscription-events consumer writes them."""
    hook = await _webhook_of_a(world)
    event = NewDelivery(id=f"msg_{hook}", endpoint=hook, tenant=world.a,
                        event_type="tests.never", event_id=world.next_id("event"), body=b"{}")
    assert await world.webhooks.enqueue([event], 0) == 1
    return Call("POST", f"/v1/webhooks/{hook}/deliveries/{event.id}/retry", victim=hook)


async def _drop_webhook(world: World, call: Call, response: httpx.Response) -> None:
    await world.client.delete(f"/v1/webhooks/{call.victim}", headers=ADMIN)


RECIPES: dict[Route, Recipe] = {
    ("POST", "/v1/api-keys"): Recipe(201, fixed(
        "POST", lambda w: "/v1/api-keys", lambda w: {"role": "dashboard", "tenant": w.a})),
    ("GET", "/v1/api-keys"): Recipe(200, fixed("GET", lambda w: "/v1/api-keys"),
                                    about_a=False),
    ("DELETE", "/v1/api-keys/{key_id}"): Recipe(204, _delete_key, after=_revoke_victim),
    ("GET", "/v1/clock"): Recipe(200, fixed("GET", lambda w: "/v1/clock"), about_a=False),
    ("PUT", "/v1/clock"): Recipe(200, _put_clock, about_a=False, platform_wide=True),
    ("POST", "/v1/events"): Recipe(202, _event, out_of_scope=(422, "unknown_tenant")),
    ("GET", "/v1/usage"): Recipe(200, fixed("GET", lambda w: "/v1/usage",
                                            params=usage_params)),
    ("GET", "/v1/usage/events"): Recipe(200, fixed("GET", lambda w: "/v1/usage/events",
                                                   params=usage_params)),
    ("GET", "/v1/meters"): Recipe(200, fixed("GET", lambda w: "/v1/meters"), about_a=False),
    ("GET", "/v1/catalog"): Recipe(200, fixed("GET", lambda w: "/v1/catalog"), about_a=False),
    ("GET", "/v1/catalog/versions"): Recipe(200, fixed("GET", lambda w: "/v1/catalog/versions"),
                                            about_a=False),
    # The session's catalog has one version, A's: admitted, the preview is refused as moot.
    ("POST", "/v1/tenants/{tenant}/migrations"): Recipe(409, fixed(
        "POST", lambda w: f"/v1/tenants/{w.a}/migrations",
        lambda w: {"version": "2026-11", "confirm": False}), ok_code="same_version"),
    ("POST", "/v1/tenants"): Recipe(201, _new_tenant, about_a=False, platform_wide=True),
    ("GET", "/v1/tenants/{tenant}"): Recipe(200, fixed("GET", lambda w: f"/v1/tenants/{w.a}")),
    ("PATCH", "/v1/tenants/{tenant}"): Recipe(200, fixed(
        "PATCH", lambda w: f"/v1/tenants/{w.a}",
        lambda w: {"renewal": True, "actor": OWNER_ADMIN})),  # already on: no change
    ("POST", "/v1/tenants/{tenant}/purchases"): Recipe(200, fixed(
        "POST", lambda w: f"/v1/tenants/{w.a}/purchases",
        lambda w: {"actor": OWNER_ADMIN, "item": "seats-crm", "quantity": 1,
                   "confirm": False})),  # the preview
    ("POST", "/v1/tenants/{tenant}/lots/{lot}/cancel"): Recipe(
        200, _cancel, after=_uncancel_if_cancelled),
    ("POST", "/v1/tenants/{tenant}/lots/{lot}/uncancel"): Recipe(
        200, _uncancel, after=_uncancel_if_refused),
    ("GET", "/v1/tenants/{tenant}/history"): Recipe(200, fixed(
        "GET", lambda w: f"/v1/tenants/{w.a}/history")),
    ("GET", "/v1/tenants/{tenant}/check"): Recipe(200, fixed(
        "GET", lambda w: f"/v1/tenants/{w.a}/check", params=lambda w: {"module": "crm"})),
    ("POST", "/v1/check"): Recipe(200, fixed(
        "POST", lambda w: "/v1/check", lambda w: {"checks": [{"tenant": w.a, "module": "crm"}]}),
        out_of_scope=(200, "not_found")),
    ("POST", "/v1/billing-runs"): Recipe(200, fixed(
        "POST", lambda w: "/v1/billing-runs",
        # The day before A's anchor: not a billing date of A, nothing is issued.
        lambda w: {"tenant": w.a, "date": (w.anchor - timedelta(days=1)).isoformat()})),
    ("GET", "/v1/invoices"): Recipe(200, fixed(
        "GET", lambda w: "/v1/invoices", params=lambda w: {"tenant": w.a})),
    ("GET", "/v1/invoices/export"): Recipe(200, fixed(
        "GET", lambda w: "/v1/invoices/export",
        params=lambda w: {"month": w.anchor.strftime("%Y-%m")}), about_a=False),
    ("GET", "/v1/invoices/{number}"): Recipe(200, fixed(
        "GET", lambda w: f"/v1/invoices/{w.number}")),
    ("POST", "/v1/invoices/{number}/credit-notes"): Recipe(201, fixed(
        "POST", lambda w: f"/v1/invoices/{w.number}/credit-notes",
        lambda w: {"amount": "0.01", "reason": "authorization matrix"})),
    ("GET", "/v1/tenants/{tenant}/upcoming-invoice"): Recipe(200, fixed(
        "GET", lambda w: f"/v1/tenants/{w.a}/upcoming-invoice")),
    ("POST", "/v1/webhooks"): Recipe(201, _new_webhook, after=_drop_new_webhook),
    ("GET", "/v1/webhooks"): Recipe(200, fixed("GET", lambda w: "/v1/webhooks"),
                                    about_a=False),
    ("DELETE", "/v1/webhooks/{webhook_id}"): Recipe(204, _delete_webhook, after=_drop_webhook),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Recipe(200, _deliveries,
                                                           after=_drop_webhook),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): Recipe(
        202, _retry, after=_drop_webhook),
}


def published_routes(platform: RunningApp) -> list[Route]:
    """Every route of the published OpenAPI document but health, metrics and docs."""
    paths: dict[str, dict[str, Any]] = platform.app.openapi()["paths"]
    routes = [(method.upper(), path) for path, operations in paths.items()
              if path not in PUBLIC for method in operations]
    assert routes
    return routes


def expected(route: Route, recipe: Recipe, role: Role, scope: str) -> tuple[int, str | None]:
    """What the policy says `role` with `scope` gets on `route`: (status, error code)."""
    if role not in ALLOWED[route]:
        return FORBIDDEN
    if recipe.platform_wide and scope != UNSCOPED:
        return FORBIDDEN
    if scope == SCOPE_B and recipe.about_a:
        return recipe.out_of_scope
    return recipe.ok, recipe.ok_code


def observed(response: httpx.Response) -> tuple[int, str | None, str | None]:
    """(status, error code, what is wrong with the error's shape, if anything). The error
    code of a batch check is its first item's."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return status, None, "an error without a JSON body" if status >= 400 else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        shape = None
        if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str) \
                or not error["message"]:
            shape = f"error shape: {error!r}"
        return status, error.get("code"), shape
    if status >= 400:
        return status, None, "an error without {'error': {code, message}}"
    if isinstance(body, dict) and isinstance(body.get("results"), list) and body["results"]:
        first = body["results"][0]
        if isinstance(first, dict) and isinstance(first.get("error"), dict):
            return status, first["error"].get("code"), None
    return status, None, None


@dataclass(frozen=True)
class Mismatch:
    method: str
    path: str
    role: str
    scope: str
    expected: tuple[int, str | None]
    got: tuple[int, str | None]
    body: str

    def __str__(self) -> str:
        return (f"{self.method} {self.path} as {self.role} {self.scope}: expected "
                f"{self.expected}, got {self.got}: {self.body}")


async def test_every_route_role_and_scope_answers_as_the_policy_says(platform: RunningApp,
                                                                      unique: str) -> None:
    world = await build_world(platform, unique)
    mismatches: list[Mismatch] = []
    checked = 0
    for route in published_routes(platform):
        method, path = route
        recipe = RECIPES.get(route)
        if recipe is None or route not in ALLOWED:
            mismatches.append(Mismatch(method, path, "-", "-", (0, None), (0, None),
                                       "no request recipe or role table row for this route"))
            continue
        for role in Role:
            for scope in SCOPES:
                want = expected(route, recipe, role, scope)
                call = await recipe.build(world)
                response = await world.client.request(
                    call.method, call.url, json=call.json, params=call.params,
                    headers=world.keys[(role, scope)])
                await recipe.after(world, call, response)
                status, code, shape = observed(response)
                checked += 1
                if (status, code) != want or shape is not None or status >= 500:
                    note = response.text[:300] if shape is None else f"{shape}: {response.text}"
                    mismatches.append(Mismatch(method, path, role.value, scope, want,
                                               (status, code), note))
    assert checked >= len(RECIPES) * len(Role) * len(SCOPES)
    # What the calls changed was put back, and only the two admitted credit notes were issued
    # (the unscoped admin's and the one of the admin limited to A).
    tenant = (await world.client.get(f"/v1/tenants/{world.a}", headers=ADMIN)).json()
    lot_states = [lot["state"] for lot in tenant["lots"] if lot["id"] == world.lot]
    if lot_states != ["active"] or tenant["renewal"] is not True:
        mismatches.append(Mismatch("GET", "/v1/tenants/{tenant}", "admin", UNSCOPED,
                                   (200, None), (200, None),
                                   f"A changed: lot {lot_states}, renewal {tenant['renewal']}"))
    invoice = (await world.client.get(f"/v1/invoices/{world.number}", headers=ADMIN)).json()
    notes = [note["amount"] for note in invoice["credit_notes"]]
    if notes != ["0.01", "0.01"]:
        mismatches.append(Mismatch("GET", "/v1/invoices/{number}", "admin", UNSCOPED,
                                   (200, None), (200, None),
                                   f"A's invoice has credit notes {notes}, not two of 0.01"))
    assert not mismatches, (f"{len(mismatches)} of {checked} calls answered against the "
                            "policy:\n" + "\n".join(str(m) for m in mismatches))


# --- keys (policy 5) ------------------------------------------------------------------------


async def test_a_tenant_limited_admin_mints_keys_for_its_own_tenant_only(
        platform: RunningApp, unique: str) -> None:
    c = platform.client
    a, b = f"mk-a-{unique}", f"mk-b-{unique}"
    await create_tenant(c, a)
    await create_tenant(c, b)
    _, admin_a = await mint(c, Role.ADMIN, a)
    wrong: list[str] = []
    minted: list[str] = []
    for role in Role:
        for tenant, want in ((None, FORBIDDEN), (b, NOT_FOUND), (a, (201, None))):
            response = await c.post("/v1/api-keys", json={"role": role.value, "tenant": tenant},
                                    headers=admin_a)
            if response.status_code == 201:
                minted.append(response.json()["id"])
            status, code, _ = observed(response)
            if (status, code) != want:
                wrong.append(f"{role.value} for tenant {tenant}: expected {want}, got "
                             f"{(status, code)}: {response.text[:200]}")
            elif status == 201:
                assert response.json()["tenant"] == a
    for key_id in minted:  # tidy: keys minted wrongly must not outlive the test
        await c.delete(f"/v1/api-keys/{key_id}", headers=ADMIN)
    assert not wrong, "\n".join(wrong)


async def test_minting_a_key_for_a_tenant_that_does_not_exist_is_404(platform: RunningApp,
                                                                     unique: str) -> None:
    response = await platform.client.post(
        "/v1/api-keys", json={"role": "ingest", "tenant": f"ghost-{unique}"}, headers=ADMIN)
    if response.status_code == 201:
        await platform.client.delete(f"/v1/api-keys/{response.json()['id']}", headers=ADMIN)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["field"] == "tenant"


async def test_a_tenant_limited_admin_lists_only_the_keys_of_its_tenant(
        platform: RunningApp, unique: str) -> None:
    c = platform.client
    a, b = f"lk-a-{unique}", f"lk-b-{unique}"
    await create_tenant(c, a)
    await create_tenant(c, b)
    own, admin_a = await mint(c, Role.ADMIN, a)
    ingest_a, _ = await mint(c, Role.INGEST, a)
    of_b, _ = await mint(c, Role.DASHBOARD, b)
    unscoped, _ = await mint(c, Role.FINANCE, None)
    response = await c.get("/v1/api-keys", headers=admin_a)
    assert response.status_code == 200, response.text
    listed = response.json()["data"]
    ids = {k["id"] for k in listed}
    assert {own, ingest_a} <= ids
    foreign = sorted((k["id"], k["tenant"]) for k in listed if k["tenant"] != a)
    assert not foreign, f"{len(foreign)} keys not limited to {a} listed, e.g. {foreign[:5]}"
    assert "key-admin" not in ids
    assert of_b not in ids
    assert unscoped not in ids
    assert all("key" not in k for k in listed)


async def test_a_tenant_limited_admin_cannot_revoke_unscoped_or_other_tenants_keys(
        platform: RunningApp, unique: str) -> None:
    c = platform.client
    a, b = f"rk-a-{unique}", f"rk-b-{unique}"
    await create_tenant(c, a)
    await create_tenant(c, b)
    _, admin_a = await mint(c, Role.ADMIN, a)
    # Victims made for the test: never the bootstrap key, which the whole session needs.
    unscoped, unscoped_headers = await mint(c, Role.DASHBOARD, None)
    of_b, of_b_headers = await mint(c, Role.DASHBOARD, b)
    of_a, _ = await mint(c, Role.DASHBOARD, a)
    wrong: list[str] = []
    for victim, headers in ((unscoped, unscoped_headers), (of_b, of_b_headers)):
        response = await c.delete(f"/v1/api-keys/{victim}", headers=admin_a)
        status, code, _ = observed(response)
        if (status, code) != NOT_FOUND:
            wrong.append(f"DELETE {victim}: expected {NOT_FOUND}, got {(status, code)}")
        still = await c.get("/v1/meters", headers=headers)
        if still.status_code != 200:
            wrong.append(f"{victim} no longer works: {still.status_code}")
    assert not wrong, "\n".join(wrong)
    assert (await c.delete(f"/v1/api-keys/{of_a}", headers=admin_a)).status_code == 204
    for victim in (unscoped, of_b):
        await c.delete(f"/v1/api-keys/{victim}", headers=ADMIN)


# --- billing runs, credit notes, listings (policies 6-8) ---------------------------------------


async def test_a_tenant_limited_admin_bills_its_own_tenant_only(platform: RunningApp,
                                                                 unique: str) -> None:
    c = platform.client
    a, b = f"br-a-{unique}", f"br-b-{unique}"
    anchor = (await create_tenant(c, a))["anchor"]
    await create_tenant(c, b)  # the same billing date as A
    _, admin_a = await mint(c, Role.ADMIN, a)

    other = await c.post("/v1/billing-runs", json={"tenant": b, "date": anchor},
                         headers=admin_a)
    assert (other.status_code, observed(other)[1]) == NOT_FOUND, other.text

    run = await c.post("/v1/billing-runs", json={"date": anchor}, headers=admin_a)
    assert run.status_code == 200, run.text
    answer = run.json()
    foreign_skipped = [t for t in answer["skipped"] if t != a]
    owners = {}
    for number in answer["issued"]:
        doc = await c.get(f"/v1/invoices/{number}", headers=ADMIN)
        owners[number] = doc.json()["tenant"]
    foreign_issued = {n: t for n, t in owners.items() if t != a}
    assert (len(foreign_skipped), len(foreign_issued)) == (0, 0), (
        f"a run by an admin key limited to {a} named {len(foreign_skipped)} other tenants "
        f"(e.g. {foreign_skipped[:5]}) and issued {len(foreign_issued)} invoices of other "
        f"tenants (e.g. {list(foreign_issued.items())[:5]})")
    assert a in answer["skipped"] or a in owners.values(), answer  # its own date is billed


async def test_a_credit_note_on_another_tenants_invoice_is_404_and_issues_nothing(
        platform: RunningApp, unique: str) -> None:
    world = await build_world(platform, unique)
    c = platform.client
    url = f"/v1/invoices/{world.number}"
    before = (await c.get(url, headers=ADMIN)).json()["credit_notes"]
    response = await c.post(f"{url}/credit-notes", json={"amount": "0.01"},
                            headers=world.keys[(Role.ADMIN, SCOPE_B)])
    after = (await c.get(url, headers=ADMIN)).json()["credit_notes"]
    assert (response.status_code, observed(response)[1]) == NOT_FOUND, response.text
    assert after == before


async def test_listings_without_a_tenant_show_a_limited_key_its_tenant_only(
        platform: RunningApp, unique: str) -> None:
    world = await build_world(platform, unique)
    c = platform.client
    month = world.anchor.strftime("%Y-%m")
    wrong: list[str] = []
    for role in (Role.FINANCE, Role.DASHBOARD, Role.ADMIN):
        for scope in (SCOPE_A, SCOPE_B):
            response = await c.get("/v1/invoices", headers=world.keys[(role, scope)])
            assert response.status_code == 200, response.text
            listed = response.json()["data"]
            tenants = {doc["tenant"] for doc in listed}
            numbers = {doc["number"] for doc in listed}
            if scope == SCOPE_A and (tenants != {world.a} or world.number not in numbers):
                wrong.append(f"GET /v1/invoices as {role.value} {scope}: tenants {tenants}")
            if scope == SCOPE_B and (world.a in tenants or world.number in numbers):
                wrong.append(f"GET /v1/invoices as {role.value} {scope} shows A's invoices")
            if role == Role.DASHBOARD:
                continue  # dashboard may not export (the matrix checks its 403)
            export = await c.get("/v1/invoices/export", params={"month": month},
                                 headers=world.keys[(role, scope)])
            assert export.status_code == 200, export.text
            rows = list(csv.DictReader(io.StringIO(export.text)))
            row_tenants = {row["tenant"] for row in rows}
            row_numbers = {row["invoice"] for row in rows}
            if scope == SCOPE_A and (row_tenants != {world.a}
                                     or world.number not in row_numbers):
                wrong.append(f"export as {role.value} {scope}: tenants {row_tenants}")
            if scope == SCOPE_B and (world.a in row_tenants or world.number in row_numbers):
                wrong.append(f"export as {role.value} {scope} shows A's lines")
    assert not wrong, "\n".join(wrong)
