"""What a tenant's lots grant (shared/coverage.py), the rules checks and invoicing share:
seats per module (R6.2), the e-mail allowance (R7.1), support contracts and their overage
rate (R8.2–R8.4). Catalog and lots are built in memory; expected values worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.support import Bank, Daily
from shared.catalog import Catalog
from shared.coverage import (
    SupportContracts,
    email_allowance,
    granted,
    support_contracts,
)
from shared.subscription import Lot, TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

P1M = {"P1M": "10.00"}
P1Y = {"P1Y": "500.00"}


def _support(**terms: Any) -> dict[str, Any]:
    return {"type": "bank", "overage_price_per_hour": "90.00", **terms}


def _catalog(support_price: str | None = "120.00") -> Catalog:
    """Two suites share crm: business (sales, crm) and front (crm, desk)."""
    return Catalog.model_validate({
        "version": "t", "currency": "EUR",
        "modules": [{"id": m, "extra_users": "bill", "extra_user_price": {"P1M": "15.00"}}
                    for m in ("sales", "crm", "desk")]
        + [{"id": "emailing", "extra_users": "deny"},
           {"id": "support", "extra_users": "deny", "support_price_per_hour": support_price}],
        "suites": [{"id": "business", "modules": ["sales", "crm"]},
                   {"id": "front", "modules": ["crm", "desk"]}],
        "plans": [{"id": "essentials", "rank": 1, "modules": ["sales", "crm", "desk"],
                   "price": P1M, "companies": 1, "contacts": 100}],
        "packs": [
            {"id": "seats-crm", "kind": "seats", "module": "crm", "price": P1M},
            {"id": "seats-sales", "kind": "seats", "module": "sales", "price": P1M},
            {"id": "seats-business", "kind": "seats", "suite": "business", "price": P1M},
            {"id": "seats-front", "kind": "seats", "suite": "front", "price": P1M},
            {"id": "emails-1000", "kind": "emails", "module": "emailing", "units": 1000,
             "price": P1M},
            {"id": "companies-5", "kind": "companies", "units": 5, "price": P1M},
            {"id": "vip", "kind": "support", "module": "support", "price": P1Y,
             "support": _support(hours_per_year="10")},
            {"id": "vip-diamond", "kind": "support", "module": "support", "price": P1Y,
             "support": _support(hours_per_year="20", covers_level_3=True,
                                 overage_price_per_hour="110.00")},
            {"id": "vip-mini", "kind": "support", "module": "support", "price": P1Y,
             "support": _support(hours_per_year="2.25", overage_price_per_hour=None)},
            {"id": "orangecare", "kind": "support", "module": "support", "price": P1Y,
             "support": {"type": "daily", "minutes_per_user_per_day": 30, "auto_renew": True,
                         "overage_price_per_hour": "80.00"}}]})


CATALOG = _catalog()


def _lot(lot_id: str, item: str, kind: str, quantity: int = 1, units: int = 1,
         **fields: Any) -> Lot:
    return Lot.model_validate({
        "id": lot_id, "item": item, "kind": kind, "quantity": quantity, "units": units,
        "state": "active", "bought_at": "2026-03-20T09:00:00Z", **fields})


def _contract(lot_id: str, item: str, quantity: int = 1, **fields: Any) -> Lot:
    """A contract bought on 20 March 2026 for the year to 20 March 2027 (R8.2)."""
    return _lot(lot_id, item, "support", quantity, contract_start="2026-03-20",
                contract_end="2027-03-20", **fields)


def _tenant(*lots: Lot) -> TenantState:
    return tenant_document(*(lot.model_dump(mode="json") for lot in lots), cycle="P1Y",
                           anchor="2026-01-01", created_at="2025-12-20T10:00:00Z")


# --- seats (R6.2) --------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "expected"), [
    ("crm", {"seats-crm", "seats-business", "seats-front"}),  # its own + both suites
    ("sales", {"seats-sales", "seats-business"}),
    ("desk", {"seats-front"}),  # no pack of its own
    ("emailing", set()),  # an e-mail pack names emailing but grants no seats
    ("unknown", set()),
])
def test_seat_packs_of_a_module_include_the_suites_containing_it(module: str,
                                                                 expected: set[str]) -> None:
    assert CATALOG.seat_packs(module) == expected


# --- what lots grant; the e-mail allowance (R7.1) -----------------------------------------


def test_lots_grant_their_quantity_times_the_units_of_their_pack() -> None:
    """2 × emails-1000 + 3 × seats-crm (1 seat each) = 2,000 + 3 = 2,003."""
    lots = [_lot("a", "emails-1000", "emails", 2, 1000), _lot("b", "seats-crm", "seats", 3)]
    assert granted(lots) == 2003
    assert granted([]) == 0


def test_the_email_allowance_counts_every_email_lot_in_full_and_nothing_else() -> None:
    """R7.1: lots of 2 × 1000 and 1 × 1000 (the second bought on the period's last day,
    still counted whole) give 3,000; the seat and company lots add nothing."""
    lots = [_lot("e1", "emails-1000", "emails", 2, 1000),
            _lot("s", "seats-crm", "seats", 4),
            _lot("c", "companies-5", "companies", 1, 5),
            _lot("e2", "emails-1000", "emails", 1, 1000, bought_at="2026-03-31T21:00:00Z")]
    assert email_allowance(lots) == 3000
    assert email_allowance(lots[1:3]) == 0


_KINDS = st.sampled_from(["seats", "emails", "companies", "feature"])
_LOTS = st.lists(st.tuples(_KINDS, st.integers(1, 50), st.integers(1, 10_000)), max_size=6)


def _lots(specs: list[tuple[str, int, int]], prefix: str) -> list[Lot]:
    return [_lot(f"{prefix}{i}", "pack", kind, quantity, units)
            for i, (kind, quantity, units) in enumerate(specs)]


@given(first=_LOTS, second=_LOTS)
def test_what_lots_grant_adds_up(first: list[tuple[str, int, int]],
                                 second: list[tuple[str, int, int]]) -> None:
    """granted is additive over any split of the lots, and the e-mail allowance is what the
    e-mail lots alone grant, never more than all the lots grant."""
    a, b = _lots(first, "a"), _lots(second, "b")
    assert granted(a + b) == granted(a) + granted(b)
    assert granted(a) == sum(quantity * units for _, quantity, units in first)
    assert email_allowance(a + b) == granted(lot for lot in a + b if lot.kind == "emails")
    assert email_allowance(a + b) == email_allowance(a) + email_allowance(b)
    assert 0 <= email_allowance(a + b) <= granted(a + b)


# --- support contracts (R8.2–R8.4) ---------------------------------------------------------


def test_a_daily_plan_allows_its_minutes_per_user_times_the_users() -> None:
    """R8.3: orangecare, 30 minutes per user per day, 3 subscribed users (the lot quantity):
    90 minutes a day over the contract year; its overage rate is its own 80.00."""
    contracts = support_contracts(_tenant(_contract("lot-oc", "orangecare", 3)), CATALOG)
    assert contracts.dailies == [Daily("lot-oc", date(2026, 3, 20), date(2027, 3, 20), 90)]
    assert (contracts.banks, contracts.rates) == ([], {"lot-oc": Decimal("80.00")})


def test_a_rolled_over_daily_plan_runs_from_its_first_contract() -> None:
    """R8.3: the lot rolled over in place keeps the first contract's start in `since`."""
    lot = _contract("lot-oc", "orangecare", since="2025-03-20")
    (daily,) = support_contracts(_tenant(lot), CATALOG).dailies
    assert (daily.start, daily.end, daily.minutes_per_day) == (
        date(2025, 3, 20), date(2027, 3, 20), 30)


