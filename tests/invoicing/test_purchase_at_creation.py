"""A purchase right after its tenant's creation is charged once (R9.1, R9.2, R4.2).

Invoicing issues the tenant's first-period invoice (plan + packs in force at the period's
first instant, in advance) when it consumes `tenant.created`, and each `purchase.confirmed`
becomes an immediate invoice of its own. The purchase may be committed before or after
invoicing has consumed `tenant.created`: whatever the ordering, each charge is on exactly one
invoice.

The manual clock is frozen at 2026-02-28T23:00:00Z, which is local midnight of 2026-03-01 in
Europe/Paris: a Paris tenant is created at the very first instant of its first period, and
buys at that same instant (the case that was charged twice). A UTC tenant is created at 23:00
local on its anchor day 2026-02-28 (a purchase after the period's first instant).

Amounts by hand, demo catalog (deploy/catalog/2026-11.yaml), R4.2 (shared.billing.proration):
charge = price × remaining_days / period_days, rounded once; bought on the anchor day,
remaining_days = period_days (Paris: [03-01, 04-01), 31/31; UTC: [02-28, 03-28), 28/28).
- seats-crm × 2, 10.00 each per P1M: 2 × 10.00 × d/d = 20.00, once per tenant (a `pack` line
  on the first-period invoice or a `proration` line on the purchase's invoice, never both);
  the plan essentials 49.00 is on exactly one invoice.
- upgrade essentials (49.00) → professional (99.00): (99.00 − 49.00) × d/d = 50.00 on the
  purchase's invoice; the first-period invoice charges the plan the tenant was created with,
  essentials 49.00: 99.00 in all for the period.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared.stack import Endpoints
from tests.conftest import ADMIN, RunningApp, create_tenant
from tests.invoicing.inv_support import invoices_of, private_platform

# Local midnight of 2026-03-01 in Europe/Paris (UTC+1 in winter).
CLOCK = datetime(2026, 2, 28, 23, tzinfo=UTC)
OFFSETS_MS = range(0, 2001, 50)  # 0, 50, ..., 2000: 41 offsets
ZONES = ("Europe/Paris", "UTC")
OWNER_ADMIN = {"user_id": "u-admin", "role": "owner"}
SEATS = "seats-crm"
SEATS_AMOUNT = Decimal("20.00")  # 2 × 10.00 × d/d (R4.2)
UPGRADE_AMOUNT = Decimal("50.00")  # (99.00 − 49.00) × d/d (R4.2)
PLAN_PRICES = {"essentials": Decimal("49.00"), "professional": Decimal("99.00")}


async def _create_and_buy(app: RunningApp, tenant: str, zone: str, offset_ms: int,
                          item: str, quantity: int | None) -> dict[str, Any]:
    await create_tenant(app.client, tenant, time_zone=zone)
    await asyncio.sleep(offset_ms / 1000)
    body: dict[str, Any] = {"actor": OWNER_ADMIN, "item": item, "confirm": True}
    if quantity is not None:
        body["quantity"] = quantity
    response = await app.client.post(f"/v1/tenants/{tenant}/purchases", json=body,
                                     headers=ADMIN)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _caught_up(app: RunningApp) -> None:
    """PUT /v1/clock to the instant it already shows: the clock's barriers first wait until
    entitlements' outbox is drained and invoicing has consumed every subscription event."""
    now = (await app.client.get("/v1/clock", headers=ADMIN)).json()["now"]
    moved = await app.client.put("/v1/clock", json={"now": now}, headers=ADMIN)
    assert moved.status_code == 200, moved.text


async def _settled_invoices(app: RunningApp, tenant: str) -> list[dict[str, Any]]:
    """The tenant's invoices once two reads 0.3 s apart agree."""
    before = await invoices_of(app.client, tenant)
    for _ in range(50):
        await asyncio.sleep(0.3)
        after = await invoices_of(app.client, tenant)
        if after and [d["number"] for d in after] == [d["number"] for d in before]:
            return after
        before = after
    raise AssertionError(f"{tenant}: invoices kept changing: {before!r}")


