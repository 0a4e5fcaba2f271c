"""The pure check decisions (services/entitlements/decisions.py): modules and seats (R6.1–R6.3),
e-mails (R7.1, R7.2), companies (R7.3), features and support (R8.2, R8.3), on a small catalog
and tenant documents built in memory. Every expected value is worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.entitlements.decisions import (
    CatalogIndex,
    Decision,
    company_decision,
    email_decision,
    extra_user_rank,
    feature_decision,
    module_decision,
    subscription_denial,
    support_decision,
    user_decision,
)
from services.entitlements.support import SupportView
from shared.catalog import Catalog
from shared.subscription import TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

P1M = {"P1M": "10.00"}


def _catalog(**top: Any) -> Catalog:
    """Two plans; crm and sales bill extra users, desk and emailing deny them; the suite
    `business` holds sales and crm. E-mail overage is priced unless `top` says otherwise."""
    data: dict[str, Any] = {
        "version": "t", "currency": "EUR",
        "modules": [{"id": m, "extra_users": "bill", "extra_user_price": {"P1M": "15.00"}}
                    for m in ("sales", "crm", "accounting")]
        + [{"id": m, "extra_users": "deny"} for m in ("desk", "emailing")],
        "suites": [{"id": "business", "modules": ["sales", "crm"]}],
        "plans": [
            {"id": "essentials", "rank": 1, "modules": ["sales", "crm", "desk", "emailing"],
             "price": {"P1M": "49.00"}, "companies": 1, "contacts": 100},
            {"id": "professional", "rank": 2,
             "modules": ["sales", "crm", "accounting", "desk", "emailing"],
             "price": {"P1M": "99.00"}, "companies": 3, "contacts": 100,
             "features": ["ai_assist"]}],
        "packs": [
            {"id": "seats-crm", "kind": "seats", "module": "crm", "price": P1M},
            {"id": "seats-crm-5", "kind": "seats", "module": "crm", "units": 5, "price": P1M},
            {"id": "seats-desk", "kind": "seats", "module": "desk", "price": P1M},
            {"id": "seats-business", "kind": "seats", "suite": "business", "price": P1M},
            {"id": "emails-1000", "kind": "emails", "module": "emailing", "units": 1000,
             "price": P1M},
            {"id": "companies-1", "kind": "companies", "price": P1M},
            {"id": "companies-5", "kind": "companies", "units": 5, "price": P1M},
            {"id": "analytics", "kind": "feature", "feature": "analytics", "price": P1M,
             "single_instance": True, "trial_days": 14},
            {"id": "parallel-events", "kind": "feature", "feature": "parallel_events",
             "price": P1M}],
        "email_overage_price": "0.002"}
    data.update(top)
    return Catalog.model_validate(data)


INDEX = CatalogIndex(_catalog())


def _lot(lot_id: str, item: str, kind: str, quantity: int = 1, units: int = 1,
         day: int = 5, **fields: Any) -> dict[str, Any]:
    lot = {"id": lot_id, "item": item, "kind": kind, "quantity": quantity, "units": units,
           "state": "active", "bought_at": f"2026-03-{day:02d}T09:00:00Z"}
    lot.update(fields)
    return lot


def _tenant(*lots: dict[str, Any], **fields: Any) -> TenantState:
    return tenant_document(*lots, **fields)


Figure = int | Decimal | None  # a priced meter's figures may have decimals (R10.4)


def _numbers(decision: Decision) -> tuple[str, str, str | None, Figure, Figure, Figure]:
    return (decision.decision, decision.reason, decision.covered_by, decision.limit,
            decision.used, decision.remaining)


# --- the catalog index ---------------------------------------------------------------------


def test_the_index_gathers_seat_packs_of_a_module_and_of_its_suites() -> None:
    """R6.2: crm is covered by its own packs and by the suite `business` (sales, crm);
    accounting is in no suite and has no pack; emailing's e-mail pack grants no seats."""
    assert INDEX.seat_packs["crm"] == {"seats-crm", "seats-crm-5", "seats-business"}
    assert INDEX.seat_packs["sales"] == {"seats-business"}
    assert INDEX.seat_packs["accounting"] == frozenset()
    assert INDEX.seat_packs["emailing"] == frozenset()
    assert INDEX.deny_extra_users == {"desk", "emailing"}


