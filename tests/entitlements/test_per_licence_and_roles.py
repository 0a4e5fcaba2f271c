"""Packs priced per licence (R4.12) and the `sub_account` role (R5.1).

Per licence: a lot costs price × licences, the licences being the distinct users holding
access to at least one module of the plan at that instant, the administrator included;
counted from metering's live counters when bought (prorated, R4.2) and from the access
history at each renewal (in advance). Demo catalog (deploy/catalog/2026-11.yaml): ai-reports
3.00 per licence per cycle (single-instance feature pack, no module); essentials 49.00
(sales, crm, emailing) with extra users at 15.00 on sales and crm; VAT 20 %.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.invoicing.licences import licence_line
from shared.billing.periods import Period
from shared.billing.seats import access_intervals, holders_at, licence_holders
from shared.catalog import Catalog, CatalogError, parse_catalog
from shared.stack import Endpoints
from shared.subscription import Lot, TenantState
from tests.conftest import ADMIN, create_tenant, set_clock
from tests.entitlements.ent_support import history, isolated_app, purchase, tenant_doc
from tests.invoicing.inv_support import (
    access,
    buy,
    invoices_of,
    lines,
    private_platform,
    send,
    summary,
)

START = datetime(2026, 2, 28, 12, tzinfo=UTC)
Json = dict[str, Any]
GRANTED, REVOKED = "user.access.granted", "user.access.revoked"


def _at(day: int) -> datetime:
    return datetime(2026, 3, day, 10, tzinfo=UTC)


# The access of the worked example (module, user, time, kind): on 03-05, the administrator and
# u-1..u-4 on crm, u-3 (again), u-5 and u-6 on sales, u-9 on accounting (not in essentials);
# on 03-20, u-7, u-8 and u-10 on crm, u-11 on sales; on 03-25, u-6 and u-10 lose it.
ROWS = [("crm", u, _at(5), GRANTED) for u in ("u-admin", "u-1", "u-2", "u-3", "u-4")] + \
    [("sales", u, _at(5), GRANTED) for u in ("u-3", "u-5", "u-6")] + \
    [("accounting", "u-9", _at(5), GRANTED)] + \
    [("crm", u, _at(20), GRANTED) for u in ("u-7", "u-8", "u-10")] + \
    [("sales", "u-11", _at(20), GRANTED), ("sales", "u-6", _at(25), REVOKED),
     ("crm", "u-10", _at(25), REVOKED)]
ESSENTIALS = ("sales", "crm", "emailing")


def _licences(day: int) -> set[str]:
    rows = [row for row in ROWS if row[2] < datetime(2026, 3, day, tzinfo=UTC)]
    return licence_holders(holders_at(access_intervals(rows), datetime(2026, 3, day,
                                                                       tzinfo=UTC)),
                           ESSENTIALS, "u-admin")


@pytest.mark.unit
def test_licences_are_distinct_users_of_the_plan_modules_with_the_administrator() -> None:
    """On 03-12: u-admin, u-1..u-6 = 7 (u-3 counted once, u-9's accounting is not in
    essentials). On 03-31: u-6 gone, u-7, u-8, u-11 come, u-10 came and went = 9."""
    assert _licences(12) == {"u-admin", "u-1", "u-2", "u-3", "u-4", "u-5", "u-6"}
    assert len(_licences(31)) == 9
    assert "u-10" not in _licences(31)
    assert licence_holders({}, ESSENTIALS, "u-admin") == {"u-admin"}  # never granted


@pytest.mark.unit
def test_renewal_line_counts_the_licences_at_the_period_start() -> None:
    """P30D from 03-01: the second period is [03-31, 04-30); 9 licences × 3.00 = 27.00."""
    catalog = Catalog.model_validate({
        "version": "t", "currency": "EUR",
        "modules": [{"id": m, "extra_users": "deny"}
                    for m in ("sales", "crm", "emailing", "accounting")],
        "plans": [{"id": "essentials", "rank": 1, "modules": list(ESSENTIALS),
                   "price": {"P30D": "49.00"}, "companies": 1, "contacts": 10}],
        "packs": [{"id": "ai-reports", "kind": "feature", "feature": "ai_reports",
                   "price": {"P30D": "3.00"}, "single_instance": True, "per": "licence"}]})
    state = TenantState(id="t", plan="essentials", cycle="P30D", anchor=date(2026, 3, 1),
                        time_zone="UTC", currency="EUR", vat_rate=Decimal("0.20"),
                        admin_user="u-admin", created_at=START)
    lot = Lot(id="l", item="ai-reports", kind="feature", quantity=1, units=1, state="active",
              bought_at=_at(12), unit_price=Decimal("3.00"), licences=7)
    line = licence_line(state, catalog, Period(date(2026, 3, 31), date(2026, 4, 30)), lot,
                        catalog.pack("ai-reports"), Decimal("3.00"), access_intervals(ROWS))
    assert (line.kind, line.quantity, line.amount) == ("pack", Decimal(9), Decimal("27.00"))
    assert line.source["licences"] == 9


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["one_time", "support"])
def test_only_recurring_packs_are_priced_per_licence(kind: str) -> None:
    pack: Json = {"id": "x", "kind": kind, "per": "licence", "price": {"once": "1.00"}}
    if kind == "support":
        pack |= {"module": "crm", "price": {"P1Y": "1.00"},
                 "support": {"type": "bank", "hours_per_year": "1"}}
    with pytest.raises(CatalogError) as refused:
        parse_catalog({"version": "t", "currency": "EUR",
                       "modules": [{"id": "crm", "extra_users": "deny"}],
                       "plans": [{"id": "p", "rank": 1, "modules": ["crm"],
                                  "price": {"P1M": "1.00"}, "companies": 0, "contacts": 0}],
                       "packs": [pack]})
    assert "packs.0.per" in [field for field, _ in refused.value.problems]


async def test_a_pack_priced_per_licence_bought_and_renewed(endpoints: Endpoints,
                                                            unique: str) -> None:
    """A P30D tenant anchored 2026-03-01 in UTC: the first period is [03-01, 03-31), 30 days.

    Bought on day 12 (2026-03-12T09:00Z) with 7 licences (the access of `ROWS` so far:
    u-admin, u-1..u-6): 19 days left (12 included, 31 excluded), 3.00 × 7 × 19/30 = 13.30
    exactly, on its own immediate invoice (tax 2.66, total 15.96); next cycle 3.00 × 7 =
    21.00. The lot says the 7 licences; a quantity is refused, the licences are counted.

    Renewed on 03-31 (period [03-31, 04-30)) with the 9 licences then (u-6 revoked, u-7,
    u-8, u-11 granted, u-10 granted and revoked before): 9 × 3.00 = 27.00. The same invoice
    carries the plan, 49.00, and the extra users of March in arrears (R6.4, no seats):
    crm u-1..u-4, u-7, u-8, u-10 = 7 × 15.00 = 105.00; sales u-3, u-5, u-6, u-11 = 4 × 15.00 =
    60.00. Subtotal 241.00, tax 48.20, total 289.20.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"lic-{unique}"
        await create_tenant(c, tenant, cycle="P30D", time_zone="UTC", anchor="2026-03-01")

        def events(until: int, after: int = 0) -> list[Json]:
            return [access(tenant, user, module, time.isoformat(), f"{tenant}-{i}",
                           revoked=kind == REVOKED)
                    for i, (module, user, time, kind) in enumerate(ROWS)
                    if after <= time.day < until]

        await set_clock(c, "2026-03-05T12:00:00Z")
        await send(c, events(6))
        await set_clock(c, "2026-03-12T09:00:00Z")  # metering has caught up with them
        r = await purchase(c, tenant, "ai-reports", quantity=2)
        assert (r.status_code, r.json()["error"]["field"]) == (422, "quantity"), r.text
        r = await purchase(c, tenant, "ai-reports", confirm=False)
        assert r.status_code == 200, r.text
        assert [(ch["quantity"], ch["amount"]) for ch in r.json()["charges"]] == [(7, "13.30")]
        body = await buy(c, tenant, "ai-reports")
        assert [(ch["quantity"], ch["unit_price"], ch["amount"], ch["period"])
                for ch in body["charges"]] == [
            (7, "3.00", "13.30", {"from": "2026-03-12", "to": "2026-03-31"})]
        assert (body["lot"]["quantity"], body["lot"]["licences"]) == (1, 7)
        assert body["next_cycle_amount"] == "21.00"
        lots = (await tenant_doc(c, tenant))["lots"]
        assert [(lot["item"], lot["next_cycle_amount"]) for lot in lots] == [
            ("ai-reports", "21.00")]

        await set_clock(c, "2026-03-20T12:00:00Z")
        await send(c, events(21, after=20))
        await set_clock(c, "2026-03-25T12:00:00Z")
        await send(c, events(26, after=25))
        await set_clock(c, "2026-03-31T12:00:00Z")
        found = await invoices_of(c, tenant)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-03-01..2026-03-31", "58.80"), ("immediate", None, "15.96"),
            ("period", "2026-03-31..2026-04-30", "289.20")]
        assert lines(found[1]) == [(None, "proration", "7", "13.30")]
        assert lines(found[2]) == [
            (None, "plan", "1", "49.00"), (None, "pack", "9", "27.00"),
            ("crm", "extra_users", "7", "105.00"), ("sales", "extra_users", "4", "60.00")]
        assert found[2]["lines"][1]["source"]["licences"] == 9


