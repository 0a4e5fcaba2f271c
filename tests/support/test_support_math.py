"""R8 as pure math (shared/billing/support.py): worked examples computed by hand in each
docstring, and properties checked with hypothesis.

Demo terms: OrangeCare 30 min per user per day, overage 90.00/h; VIP 10 h = 600 min, no
level 3; VIP Diamond 20 h = 1,200 min, covers level 3; renewal discount 10 %, grace 30 days.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.periods import add_years
from shared.billing.support import (
    Bank,
    Daily,
    Session,
    allocate,
    renewal_terms,
    round_session,
)

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 10)
YEAR = (date(2026, 1, 1), date(2027, 1, 1))


def orange(users: int) -> Daily:
    return Daily("orange", *YEAR, minutes_per_day=30 * users)


VIP = Bank("vip", *YEAR, minutes=600)
DIAMOND = Bank("diamond", *YEAR, minutes=1200, covers_level_3=True)


def test_r8_1_session_rounded_up_to_15_minutes() -> None:
    """R8.1: 50 → 60 (four quarters: 15 × 4 = 60 ≥ 50 > 45), 15 → 15, 1 → 15, 61 → 75."""
    assert round_session(50) == 60
    assert round_session(15) == 15
    assert round_session(1) == 15
    assert round_session(61) == 75


def test_r8_1_a_50_minute_session_without_plan_is_billed_as_60() -> None:
    """R8.1: no plan at all: the 50-minute session is 60 minutes of overage (1 h)."""
    (alloc,), _ = allocate([Session("s1", DAY, 50, 2)], [], [])
    assert (alloc.rounded, alloc.daily, alloc.banks, alloc.overage) == (60, 0, {}, 60)


@given(st.integers(min_value=1, max_value=100_000))
def test_r8_1_rounding_properties(minutes: int) -> None:
    rounded = round_session(minutes)
    assert rounded % 15 == 0
    assert minutes <= rounded < minutes + 15


def test_r8_1_zero_or_negative_minutes_refused() -> None:
    for bad in (0, -5):
        try:
            round_session(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_r8_3_two_users_70_minutes_in_one_day() -> None:
    """R8.3: OrangeCare for 2 users → 2 × 30 = 60 min that day. User 1: 40 min → 45;
    user 2: 30 min → 30; 75 min in all. Session 1 takes 45 from the allowance (15 left),
    session 2 takes 15 from it and 15 is beyond: no bank → 15 min billed (0.25 h × 90.00 =
    22.50 on the invoice)."""
    sessions = [Session("u1", DAY, 40, 1, "09:00"), Session("u2", DAY, 30, 2, "10:00")]
    allocs, _ = allocate(sessions, [orange(2)], [])
    assert [(a.daily, a.overage) for a in allocs] == [(45, 0), (15, 15)]


def test_r8_3_excess_drawn_from_vip_then_billed_when_empty() -> None:
    """R8.3 with R8.2: OrangeCare 1 user (30 min/day) + VIP 600 min.
    Day 1: 90 min → 30 allowance + 60 from VIP (540 left).
    Day 2: 590 min → 600 rounded; 30 allowance + 540 from VIP (0 left) + 30 billed.
    Day 3: 20 min → 30 rounded, all from the allowance (the bank is not needed)."""
    sessions = [Session("d1", DAY, 90, 1), Session("d2", DAY + timedelta(days=1), 590, 2),
                Session("d3", DAY + timedelta(days=2), 20, 1)]
    allocs, left = allocate(sessions, [orange(1)], [VIP])
    assert [(a.daily, a.banks, a.overage) for a in allocs] == [
        (30, {"vip": 60}, 0), (30, {"vip": 540}, 30), (30, {}, 0)]
    assert left == {"vip": 0}


def test_r8_3_level_3_never_from_the_daily_allowance() -> None:
    """R8.3: a 50-min level-3 session (→ 60) with OrangeCare + VIP: not from the allowance,
    not from VIP (no level 3) → 60 min billed (1 h × 90.00 = 90.00). With VIP Diamond too:
    60 min from Diamond (1,140 left), VIP untouched."""
    s = Session("l3", DAY, 50, 3)
    (alloc,), _ = allocate([s], [orange(1)], [VIP])
    assert (alloc.daily, alloc.banks, alloc.overage) == (0, {}, 60)
    (alloc,), left = allocate([s], [orange(1)], [VIP, DIAMOND])
    assert (alloc.daily, alloc.banks, alloc.overage) == (0, {"diamond": 60}, 0)
    assert left == {"vip": 600, "diamond": 1140}


def test_r8_2_level_2_uses_vip_before_diamond() -> None:
    """R8.2: both banks coexist; level 1–2 work takes the bank without level 3 first, so
    Diamond keeps its hours for level-3 work: a 120-min session → 120 from VIP (480 left)."""
    (alloc,), left = allocate([Session("s", DAY, 120, 2)], [], [VIP, DIAMOND])
    assert alloc.banks == {"vip": 120}
    assert left == {"vip": 480, "diamond": 1200}


def test_r8_4_carry_over_into_the_renewed_bank() -> None:
    """R8.4: VIP 2026 used 4 h (240 of 600) → 360 min unused, renewed on time: the 2027
    contract holds 600 + 360 = 960 min; a 2027 session of 900 min is all from the bank."""
    renewed = Bank("vip-2027", date(2027, 1, 1), date(2028, 1, 1), 600, carry_from="vip")
    sessions = [Session("a", DAY, 240, 1), Session("b", date(2027, 2, 1), 900, 1)]
    allocs, left = allocate(sessions, [], [VIP, renewed])
    assert allocs[1].banks == {"vip-2027": 900}
    assert left == {"vip": 0, "vip-2027": 60}


def test_r8_4_renewal_on_time() -> None:
    """R8.4: VIP 680.00 ending 2027-01-01, renewed 2026-12-15 (before expiry):
    680.00 × 0.90 = 612.00, next year [2027-01-01, 2028-01-01), unused time carried."""
    terms = renewal_terms(Decimal("680.00"), date(2027, 1, 1), date(2026, 12, 15), "EUR")
    assert (terms.kind, terms.amount, terms.start, terms.end, terms.carry_over) == (
        "on_time", Decimal("612.00"), date(2027, 1, 1), date(2028, 1, 1), True)


def test_r8_4_renewal_10_days_late() -> None:
    """R8.4: renewed 2027-01-11, 10 days after the 2027-01-01 expiry: the anniversary is
    kept, [2027-01-01, 2028-01-01) has 365 days, 355 of them left from 01-11:
    680.00 × 355 / 365 = 661.3698… → 661.37, full rate, no carry-over."""
    terms = renewal_terms(Decimal("680.00"), date(2027, 1, 1), date(2027, 1, 11), "EUR")
    assert (terms.kind, terms.amount, terms.start, terms.end, terms.carry_over) == (
        "late", Decimal("661.37"), date(2027, 1, 1), date(2028, 1, 1), False)


def test_r8_4_renewal_45_days_late() -> None:
    """R8.4: renewed 2027-02-15, 45 days late (> 30): a new one-year contract
    [2027-02-15, 2028-02-15) at the full 680.00, no carry-over."""
    terms = renewal_terms(Decimal("680.00"), date(2027, 1, 1), date(2027, 2, 15), "EUR")
    assert (terms.kind, terms.amount, terms.start, terms.end, terms.carry_over) == (
        "new", Decimal("680.00"), date(2027, 2, 15), date(2028, 2, 15), False)


def test_r8_4_exactly_30_days_late_is_still_prorated() -> None:
    """R8.4 "up to 30 days": 2027-01-31 is 30 days late → 680 × 335/365 = 624.11."""
    terms = renewal_terms(Decimal("680.00"), date(2027, 1, 1), date(2027, 1, 31), "EUR")
    assert (terms.kind, terms.amount) == ("late", Decimal("624.11"))


def test_add_years_leap_day() -> None:
    assert add_years(date(2028, 2, 29)) == date(2029, 2, 28)


sessions_st = st.lists(
    st.tuples(st.integers(0, 60), st.integers(1, 300), st.sampled_from([1, 2, 3])),
    max_size=40)


@given(sessions_st, st.integers(0, 4), st.booleans(), st.booleans())
def test_r8_allocation_conserves_every_minute(raw: list[tuple[int, int, int]], users: int,
                                              with_vip: bool, with_diamond: bool) -> None:
    """Every rounded minute goes somewhere exactly once; banks never go negative nor give
    more than they hold; level 3 never touches the allowance; the allowance never exceeds
    its daily limit."""
    sessions = [Session(f"s{i}", DAY + timedelta(days=d), m, lvl)
                for i, (d, m, lvl) in enumerate(raw)]
    dailies = [orange(users)] if users else []
    banks = ([VIP] if with_vip else []) + ([DIAMOND] if with_diamond else [])
    allocs, left = allocate(sessions, dailies, banks)
    per_day: dict[date, int] = {}
    for a in allocs:
        assert a.daily + sum(a.banks.values()) + a.overage == a.rounded
        assert a.overage >= 0
        if a.session.level == 3:
            assert a.daily == 0
            assert "vip" not in a.banks
        per_day[a.session.day] = per_day.get(a.session.day, 0) + a.daily
    assert all(v <= 30 * users for v in per_day.values())
    for bank in banks:
        used = sum(a.banks.get(bank.key, 0) for a in allocs)
        assert left[bank.key] >= 0
        assert used + left[bank.key] == bank.minutes
        if left[bank.key] > 0:  # a bank with time left means nothing eligible was billed
            assert not any(a.overage and (a.session.level != 3 or bank.covers_level_3)
                           for a in allocs)