def test_the_index_knows_features_from_packs_and_plans_and_the_overage_price() -> None:
    assert INDEX.feature_of_pack == {"analytics": "analytics",
                                     "parallel-events": "parallel_events"}
    assert INDEX.features == {"analytics", "parallel_events", "ai_assist"}
    assert INDEX.kind_of_pack["emails-1000"] == "emails"
    assert INDEX.plan_companies == {"essentials": 1, "professional": 3}
    assert INDEX.email_overage is True
    assert CatalogIndex(_catalog(email_overage_price=None)).email_overage is False


# --- the subscription and the module ------------------------------------------------------


@pytest.mark.parametrize(("status", "today", "reason"), [
    ("ended", date(2026, 3, 20), "subscription_ended"),
    ("scheduled", date(2026, 2, 28), "subscription_not_started"),
    ("active", date(2026, 2, 28), "subscription_not_started"),
])
def test_a_tenant_outside_its_subscription_is_denied_everything(status: str, today: date,
                                                                reason: str) -> None:
    """Anchor 2026-03-01: the day before it is not started; an ended one is denied any day."""
    denial = subscription_denial(_tenant(status=status), today)
    assert denial is not None
    assert (denial.decision, denial.reason) == ("denied", reason)


@pytest.mark.parametrize("status", ["scheduled", "active"])
def test_from_the_anchor_day_on_nothing_is_denied_for_the_subscription(status: str) -> None:
    """On the anchor itself (2026-03-01) the subscription has started, even if the document
    still says `scheduled` (the lifecycle step may not have run yet)."""
    assert subscription_denial(_tenant(status=status), date(2026, 3, 1)) is None


def test_a_module_is_active_only_when_the_plan_includes_it() -> None:
    """Essentials has sales, crm, desk, emailing; accounting is professional's only."""
    state = _tenant()
    assert _numbers(module_decision(state, INDEX, "crm")) == (
        "covered", "plan", None, None, None, None)
    assert module_decision(state, INDEX, "accounting").reason == "module_inactive"
    upgraded = _tenant(plan="professional")
    assert module_decision(upgraded, INDEX, "accounting").decision == "covered"


# --- extra users: the rank among them (R6.1, R6.3) ----------------------------------------


@pytest.mark.parametrize(("user_rank", "admin_rank", "members", "expected"), [
    # The module's set, oldest grant first: [u-a, u-admin, u-b]; the admin is no extra user.
    (0, 1, 3, (1, 2)),  # u-a, before the admin: 1st of 2
    (2, 1, 3, (2, 2)),  # u-b, after the admin: ZRANK 2 minus the admin = 2nd of 2
    (None, 1, 3, (3, 2)),  # not granted yet: as if granted now, after both
    # The admin granted first: [u-admin, u-a].
    (1, 0, 2, (1, 1)),
    # The admin never granted on this module: [u-a, u-b].
    (1, None, 2, (2, 2)),
    (None, None, 2, (3, 2)),
    # Nobody but the admin: the first extra user to come is the 1st.
    (None, 0, 1, (1, 0)),
    (None, None, 0, (1, 0)),
])
def test_extra_user_rank_leaves_the_admin_out(user_rank: int | None, admin_rank: int | None,
                                              members: int, expected: tuple[int, int]) -> None:
    assert extra_user_rank(user_rank, admin_rank, members) == expected


def test_ties_of_grant_time_are_ranked_by_user_id() -> None:
    """R6.3: u-b and u-a were granted at the same instant, after the admin; the set orders
    equal grant times by member id, so it reads [u-admin, u-a, u-b]: u-a is the 1st extra
    user and u-b the 2nd, whichever was written first."""
    grants = {"u-admin": 100, "u-b": 200, "u-a": 200}
    order = sorted(grants, key=lambda user: (grants[user], user))
    assert order == ["u-admin", "u-a", "u-b"]
    assert extra_user_rank(order.index("u-a"), order.index("u-admin"), 3) == (1, 2)
    assert extra_user_rank(order.index("u-b"), order.index("u-admin"), 3) == (2, 2)


_USERS = st.sampled_from(["u-a", "u-b", "u-c", "u-d", "u-e", "u-admin"])


@given(grants=st.dictionaries(_USERS, st.integers(min_value=0, max_value=3), max_size=6),
       user=_USERS)
