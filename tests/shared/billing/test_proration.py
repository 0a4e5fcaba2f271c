"""R4.2 proration: price × remaining_days / period_days, rounded once half-up (R3.2).

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.money import line_amount, round_money
from shared.billing.periods import Cycle, Period, period_boundary
from shared.billing.proration import (
    prorated_charge,
    proration_factor,
    remaining_days,
    upgrade_charge,
)

pytestmark = pytest.mark.unit

D = Decimal
MARCH_2026 = Period(date(2026, 3, 1), date(2026, 4, 1))  # 31 days


def test_r4_2_worked_example() -> None:
    # R4.2: 30.00, period 1–31 March (31 days), bought 20 March:
    # remaining = 20..31 March = 12 days; 30.00 × 12/31 = 360/31 = 11.6129… → 11.61
    assert remaining_days(MARCH_2026, date(2026, 3, 20)) == 12
    assert proration_factor(MARCH_2026, date(2026, 3, 20)) == Fraction(12, 31)
    assert prorated_charge(D("30.00"), MARCH_2026, date(2026, 3, 20), "EUR") == D("11.61")


def test_r4_2_first_and_last_day() -> None:
    # bought on the first day: 31/31 → the full price 30.00
    assert remaining_days(MARCH_2026, date(2026, 3, 1)) == 31
    assert prorated_charge(D("30.00"), MARCH_2026, date(2026, 3, 1), "EUR") == D("30.00")
    # bought on the last day (31 March): 1 day; 30.00 / 31 = 0.9677… → 0.97
    assert remaining_days(MARCH_2026, date(2026, 3, 31)) == 1
    assert prorated_charge(D("30.00"), MARCH_2026, date(2026, 3, 31), "EUR") == D("0.97")


def test_r4_2_purchase_day_outside_period_rejected() -> None:
    with pytest.raises(ValueError, match="outside the period"):
        remaining_days(MARCH_2026, date(2026, 4, 1))  # the end is excluded
    with pytest.raises(ValueError, match="outside the period"):
        prorated_charge(D("30.00"), MARCH_2026, date(2026, 2, 28), "EUR")


def test_r4_2_half_up() -> None:
    # P30D period 1–30 Jan 2026, bought 16 Jan: remaining 16..30 Jan = 15 days;
    # 0.03 × 15/30 = 0.015 → 0.02 (half-up; half-even would give 0.02 too, so also check 0.05:
    # 0.05 × 15/30 = 0.025 → 0.03, half-even would give 0.02)
    p30 = Period(date(2026, 1, 1), date(2026, 1, 31))
    assert p30.days == 30
    assert remaining_days(p30, date(2026, 1, 16)) == 15
    assert prorated_charge(D("0.03"), p30, date(2026, 1, 16), "EUR") == D("0.02")
    assert prorated_charge(D("0.05"), p30, date(2026, 1, 16), "EUR") == D("0.03")


def test_r4_2_month_end_anchor_period() -> None:
    # anchor 31 Jan 2026: period [31 Jan, 28 Feb) = 28 days; bought 14 Feb: 14..27 Feb = 14
    # days; 30.00 × 14/28 = 15.00
    period = Period(date(2026, 1, 31), date(2026, 2, 28))
    assert period.days == 28
    assert prorated_charge(D("30.00"), period, date(2026, 2, 14), "EUR") == D("15.00")


def test_r4_2_zero_decimal_currency() -> None:
    # 1000 JPY × 12/31 = 12000/31 = 387.09… → 387
    assert prorated_charge(D(1000), MARCH_2026, date(2026, 3, 20), "JPY") == D(387)


def test_r4_2_negative_price_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        prorated_charge(D("-1.00"), MARCH_2026, date(2026, 3, 20), "EUR")


def test_r4_2_upgrade_charge_worked_example() -> None:
    # plan 20.00 → 50.00 on 20 March: difference 30.00 × 12/31 → 11.61 (as the R4.2 example)
    assert upgrade_charge(D("20.00"), D("50.00"), MARCH_2026, date(2026, 3, 20), "EUR") == D(
        "11.61"
    )
    # same plan price: nothing to charge
    assert upgrade_charge(D("20.00"), D("20.00"), MARCH_2026, date(2026, 3, 20), "EUR") == D("0.00")


def test_r4_2_upgrade_prorates_the_difference_rounded_once() -> None:
    # 15 of 30 days, 0.01 → 0.02: (0.02 − 0.01) × 1/2 = 0.005 → 0.01 (rounded once).
    # Rounding each proration first would give 0.01 − round(0.005) = 0.01 − 0.01 = 0.00.
    p30 = Period(date(2026, 1, 1), date(2026, 1, 31))
    assert upgrade_charge(D("0.01"), D("0.02"), p30, date(2026, 1, 16), "EUR") == D("0.01")


def test_r4_5_downgrade_is_not_prorated() -> None:
    with pytest.raises(ValueError, match="downgrade"):
        upgrade_charge(D("50.00"), D("20.00"), MARCH_2026, date(2026, 3, 20), "EUR")


# --- properties -------------------------------------------------------------------------------


@st.composite
def periods(draw: st.DrawFn) -> Period:
    anchor = draw(st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)))
    cycle = draw(st.sampled_from(list(Cycle)))
    n = draw(st.integers(min_value=0, max_value=300))
    return Period(period_boundary(anchor, cycle, n), period_boundary(anchor, cycle, n + 1))


@st.composite
def period_and_day(draw: st.DrawFn) -> tuple[Period, date]:
    period = draw(periods())
    offset = draw(st.integers(min_value=0, max_value=period.days - 1))
    return period, period.start + timedelta(days=offset)


prices_6 = st.decimals(
    min_value=0, max_value=1_000_000, places=6, allow_nan=False, allow_infinity=False
)
prices_2 = st.decimals(
    min_value=0, max_value=1_000_000, places=2, allow_nan=False, allow_infinity=False
)


@given(price=prices_6, pd=period_and_day(), currency=st.sampled_from(["EUR", "JPY", "KWD"]))
def test_r4_2_property_never_negative_never_above_full_price(
    price: Decimal, pd: tuple[Period, date], currency: str
) -> None:
    period, day = pd
    charge = prorated_charge(price, period, day, currency)
    assert charge >= 0
    assert charge <= round_money(price, currency)  # factor ≤ 1 and rounding is monotone
    factor = proration_factor(period, day)
    assert 0 < factor <= 1
    assert (factor == 1) == (day == period.start)


@given(price=prices_2, pd=period_and_day())
def test_r4_2_property_price_with_minor_unit_digits_never_exceeded(
    price: Decimal, pd: tuple[Period, date]
) -> None:
    period, day = pd
    assert D(0) <= prorated_charge(price, period, day, "EUR") <= price


@given(price=prices_2, pd=period_and_day())
def test_r4_2_property_adjacent_partial_periods_add_up(
    price: Decimal, pd: tuple[Period, date]
) -> None:
    # Split the period at day d: buying on d pays for [d, end); the days before are [start, d).
    period, day = pd
    after = prorated_charge(price, period, day, "EUR")
    before = line_amount(D(1), price, "EUR", Fraction((day - period.start).days, period.days))
    assert abs(before + after - price) <= D("0.01")  # one minor unit per split


@given(
    price=prices_2,
    period=periods(),
    cuts=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8),
)
def test_r4_2_property_many_splits_add_up(price: Decimal, period: Period, cuts: list[int]) -> None:
    # k distinct split days cut the period into k + 1 segments; each segment's charge is off by
    # at most half a unit, so the total is within k units of the price.
    split_days = sorted(
        {period.start + timedelta(days=c % period.days) for c in cuts} - {period.start}
    )
    bounds = [period.start, *split_days, period.end]
    charges = [
        line_amount(D(1), price, "EUR", Fraction((b - a).days, period.days))
        for a, b in pairwise(bounds)
    ]
    if split_days:
        # the last segment is exactly a purchase on the last split day
        assert charges[-1] == prorated_charge(price, period, split_days[-1], "EUR")
    assert abs(sum(charges, D(0)) - price) <= D("0.01") * max(1, len(split_days))


@given(price=prices_6, pd=period_and_day())
def test_r4_2_property_later_purchase_never_costs_more(
    price: Decimal, pd: tuple[Period, date]
) -> None:
    period, day = pd
    if day + timedelta(days=1) < period.end:
        later = prorated_charge(price, period, day + timedelta(days=1), "EUR")
        assert later <= prorated_charge(price, period, day, "EUR")


@given(old=prices_6, extra=prices_6, pd=period_and_day())
def test_r4_2_property_upgrade_is_prorated_difference(
    old: Decimal, extra: Decimal, pd: tuple[Period, date]
) -> None:
    period, day = pd
    new = old + extra  # both have ≤ 6 places and < 10^7: exact in the default context
    charge = upgrade_charge(old, new, period, day, "EUR")
    assert charge == prorated_charge(extra, period, day, "EUR")
    assert D(0) <= charge <= round_money(extra, "EUR")