ACTIONS = ["buy", "quote", "trial", "request_feature", "renew"]
TEXT = {"buy": "buy now", "quote": "request a quote", "trial": "start a free trial",
        "request_feature": "request a feature", "renew": "renew a support plan"}


async def test_a_sub_account_takes_no_purchase_action(endpoints: Endpoints) -> None:
    """R5.1: a user of a secondary or multi-user account (role `sub_account`) may buy,
    ask for a quote, start a trial, ask for a feature or renew nothing, even where an admin
    or a supervisor may (a trial, a feature request): each is 403 `role_forbidden` on
    `actor.role`, naming the role, the action and R5.1, and nothing is recorded. Several
    items at once are refused alike; the owner still buys."""
    async with isolated_app(endpoints, START) as app:
        c, tenant = app.client, "sub-account"
        await create_tenant(c, tenant, time_zone="UTC", anchor="2026-03-01",
                            account_allows_quotes=True)
        await set_clock(c, "2026-03-20T10:00:00Z")
        past = await history(c, tenant)
        sub = {"user_id": "u-sub", "role": "sub_account"}
        for action in ACTIONS:
            r = await purchase(c, tenant, "analytics", actor=sub, action=action)
            assert r.status_code == 403, (action, r.text)
            error = r.json()["error"]
            assert (error["code"], error["field"]) == ("role_forbidden", "actor.role")
            assert "'sub_account'" in error["message"]
            assert "R5.1" in error["message"]
            assert TEXT[action] in error["message"], action
        r = await c.post(f"/v1/tenants/{tenant}/purchases", headers=ADMIN, json={
            "actor": sub, "items": [{"item": "analytics"}], "confirm": True})
        assert r.status_code == 403, r.text
        assert await history(c, tenant) == past
        assert (await purchase(c, tenant, "analytics")).status_code == 201