def test_the_rank_counts_the_extra_users_granted_before(grants: dict[str, int],
                                                        user: str) -> None:
    """For any set (grant times drawn from few values, so ties are common): a granted user's
    rank is 1 + the extra users ordered before it by (grant time, id); one not granted comes
    after every extra user; the rank never exceeds members + 1."""
    order = sorted(grants, key=lambda u: (grants[u], u))
    admin_rank = order.index("u-admin") if "u-admin" in order else None
    user_rank = order.index(user) if user in order else None
    rank, extra = extra_user_rank(user_rank, admin_rank, len(order))
    assert extra == len([u for u in order if u != "u-admin"])
    if user == "u-admin":
        return  # the admin is decided before its rank is read
    if user_rank is None:
        assert rank == extra + 1
    else:
        assert rank == 1 + len([u for u in order[:user_rank] if u != "u-admin"])
    assert 1 <= rank <= len(order) + 1


# --- one user on one module (R6.3) ---------------------------------------------------------


def _crm_seats() -> TenantState:
    """Capacity of crm: lot-a 2 × seats-crm + lot-b 1 × seats-business (suite) = 3 seats;
    lot-a was bought first, so it holds ranks 1–2 and lot-b rank 3."""
    return _tenant(_lot("lot-a", "seats-crm", "seats", quantity=2, day=5),
                   _lot("lot-b", "seats-business", "seats", day=6))


@pytest.mark.parametrize(("rank", "expected"), [
    (1, ("covered", "seat_pack", "lot-a")),
    (2, ("covered", "seat_pack", "lot-a")),  # lot-a's last seat
    (3, ("covered", "seat_pack", "lot-b")),  # exactly at capacity
    (4, ("billable", "consumption", None)),  # one past it: allowed and billed (R6.4)
])
def test_ranks_within_capacity_are_covered_by_the_pack_holding_them(
        rank: int, expected: tuple[str, str, str | None]) -> None:
    """Four extra users on crm, 3 seats: limit 3, used 4, remaining max(0, 3 − 4) = 0."""
    decision = user_decision(_crm_seats(), INDEX, "crm", f"u-{rank}", rank, 4)
    assert _numbers(decision) == (*expected, 3, 4, 0)


def test_a_suite_pack_covers_every_module_of_the_suite() -> None:
    """R6.2: sales has no pack of its own; lot-b's suite seat covers its 1st extra user,
    and the 2nd is billed. Two extra users, one seat: remaining 0."""
    state = _crm_seats()
    assert _numbers(user_decision(state, INDEX, "sales", "u-1", 1, 2)) == (
        "covered", "seat_pack", "lot-b", 1, 2, 0)
    assert user_decision(state, INDEX, "sales", "u-2", 2, 2).decision == "billable"


def test_pack_units_multiply_the_seats_of_a_lot() -> None:
    """2 × seats-crm-5 = 10 seats: rank 10 covered, rank 11 billed; 7 extra users leave
    10 − 7 = 3 seats free."""
    state = _tenant(_lot("lot-5", "seats-crm-5", "seats", quantity=2, units=5))
    assert _numbers(user_decision(state, INDEX, "crm", "u", 10, 7)) == (
        "covered", "seat_pack", "lot-5", 10, 7, 3)
    assert user_decision(state, INDEX, "crm", "u", 11, 11).decision == "billable"


def test_a_cancelled_lot_still_grants_seats_an_expired_one_does_not() -> None:
    """R4.4: a cancelled lot grants until its period ends; an expired one no longer."""
    state = _tenant(
        _lot("lot-x", "seats-crm", "seats", quantity=5, day=2, state="expired",
             ends_at="2026-03-04T09:00:00Z"),
        _lot("lot-c", "seats-crm", "seats", state="cancelled", ends_at="2026-03-31T22:00:00Z"))
    assert _numbers(user_decision(state, INDEX, "crm", "u-1", 1, 2)) == (
        "covered", "seat_pack", "lot-c", 1, 2, 0)
    assert user_decision(state, INDEX, "crm", "u-2", 2, 2).reason == "consumption"


def test_beyond_capacity_a_deny_module_denies_instead_of_billing() -> None:
    """desk is `extra_users: deny`: one seat, so rank 1 is covered and rank 2 denied."""
    state = _tenant(_lot("lot-d", "seats-desk", "seats"))
    assert user_decision(state, INDEX, "desk", "u-1", 1, 2).covered_by == "lot-d"
    assert _numbers(user_decision(state, INDEX, "desk", "u-2", 2, 2)) == (
        "denied", "extra_users_denied", None, 1, 2, 0)