def test_bank_plans_hold_their_hours_as_minutes() -> None:
    """R8.2: 10 h = 600 min; 20 h = 1,200 min covering level 3; 2.25 h = 135 min, a plan
    that sells no overage (rate None)."""
    contracts = support_contracts(_tenant(
        _contract("lot-vip", "vip"), _contract("lot-dia", "vip-diamond"),
        _contract("lot-mini", "vip-mini")), CATALOG)
    start, end = date(2026, 3, 20), date(2027, 3, 20)
    assert contracts.banks == [Bank("lot-vip", start, end, 600, False, None),
                               Bank("lot-dia", start, end, 1200, True, None),
                               Bank("lot-mini", start, end, 135, False, None)]
    assert contracts.rates == {"lot-vip": Decimal("90.00"), "lot-dia": Decimal("110.00"),
                               "lot-mini": None}
    assert contracts.dailies == []


@pytest.mark.parametrize(("carry_over", "carry_from"), [(True, "lot-old"), (False, None)])
def test_only_a_renewal_on_time_carries_the_previous_bank_over(carry_over: bool,
                                                               carry_from: str | None) -> None:
    """R8.4: renewed before expiry the remainder of lot-old comes along; late, it does not."""
    lot = _contract("lot-new", "vip", renews="lot-old", carry_over=carry_over)
    (bank,) = support_contracts(_tenant(lot), CATALOG).banks
    assert bank.carry_from == carry_from


