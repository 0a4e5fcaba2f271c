"""Every route: 401 without a valid key, 403 for a role the contract does not admit, 404 for a
tenant-limited key on another tenant, all in docs/api.md's error shape. The role table below is
docs/api.md's ("What each role may call"); a route missing from it fails the suite."""

from __future__ import annotations

import re

import pytest

from shared.auth import Role
from tests.conftest import RunningApp, create_tenant

ING, DSH, FIN, ADM = Role.INGEST, Role.DASHBOARD, Role.FINANCE, Role.ADMIN

ALLOWED: dict[tuple[str, str], set[Role]] = {
    ("POST", "/v1/api-keys"): {ADM},
    ("GET", "/v1/api-keys"): {ADM},
    ("DELETE", "/v1/api-keys/{key_id}"): {ADM},
    ("GET", "/v1/clock"): {ADM},
    ("PUT", "/v1/clock"): {ADM},
    ("POST", "/v1/events"): {ING, ADM},
    ("GET", "/v1/usage"): {DSH, ADM},
    ("GET", "/v1/usage/events"): {DSH, ADM},
    ("GET", "/v1/meters"): {DSH, ADM},
    ("GET", "/v1/catalog"): {ING, DSH, ADM},
    ("GET", "/v1/catalog/versions"): {ING, DSH, ADM},
    ("POST", "/v1/tenants/{tenant}/migrations"): {ING, ADM},
    ("POST", "/v1/tenants"): {ADM},
    ("GET", "/v1/tenants/{tenant}"): {ING, DSH, ADM},
    ("PATCH", "/v1/tenants/{tenant}"): {ING, ADM},
    ("POST", "/v1/tenants/{tenant}/purchases"): {ING, ADM},
    ("POST", "/v1/tenants/{tenant}/lots/{lot}/cancel"): {ING, ADM},
    ("POST", "/v1/tenants/{tenant}/lots/{lot}/uncancel"): {ING, ADM},
    ("GET", "/v1/tenants/{tenant}/history"): {DSH, ADM},
    ("GET", "/v1/tenants/{tenant}/check"): {ING, ADM},
    ("POST", "/v1/check"): {ING, ADM},
    ("POST", "/v1/billing-runs"): {ADM},
    ("GET", "/v1/invoices"): {FIN, DSH, ADM},
    ("GET", "/v1/invoices/export"): {FIN, ADM},
    ("GET", "/v1/invoices/{number}"): {FIN, DSH, ADM},
    ("POST", "/v1/invoices/{number}/credit-notes"): {ADM},
    ("GET", "/v1/tenants/{tenant}/upcoming-invoice"): {FIN, ADM},
    ("POST", "/v1/webhooks"): {ADM},
    ("GET", "/v1/webhooks"): {ADM},
    ("DELETE", "/v1/webhooks/{webhook_id}"): {ADM},
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {ADM},
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): {ADM},
}

# Well-formed bodies, so that the tenant scope is what answers, not the body's validation.
BODIES: dict[tuple[str, str], object] = {
    ("PATCH", "/v1/tenants/{tenant}"): {"renewal": False},
    ("POST", "/v1/tenants/{tenant}/purchases"): {
        "actor": {"user_id": "u-1", "role": "owner"}, "item": "seats-crm", "quantity": 1,
        "confirm": False},
    ("POST", "/v1/tenants/{tenant}/migrations"): {"version": "2026-11", "confirm": False},
}

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
          "/redoc"}


def _routes(platform: RunningApp) -> list[tuple[str, str]]:
    """Every route of the published OpenAPI document, the contract callers see."""
    paths = platform.app.openapi()["paths"]
    found = [(method.upper(), path) for path, operations in paths.items() if path not in PUBLIC
             for method in operations]
    assert found
    return found


def _url(path: str, tenant: str) -> str:
    url = re.sub(r"\{tenant\}", tenant, path)
    url = re.sub(r"\{[a-z_]+\}", "x-1", url)
    return f"{url}?tenant={tenant}&meter=emails_sent&from=2026-01-01T00:00:00Z" \
           "&to=2026-02-01T00:00:00Z"


def _assert_error_shape(body: dict[str, object], code: str) -> None:
    assert set(body) >= {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]


async def test_every_route_is_in_the_role_table(platform: RunningApp) -> None:
    missing = [r for r in _routes(platform) if r not in ALLOWED]
    assert not missing, f"routes with no declared roles: {missing}"


@pytest.mark.parametrize("header", [None, "Bearer not-a-key", "Basic abc", "Bearer "])
async def test_a_missing_or_wrong_key_gets_401_everywhere(platform: RunningApp,
                                                          header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in _routes(platform):
        response = await platform.client.request(method, _url(path, "acme"), headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        _assert_error_shape(response.json(), "unauthorized")


async def _key(platform: RunningApp, role: Role, tenant: str | None = None) -> str:
    response = await platform.client.post("/v1/api-keys", json={"role": role, "tenant": tenant},
                                          headers=platform.as_admin())
    assert response.status_code == 201
    secret: str = response.json()["key"]
    return secret


async def test_a_role_the_contract_does_not_admit_gets_403(platform: RunningApp) -> None:
    keys = {role: await _key(platform, role) for role in Role}
    checked = 0
    for method, path in _routes(platform):
        for role in set(Role) - ALLOWED[(method, path)]:
            response = await platform.client.request(
                method, _url(path, "acme"), headers={"Authorization": f"Bearer {keys[role]}"})
            assert response.status_code == 403, (method, path, role, response.text)
            _assert_error_shape(response.json(), "forbidden")
            assert role.value in response.json()["error"]["message"]
            checked += 1
    assert checked > 0


async def test_a_tenant_limited_key_sees_other_tenants_as_missing(platform: RunningApp,
                                                                  unique: str) -> None:
    scoped = [(m, p) for m, p in _routes(platform)
              if "{tenant}" in p or p in ("/v1/usage", "/v1/usage/events")]
    assert scoped
    mine = (await create_tenant(platform.client, f"mine-{unique}"))["id"]
    for method, path in scoped:
        role = next(r for r in (ING, DSH, FIN) if r in ALLOWED[(method, path)])
        key = await _key(platform, role, tenant=mine)
        response = await platform.client.request(
            method, _url(path, f"theirs-{unique}"), headers={"Authorization": f"Bearer {key}"},
            json=BODIES.get((method, path)))
        assert response.status_code == 404, (method, path, response.text)
        _assert_error_shape(response.json(), "not_found")


async def test_a_revoked_key_is_refused_at_once(platform: RunningApp) -> None:
    minted = await platform.client.post("/v1/api-keys", json={"role": "dashboard"},
                                        headers=platform.as_admin())
    key_id, secret = minted.json()["id"], minted.json()["key"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await platform.client.get("/v1/meters", headers=headers)).status_code == 200
    listed = (await platform.client.get("/v1/api-keys", headers=platform.as_admin())).json()
    assert key_id in {k["id"] for k in listed["data"]}
    assert all("key" not in k for k in listed["data"])  # the secret is shown once only
    revoked = await platform.client.delete(f"/v1/api-keys/{key_id}", headers=platform.as_admin())
    assert revoked.status_code == 204
    assert (await platform.client.get("/v1/meters", headers=headers)).status_code == 401
    again = await platform.client.delete(f"/v1/api-keys/{key_id}", headers=platform.as_admin())
    assert again.status_code == 404