def test_the_admin_is_covered_without_a_seat_and_not_counted() -> None:
    """R6.1: no seat pack at all, yet the admin is covered on every active module; the
    numbers are the extra users' (3 of them, capacity 0)."""
    state = _tenant()
    assert _numbers(user_decision(state, INDEX, "crm", "u-admin", 4, 3)) == (
        "covered", "admin", None, 0, 3, 0)
    assert _numbers(user_decision(state, INDEX, "desk", "u-admin", 1, 0))[:2] == (
        "covered", "admin")


def test_an_inactive_module_is_denied_even_to_the_admin() -> None:
    """R6.3 checks the module first: accounting is not in essentials."""
    state = _crm_seats()
    for user in ("u-admin", "u-1"):
        assert _numbers(user_decision(state, INDEX, "accounting", user, 1, 1)) == (
            "denied", "module_inactive", None, None, None, None)


# --- e-mails (R7.1, R7.2) ------------------------------------------------------------------


def _mail_lots() -> TenantState:
    """lot-e2 (1 × 1000, bought 8 March) is listed before lot-e1 (2 × 1000, bought 3 March):
    e-mails are drawn in purchase order, e1's 2,000 first, then e2's 1,000; allowance 3,000."""
    return _tenant(_lot("lot-e2", "emails-1000", "emails", units=1000, day=8),
                   _lot("lot-e1", "emails-1000", "emails", quantity=2, units=1000, day=3))


@pytest.mark.parametrize(("used", "quantity", "expected"), [
    (0, 1, ("covered", "email_pack", "lot-e1", 3000, 0, 3000)),
    (1990, 10, ("covered", "email_pack", "lot-e1", 3000, 1990, 1010)),  # 2,000: e1 used up
    (1990, 11, ("covered", "email_pack", "lot-e2", 3000, 1990, 1010)),  # 2,001: into e2
    (2990, 10, ("covered", "email_pack", "lot-e2", 3000, 2990, 10)),  # 3,000: exactly all
    (2990, 11, ("billable", "overage", None, 3000, 2990, 10)),  # 3,001: one past
    (3500, 1, ("billable", "overage", None, 3000, 3500, 0)),
])
def test_emails_within_the_allowance_are_covered_beyond_it_billed(
        used: int, quantity: int, expected: tuple[Any, ...]) -> None:
    assert _numbers(email_decision(_mail_lots(), INDEX, used, quantity)) == expected


def test_without_an_overage_price_emails_beyond_the_allowance_are_denied() -> None:
    """2,990 used + 11 = 3,001 > 3,000 and the catalog sells no overage: denied."""
    index = CatalogIndex(_catalog(email_overage_price=None))
    assert _numbers(email_decision(_mail_lots(), index, 2990, 11)) == (
        "denied", "allowance_exceeded", None, 3000, 2990, 10)
    assert email_decision(_mail_lots(), index, 2990, 10).decision == "covered"


def test_sending_needs_a_live_email_pack() -> None:
    """R7.1: no e-mail lot (a seat lot does not count, an expired e-mail lot neither):
    denied, with limit 0 and the e-mails already counted."""
    for state in (_tenant(), _tenant(_lot("lot-s", "seats-crm", "seats")),
                  _tenant(_lot("lot-x", "emails-1000", "emails", units=1000,
                               state="expired", ends_at="2026-03-06T09:00:00Z"))):
        assert _numbers(email_decision(state, INDEX, 12, 1)) == (
            "denied", "no_email_pack", None, 0, 12, 0)


def test_a_cancelled_email_lot_keeps_its_whole_allowance() -> None:
    """R4.4, R7.1: cancelled lots grant until the period ends, in full: 1 × 1000."""
    state = _tenant(_lot("lot-c", "emails-1000", "emails", units=1000, state="cancelled",
                         ends_at="2026-03-31T22:00:00Z"))
    assert _numbers(email_decision(state, INDEX, 999, 1)) == (
        "covered", "email_pack", "lot-c", 1000, 999, 1)


@given(quantities=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=4),
       used=st.integers(min_value=0, max_value=12_000),
       quantity=st.integers(min_value=1, max_value=3_000))