@pytest.mark.parametrize(("ends_at", "end"), [
    # Ended early (R4.1) on 15 June 00:30 Paris (UTC+2): its last local day is 14 June.
    ("2026-06-14T22:30:00Z", date(2026, 6, 15)),
    ("2026-06-14T21:30:00Z", date(2026, 6, 14)),  # 14 June 23:30 Paris: still the 14th
    ("2027-03-19T23:00:00Z", date(2027, 3, 20)),  # expired at its end: 20 March 00:00 Paris
    ("2026-03-19T10:00:00Z", date(2026, 3, 20)),  # before it started: an empty contract
])
def test_an_expired_contract_ends_on_the_local_day_it_stopped(ends_at: str, end: date) -> None:
    """The end is the local date of `ends_at`, never after the contract end nor before its
    start (the contract year is 2026-03-20 to 2027-03-20)."""
    lot = _contract("lot-vip", "vip", state="expired", ends_at=ends_at)
    (bank,) = support_contracts(_tenant(lot), CATALOG).banks
    assert (bank.start, bank.end) == (date(2026, 3, 20), end)


def test_a_contract_still_running_keeps_its_contract_end() -> None:
    """A cancelled lot grants until its `ends_at`; only expiry shortens the contract."""
    lot = _contract("lot-vip", "vip", state="cancelled", ends_at="2026-06-14T22:00:00Z")
    (bank,) = support_contracts(_tenant(lot), CATALOG).banks
    assert bank.end == date(2027, 3, 20)


def test_lots_that_are_not_support_contracts_are_left_out() -> None:
    """A seat lot, a support lot without contract dates, and one whose pack the catalog no
    longer has give no contract."""
    state = _tenant(_lot("lot-s", "seats-crm", "seats"), _lot("lot-bare", "vip", "support"),
                    _contract("lot-gone", "vip-legacy"))
    contracts = support_contracts(state, CATALOG)
    assert (contracts.dailies, contracts.banks, contracts.rates) == ([], [], {})


# --- the overage rate of a day (R8.2, R8.3) ------------------------------------------------


def _rated(daily_rate: str | None = "80.00") -> SupportContracts:
    """A daily plan over 2026-03-20..2027-03-20 and a bank over 2026-01-01..2027-01-01,
    each active from its start (included) to its end (excluded)."""
    return SupportContracts(
        dailies=[Daily("d", date(2026, 3, 20), date(2027, 3, 20), 60)],
        banks=[Bank("b", date(2026, 1, 1), date(2027, 1, 1), 600)],
        rates={"d": None if daily_rate is None else Decimal(daily_rate),
               "b": Decimal("90.00")})


@pytest.mark.parametrize(("day", "rate"), [
    (date(2025, 12, 31), "120.00"),  # no contract yet: the catalog's rate without a plan
    (date(2026, 1, 1), "90.00"),  # the bank's first day
    (date(2026, 3, 19), "90.00"),  # the daily plan starts tomorrow
    (date(2026, 3, 20), "80.00"),  # both active: the daily plan's rate first
    (date(2026, 12, 31), "80.00"),
    (date(2027, 1, 1), "80.00"),  # the bank ended (end excluded)
    (date(2027, 3, 20), "120.00"),  # the daily plan ended too
])
def test_the_rate_is_the_daily_plans_else_a_banks_else_the_catalogs(day: date,
                                                                     rate: str) -> None:
    assert _rated().overage_rate(day, CATALOG) == Decimal(rate)


def test_a_daily_plan_without_a_rate_leaves_the_banks_rate() -> None:
    """The daily plan sells no overage; the bank active that day does, at 90.00."""
    assert _rated(None).overage_rate(date(2026, 6, 1), CATALOG) == Decimal("90.00")


def test_without_any_plan_or_catalog_rate_support_time_has_no_price() -> None:
    assert SupportContracts().overage_rate(date(2026, 6, 1), _catalog(None)) is None
    assert SupportContracts().overage_rate(date(2026, 6, 1), CATALOG) == Decimal("120.00")


def test_a_documents_contracts_give_the_rate_of_each_day() -> None:
    """The rates found for a real document: vip and orangecare both run on 1 June 2026,
    so the day's rate is orangecare's 80.00; after both end, the catalog's 120.00."""
    state = _tenant(_contract("lot-vip", "vip"), _contract("lot-oc", "orangecare", 2))
    contracts = support_contracts(state, CATALOG)
    assert contracts.overage_rate(date(2026, 6, 1), CATALOG) == Decimal("80.00")
    assert contracts.overage_rate(date(2027, 3, 20), CATALOG) == Decimal("120.00")