async def _run(app: RunningApp, prefix: str, item: str, quantity: int | None
               ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """Per offset and zone, a tenant that buys `item` that long after its creation; all of
    them at once, so the whole sweep takes about 2 s. Returns (label, answer, invoices)."""
    cases = [(f"+{offset} ms {zone}", f"{prefix}-{zone.replace('/', '')}-{offset:04d}", zone,
              offset) for offset in OFFSETS_MS for zone in ZONES]
    answers = await asyncio.gather(*(_create_and_buy(app, tenant, zone, offset, item,
                                                     quantity)
                                     for _, tenant, zone, offset in cases))
    await _caught_up(app)
    found = await asyncio.gather(*(_settled_invoices(app, t) for _, t, _, _ in cases))
    return [(f"{label} {tenant}", answer, invoices) for (label, tenant, _, _), answer, invoices
            in zip(cases, answers, found, strict=True)]


def _lines(invoices: list[dict[str, Any]]) -> list[tuple[str, str, str | None, Decimal]]:
    """(invoice number, line kind, item, amount) of every line of the tenant."""
    return [(doc["number"], line["kind"], (line.get("source") or {}).get("item"),
             Decimal(line["amount"])) for doc in invoices for line in doc["lines"]]


async def test_a_pack_bought_at_every_offset_after_creation_is_charged_once(
        endpoints: Endpoints, unique: str) -> None:
    problems: list[str] = []
    async with private_platform(endpoints, unique, CLOCK) as app:
        results = await _run(app, f"pack-{unique}", SEATS, 2)
    for label, answer, invoices in results:
        charged = [Decimal(c["amount"]) for c in answer["charges"]]
        found = _lines(invoices)
        plans = [(n, item, amount) for n, kind, item, amount in found if kind == "plan"]
        seats = [(n, kind, amount) for n, kind, item, amount in found if item == SEATS]
        total = sum((amount for _, _, amount in seats), Decimal(0))
        if charged != [SEATS_AMOUNT]:
            problems.append(f"{label}: the purchase charged {charged}")
        if [(item, amount) for _, item, amount in plans] != [("essentials",
                                                              PLAN_PRICES["essentials"])]:
            problems.append(f"{label}: plan lines {plans}")
        if len(seats) != 1 or total != SEATS_AMOUNT:
            problems.append(f"{label}: seats on {seats} (total {total}, expected "
                            f"{SEATS_AMOUNT} once)")
    assert not problems, f"{len(problems)} of {len(results)} tenants:\n" + "\n".join(problems)


async def test_an_upgrade_at_every_offset_after_creation_is_charged_once(
        endpoints: Endpoints, unique: str) -> None:
    problems: list[str] = []
    async with private_platform(endpoints, unique, CLOCK) as app:
        results = await _run(app, f"upgrade-{unique}", "professional", None)
    for label, answer, invoices in results:
        charged = [Decimal(c["amount"]) for c in answer["charges"]]
        found = _lines(invoices)
        plans = [(n, item, amount) for n, kind, item, amount in found if kind == "plan"]
        upgrades = [(n, amount) for n, kind, item, amount in found
                    if kind == "proration" and item == "professional"]
        total = sum((a for _, _, a in plans), Decimal(0)) + sum((a for _, a in upgrades),
                                                                Decimal(0))
        if charged != [UPGRADE_AMOUNT]:
            problems.append(f"{label}: the upgrade charged {charged}")
        if [(item, amount) for _, item, amount in plans] != [("essentials",
                                                              PLAN_PRICES["essentials"])]:
            problems.append(f"{label}: plan lines {plans}")
        if [a for _, a in upgrades] != [UPGRADE_AMOUNT]:
            problems.append(f"{label}: upgrade lines {upgrades}")
        if total != PLAN_PRICES["professional"]:
            problems.append(f"{label}: the period's plan charged {total}, expected "
                            f"{PLAN_PRICES['professional']}")
    assert not problems, f"{len(problems)} of {len(results)} tenants:\n" + "\n".join(problems)