def test_emails_are_covered_exactly_when_they_fit_the_allowance(
        quantities: list[int], used: int, quantity: int) -> None:
    """With e-mail lots, covered ⇔ used + N ≤ allowance (1000 × the lots' quantities);
    otherwise billable with an overage price and denied without one (R7.2)."""
    state = _tenant(*(_lot(f"lot-{i}", "emails-1000", "emails", quantity=q, units=1000,
                           day=1 + i) for i, q in enumerate(quantities)))
    allowance = 1000 * sum(quantities)
    priced = email_decision(state, INDEX, used, quantity)
    unpriced = email_decision(state, CatalogIndex(_catalog(email_overage_price=None)),
                              used, quantity)
    fits = used + quantity <= allowance
    assert priced.decision == ("covered" if fits else "billable")
    assert unpriced.decision == ("covered" if fits else "denied")
    assert (priced.limit, priced.remaining) == (allowance, max(0, allowance - used))


# --- attached companies (R7.3) -------------------------------------------------------------


def _companies() -> TenantState:
    """Essentials includes 1 company; lot-c5 (1 × 5, bought first) and lot-c1 (2 × 1) make
    the limit 1 + 5 + 2 = 8: companies 2–6 come from lot-c5, 7–8 from lot-c1."""
    return _tenant(_lot("lot-c1", "companies-1", "companies", quantity=2, day=9),
                   _lot("lot-c5", "companies-5", "companies", units=5, day=4))


@pytest.mark.parametrize(("used", "quantity", "expected"), [
    (0, 1, ("covered", "plan", None, 8, 0, 8)),
    (1, 1, ("covered", "company_pack", "lot-c5", 8, 1, 7)),
    (5, 1, ("covered", "company_pack", "lot-c5", 8, 5, 3)),  # the 6th: lot-c5's last
    (6, 1, ("covered", "company_pack", "lot-c1", 8, 6, 2)),
    (7, 1, ("covered", "company_pack", "lot-c1", 8, 7, 1)),  # the 8th: exactly the limit
    (8, 1, ("denied", "limit_reached", None, 8, 8, 0)),  # one past it
    (7, 2, ("denied", "limit_reached", None, 8, 7, 1)),
])
def test_companies_are_allowed_up_to_the_plan_and_pack_limit(
        used: int, quantity: int, expected: tuple[Any, ...]) -> None:
    assert _numbers(company_decision(_companies(), INDEX, used, quantity)) == expected


def test_companies_without_packs_stop_at_the_plan_allowance() -> None:
    """Professional includes 3: the 3rd is covered by the plan, the 4th denied (never
    billed, R7.3)."""
    state = _tenant(plan="professional")
    assert _numbers(company_decision(state, INDEX, 2, 1)) == ("covered", "plan", None, 3, 2, 1)
    assert _numbers(company_decision(state, INDEX, 3, 1)) == (
        "denied", "limit_reached", None, 3, 3, 0)


# --- features ------------------------------------------------------------------------------


def test_a_feature_included_in_the_plan_needs_no_pack() -> None:
    assert _numbers(feature_decision(_tenant(plan="professional"), INDEX, "ai_assist")) == (
        "covered", "plan", None, None, None, None)
    assert feature_decision(_tenant(), INDEX, "ai_assist").reason == "not_subscribed"


def test_a_feature_on_trial_is_covered_by_its_trial_lot() -> None:
    """R5.3: a trialing lot grants the pack at no charge until it ends."""
    state = _tenant(_lot("lot-t", "analytics", "feature", state="trialing", trial=True,
                         ends_at="2026-03-18T23:00:00Z"))
    assert _numbers(feature_decision(state, INDEX, "analytics")) == (
        "covered", "trial", "lot-t", 1, None, None)


def test_a_bought_lot_names_the_feature_and_an_expired_trial_no_longer_counts() -> None:
    """The trial (3 March) was converted by buying on 10 March: the trial lot expired and
    the bought lot covers, granting 1."""
    state = _tenant(
        _lot("lot-t", "analytics", "feature", day=3, state="expired", trial=True,
             ends_at="2026-03-10T09:00:00Z"),
        _lot("lot-p", "analytics", "feature", day=10))
    assert _numbers(feature_decision(state, INDEX, "analytics")) == (
        "covered", "feature_pack", "lot-p", 1, None, None)


