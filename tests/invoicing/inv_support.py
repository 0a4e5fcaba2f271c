"""Helpers shared by the invoicing tests (not a conftest: fixtures come from tests/).

`private_platform` starts the three parts on a Redis database, usage topic, consumer groups
and invoice database of their own, so a test can move its manual clock a year ahead and
count invoice numbers from 000001 without touching the session's shared platform.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from shared.app import ServicePart
from shared.stack import Endpoints
from tests.conftest import (
    ADMIN,
    OWNER,
    RunningApp,
    eventually,
    flush_database,
    redis_db_url,
    serving,
    settings_for,
)

PRIVATE_DB = 3


@asynccontextmanager
async def private_platform(endpoints: Endpoints, unique: str, clock_start: datetime,
                           db: int = PRIVATE_DB, flush: bool = True,
                           more_parts: Sequence[Callable[[dict[str, Any]], ServicePart]] = (),
                           **extra: Any
                           ) -> AsyncIterator[RunningApp]:
    url = redis_db_url(endpoints, db)
    if flush:
        await flush_database(url)
    values = settings_for(
        endpoints, redis_url=url, clock_start=clock_start,
        usage_events_topic=f"usage-inv-{unique}", consumer_group=f"metering-inv-{unique}",
        subscription_events_topic=f"subscriptions-inv-{unique}",
        invoicing_consumer_group=f"invoicing-{unique}",
        invoicing_clickhouse_database=f"inv_{unique}", **extra)
    metering_keys = {"batch_max_wait_ms", "retry_initial_s", "retry_max_s", "consumer_group"}
    inv_values = {k: v for k, v in values.items() if k not in metering_keys}
    # Entitlements prices migration previews on invoicing's invoices (R10.5): it reads them.
    ent_values = {k: v for k, v in inv_values.items() if not k.startswith("invoicing_")
                  or k == "invoicing_clickhouse_database"}
    parts: list[ServicePart] = [MeteringPart(values), EntitlementsPart(ent_values),
                                InvoicingPart(inv_values)]
    parts += [part(inv_values) for part in more_parts]  # e.g. the console, after the three
    async with serving(values, parts) as running:
        yield running


def invoicing_part(app: RunningApp) -> InvoicingPart:
    part = app.parts[2]
    assert isinstance(part, InvoicingPart)
    return part


async def buy(client: httpx.AsyncClient, tenant: str, item: str, quantity: int | None = None
              ) -> dict[str, Any]:
    body: dict[str, Any] = {"actor": OWNER, "item": item, "confirm": True}
    if quantity is not None:
        body["quantity"] = quantity
    response = await client.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
    assert response.status_code in (201, 202), response.text
    result: dict[str, Any] = response.json()
    return result


async def invoices_of(client: httpx.AsyncClient, tenant: str) -> list[dict[str, Any]]:
    """The tenant's invoices, oldest first."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"tenant": tenant} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/invoices", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return sorted(found, key=lambda d: (d["issued_at"], d["number"]))


async def invoice_document(client: httpx.AsyncClient, number: str) -> dict[str, Any]:
    """`GET /v1/invoices/{number}` as JSON: an invoice or a credit note."""
    response = await client.get(f"/v1/invoices/{number}", headers=ADMIN)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def documents_once_there(client: httpx.AsyncClient, tenant: str, count: int
                               ) -> list[dict[str, Any]]:
    """The tenant's documents, oldest first, once there are `count` of them."""
    async def enough() -> list[dict[str, Any]] | None:
        documents = await invoices_of(client, tenant)
        return documents if len(documents) >= count else None

    found: list[dict[str, Any]] = await eventually(enough, within=30)
    return found


def summary(invoice: dict[str, Any]) -> tuple[str, str | None, str]:
    period = invoice["period"]
    return (invoice["kind"], None if period is None else f"{period['from']}..{period['to']}",
            invoice["total"])


def lines(invoice: dict[str, Any]) -> list[tuple[str | None, str, str, str]]:
    return [(line["module"], line["kind"], line["quantity"], line["amount"])
            for line in invoice["lines"]]


def money(text: str) -> Decimal:
    return Decimal(text)


def access(tenant: str, user: str, module: str, time: str, event_id: str,
           revoked: bool = False) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "tests",
            "type": "user.access.revoked" if revoked else "user.access.granted",
            "subject": tenant, "time": time, "data": {"user_id": user, "module": module}}


def emails(tenant: str, count: int, time: str, event_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "tests", "type": "email.sent",
            "subject": tenant, "time": time, "data": {"count": count}}


async def send(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events", json=events, headers=ADMIN)
    assert response.status_code == 202, response.text


def late_purchase_event(tenant: str, event_id: str) -> dict[str, Any]:
    """A `purchase.confirmed` as entitlements writes it, dated 2026-03-20T09:00:00Z: seats-crm
    × 1 for 12 of 31 days, 10.00 × 12/31 = 3.87, for a test to produce itself (an event read
    late, after a billing run)."""
    charge = {"kind": "proration", "item": "seats-crm", "quantity": 1, "unit_price": "10.00",
              "amount": "3.87", "description": "1 × seats-crm, 12 of 31 days",
              "period": {"from": "2026-03-20", "to": "2026-04-01"}}
    return {"specversion": "1.0", "id": event_id, "source": "entitlements",
            "type": "purchase.confirmed", "subject": tenant, "time": "2026-03-20T09:00:00Z",
            "datacontenttype": "application/json",
            "data": {"tenant": tenant, "actor": OWNER, "item": "seats-crm", "kind": "seats",
                     "quantity": 1, "lot": f"lot-{event_id}", "currency": "EUR",
                     "charges": [charge], "next_cycle_amount": "10.00",
                     "period": {"from": "2026-03-01", "to": "2026-04-01"}}}
