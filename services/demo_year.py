"""A year of three tenants on the manual clock: the scenario `make run` plays when
started with `CLOCK=manual CLOCK_START=2027-01-01T00:00:00Z`, and that
tests/invoicing/test_invoicing_year.py checks against the hand-computed table of
docs/invoicing.md ("A simulated year").

- alpine: essentials, monthly, from 1 January; nothing else.
- baltic: professional, yearly, from 1 January; 2 CRM seats bought on the first day.
- coral: essentials, monthly, from 15 January; one 1,000 e-mail pack bought on the first
  day; sends 1,500 e-mails in each of its first eleven periods.
- dolomite (not in the table): professional, yearly, with a VIP support plan bought on the
  first day, whose renewal notices fall 30 and 7 days before it expires (R8.6).
"""

from __future__ import annotations

from typing import Any

import httpx

YEAR = 2027
OWNER = {"user_id": "u-1", "role": "owner"}
TENANTS = ("alpine", "baltic", "coral")
NOTICES_TENANT = "dolomite"


def _tenant(tenant: str, plan: str, cycle: str, anchor: str) -> dict[str, Any]:
    return {"id": tenant, "plan": plan, "cycle": cycle, "anchor": anchor,
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-1"}


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
    await _ok(await client.post("/v1/events", json=[_emails(coral, m) for m in range(1, 12)],
                                headers={"Content-Type": "application/cloudevents-batch+json"}))
    await _ok(await client.put("/v1/clock", json={"now": f"{YEAR}-01-15T12:00:00Z"}))
    await _buy(client, coral, "emails-1000", 1)
    # Up to the last day of the year, before the 1 January billing dates of the next one.
    await _ok(await client.put("/v1/clock", json={"now": f"{YEAR}-12-31T12:00:00Z"}))
    return [alpine, baltic, coral]


async def renewal_notices(client: httpx.AsyncClient, prefix: str = "") -> list[str]:
    """The instants of the VIP plan's renewal notices in dolomite's history."""
    history = (await client.get(f"/v1/tenants/{prefix}{NOTICES_TENANT}/history",
                                params={"limit": 200})).json()
    return [entry["at"] for entry in history.get("data", [])
            if entry.get("type") == "support.renewal_due"]