def test_several_lots_of_a_feature_add_up_and_the_oldest_names_it() -> None:
    """parallel-events bought twice: 1 on 4 March and 2 on 2 March (listed second): 3 in
    all, covered by the older lot."""
    state = _tenant(_lot("lot-late", "parallel-events", "feature", day=4),
                    _lot("lot-early", "parallel-events", "feature", quantity=2, day=2))
    assert _numbers(feature_decision(state, INDEX, "parallel_events")) == (
        "covered", "feature_pack", "lot-early", 3, None, None)


def test_a_feature_without_a_live_lot_is_not_subscribed() -> None:
    state = _tenant(_lot("lot-x", "analytics", "feature", state="expired",
                         ends_at="2026-03-06T09:00:00Z"))
    for feature in ("analytics", "no_such_feature"):
        assert _numbers(feature_decision(state, INDEX, feature)) == (
            "denied", "not_subscribed", None, None, None, None)


# --- support (R8.2, R8.3) ------------------------------------------------------------------


def _bank(lot: str, limit: int, used: int, level_3: bool) -> dict[str, Any]:
    return {"lot": lot, "item": lot, "limit": limit, "used": used,
            "remaining": limit - used, "covers_level_3": level_3,
            "contract": {"from": "2026-01-01", "to": "2027-01-01"}}


RATE = Decimal("90.00")


def test_levels_1_and_2_take_todays_daily_allowance_first() -> None:
    """60 minutes a day (2 users × 30), 45 used: covered by the daily plan, 15 left."""
    view = SupportView(("lot-d", 60, 45), [_bank("lot-vip", 600, 0, False)], RATE)
    decision = support_decision(view, 1)
    assert _numbers(decision) == ("covered", "support_daily", "lot-d", 60, 45, 15)
    assert decision.support is not None
    assert decision.support["today"] == {"lot": "lot-d", "limit": 60, "used": 45,
                                         "remaining": 15}
    assert decision.support["overage_price_per_hour"] == "90.00"


def test_a_used_up_daily_allowance_passes_to_a_bank_with_time_left() -> None:
    """Exactly 60 of 60 used today: the first bank with time left covers (the empty one is
    skipped): vip-b has 600 − 150 = 450 minutes left."""
    banks = [_bank("lot-vip-a", 600, 600, False), _bank("lot-vip-b", 600, 150, False)]
    decision = support_decision(SupportView(("lot-d", 60, 60), banks, RATE), 2)
    assert _numbers(decision) == ("covered", "support_bank", "lot-vip-b", 600, 150, 450)


def test_level_3_never_takes_the_daily_allowance_nor_a_bank_without_level_3() -> None:
    """R8.3: the daily allowance is untouched and VIP has time, yet neither covers level 3;
    VIP Diamond does. Without Diamond the session is billed at the plan's rate."""
    vip, diamond = _bank("lot-vip", 600, 0, False), _bank("lot-diamond", 1200, 60, True)
    covered = support_decision(SupportView(("lot-d", 60, 0), [vip, diamond], RATE), 3)
    assert _numbers(covered) == ("covered", "support_bank", "lot-diamond", 1200, 60, 1140)
    assert covered.support is not None
    assert covered.support["level_3_covered"] is True
    billed = support_decision(SupportView(("lot-d", 60, 0), [vip], RATE), 3)
    assert _numbers(billed) == ("billable", "overage", None, None, None, None)
    assert billed.support is not None
    assert billed.support["level_3_covered"] is False


@pytest.mark.parametrize(("daily", "banks", "rate", "expected"), [
    (None, [], Decimal("120.00"), ("billable", "no_support_plan")),
    (None, [], None, ("denied", "not_subscribed")),
    (("lot-d", 60, 75), [], None, ("denied", "allowance_exceeded")),
    (None, [_bank("lot-vip", 600, 600, False)], RATE, ("billable", "overage")),
])
def test_time_beyond_every_allowance_is_billed_at_a_rate_or_denied(
        daily: tuple[str, int, int] | None, banks: list[dict[str, Any]],
        rate: Decimal | None, expected: tuple[str, str]) -> None:
    """No plan: the catalog's rate (`no_support_plan`) or denied; a plan used up: the
    plan's rate (`overage`), or denied when no rate is set."""
    decision = support_decision(SupportView(daily, banks, rate), 1)
    assert (decision.decision, decision.reason) == expected
    assert decision.covered_by is None
    assert decision.support is not None
    assert decision.support["unit"] == "minutes"
