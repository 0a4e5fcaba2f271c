"""The check fast path (services/entitlements/fastpath.py) and the documented FastAPI route
give the same answer, status and error shape, for every kind of check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.entitlements.part import EntitlementsPart
from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, RunningApp, serving, settings_for


@pytest.fixture(scope="module")
async def routed_only(endpoints: Endpoints) -> AsyncIterator[RunningApp]:
    """The same service on the same stores, without the fast path: FastAPI's route answers."""
    part = EntitlementsPart(settings_for(endpoints, entitlements_invoice_wait_s=0))
    part.fast_paths = ()
    async with serving(settings_for(endpoints), [part]) as running:
        yield running


async def test_fast_path_and_route_agree(platform: RunningApp, routed_only: RunningApp,
                                         unique: str) -> None:
    tenant = f"fast-{unique}"
    created = await platform.client.post("/v1/tenants", headers=ADMIN, json={
        "id": tenant, "plan": "essentials", "cycle": "P1M", "time_zone": "Europe/Paris",
        "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-admin"})
    assert created.status_code == 201, created.text
    bought = await platform.client.post(f"/v1/tenants/{tenant}/purchases", headers=ADMIN, json={
        "actor": OWNER, "item": "seats-crm", "quantity": 1, "confirm": True})
    assert bought.status_code in (200, 201), bought.text
    minted = await platform.client.post("/v1/api-keys", headers=ADMIN,
                                        json={"role": "dashboard"})
    dashboard = {"Authorization": f"Bearer {minted.json()['key']}"}

    cases = [
        ("module=crm", ADMIN), ("module=crm&user=u-admin", ADMIN),
        ("module=crm&user=u-7", ADMIN), ("module=accounting", ADMIN),
        ("feature=emails&quantity=10", ADMIN), ("feature=companies", ADMIN),
        ("feature=ai_assist", ADMIN), ("feature=emails&quantity=x", ADMIN),
        ("feature=support", ADMIN), ("feature=support&level=3", ADMIN),
        ("feature=support&level=7", ADMIN),
        ("", ADMIN), ("module=nope", ADMIN), ("module=crm", dashboard), ("module=crm", {}),
    ]
    for query, headers in cases:
        fast = await platform.client.get(f"/v1/tenants/{tenant}/check?{query}",
                                         headers=headers)
        routed = await routed_only.client.get(f"/v1/tenants/{tenant}/check?{query}",
                                              headers=headers)
        assert (fast.status_code, fast.json()) == (routed.status_code, routed.json()), query
    missing = f"/v1/tenants/no-such-{unique}/check?module=crm"
    fast = await platform.client.get(missing, headers=ADMIN)
    routed = await routed_only.client.get(missing, headers=ADMIN)
    assert fast.status_code == routed.status_code == 404
    assert fast.json() == routed.json()
