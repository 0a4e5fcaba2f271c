"""A year of three tenants on the manual clock: the scenario `make run` plays when
started with `CLOCK=manual CLOCK_START=2027-01-01T00:00:00Z`, and that
tests/invoicing/test_invoicing_year.py checks against the hand-computed table of
docs/invoicing.md ("A simulated year").

- alpine: essentials, monthly, from 1 January; nothing else.
- baltic: professional, yearly, from 1 January; 2 CRM seats bought on the first day.
- coral: essentials, monthly, from 15 January; one 1,000 e-mail pack bought on the first
  day; sends 1,500 e-mails in each of its first eleven periods.
- dolomite (not in the table): professional, yearly, with a VIP support plan bought on the
  first day, whose renewal notices fall 30 and 7 days before it expires, and an OrangeCare
  plan whose automatic renewal, invoiced on 1 December, is declined on 31 December and
  credited in full (R8.6).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

YEAR = 2027
OWNER = {"user_id": "u-1", "role": "owner"}
TENANTS = ("alpine", "baltic", "coral")
NOTICES_TENANT = "dolomite"
# The catalog version the demo's customers signed under; `make run` serves 2027-01 too.
SIGNED_VERSION = "2026-11"


def _tenant(tenant: str, plan: str, cycle: str, anchor: str) -> dict[str, Any]:
    # Customers of the 2026 price list (R10.5), whatever version is current.
    return {"id": tenant, "plan": plan, "cycle": cycle, "anchor": anchor,
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-1", "catalog_version": SIGNED_VERSION}


def _emails(tenant: str, month: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"{tenant}-{YEAR}-{month:02d}", "source": "demo-year",
            "type": "email.sent", "subject": tenant,
            "time": f"{YEAR}-{month:02d}-20T12:00:00Z", "data": {"count": 1500}}


async def _ok(response: httpx.Response) -> None:
    if response.status_code >= 400 and response.status_code != 409:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")


async def _buy(client: httpx.AsyncClient, tenant: str, item: str, quantity: int) -> None:
    await _ok(await client.post(
        f"/v1/tenants/{tenant}/purchases",
        json={"actor": OWNER, "item": item, "quantity": quantity, "confirm": True},
        headers={"Idempotency-Key": f"demo-year-{tenant}-{item}"}))


async def play(client: httpx.AsyncClient, prefix: str = "") -> list[str]:
    """Play the year through the public API on a manual clock at 1 January 00:00 UTC; the
    client carries an admin key. Returns the tenant ids (prefixed, so tests can isolate)."""
    alpine, baltic, coral = (f"{prefix}{t}" for t in TENANTS)
    await _ok(await client.post("/v1/tenants", json=_tenant(alpine, "essentials", "P1M",
                                                            f"{YEAR}-01-01")))
    await _ok(await client.post("/v1/tenants", json=_tenant(baltic, "professional", "P1Y",
                                                            f"{YEAR}-01-01")))
    await _ok(await client.post("/v1/tenants", json=_tenant(coral, "essentials", "P1M",
                                                            f"{YEAR}-01-15")))
    await _buy(client, baltic, "seats-crm", 2)
    dolomite = f"{prefix}{NOTICES_TENANT}"
    await _ok(await client.post("/v1/tenants", json=_tenant(dolomite, "professional", "P1Y",
                                                            f"{YEAR}-01-01")))
    await _buy(client, dolomite, "vip", 1)
    await _buy(client, dolomite, "orangecare", 1)
    await _ok(await client.post("/v1/events", json=[_emails(coral, m) for m in range(1, 12)],
                                headers={"Content-Type": "application/cloudevents-batch+json"}))
    await _ok(await client.put("/v1/clock", json={"now": f"{YEAR}-01-15T12:00:00Z"}))
    await _buy(client, coral, "emails-1000", 1)
    # Up to the last day of the year, before the 1 January billing dates of the next one.
    await _ok(await client.put("/v1/clock", json={"now": f"{YEAR}-12-31T12:00:00Z"}))
    await _decline_renewal(client, dolomite, "orangecare")
    return [alpine, baltic, coral]


async def _decline_renewal(client: httpx.AsyncClient, tenant: str, item: str) -> None:
    """Cancel the support lot of `item`: its renewal, already invoiced, is declined."""
    lots = (await client.get(f"/v1/tenants/{tenant}")).json()["lots"]
    lot = next(x["id"] for x in lots if x["item"] == item)
    await _ok(await client.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel",
                                json={"actor": OWNER}))


async def renewal_notices(client: httpx.AsyncClient, prefix: str = "") -> list[str]:
    """The instants of the VIP plan's renewal notices in dolomite's history."""
    history = (await client.get(f"/v1/tenants/{prefix}{NOTICES_TENANT}/history",
                                params={"limit": 200})).json()
    return [entry["at"] for entry in history.get("data", [])
            if entry.get("type") == "support.renewal_due"]


async def declined_credit_notes(client: httpx.AsyncClient, prefix: str = "") -> list[str]:
    """dolomite's credit notes: the one crediting its declined OrangeCare renewal, issued by
    invoicing once it has read the decline (a moment after the clock move)."""
    for _ in range(50):
        notes = (await client.get("/v1/invoices", params={
            "tenant": f"{prefix}{NOTICES_TENANT}", "kind": "credit_note"})).json()["data"]
        if notes:
            return [f"{n['number']} ({n['total']} on {n['credits']})" for n in notes]
        await asyncio.sleep(0.1)
    return []
