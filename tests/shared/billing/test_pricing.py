"""R10.2 usage pricing: worked examples by hand at the tier boundaries, sub-cent prices, and
properties over random quantities and tiers."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.money import round_fraction
from shared.billing.pricing import (
    Pricing,
    Tier,
    billable,
    graduated,
    graduated_uses,
    package,
    packages,
    volume,
    volume_tier,
)

pytestmark = pytest.mark.unit

D = Decimal
# 0.002 up to 1,000 units, 0.001 up to 10,000 (flat 5.00 once reached), then 0.0005.
TIERS = (Tier(D(1000), D("0.002")), Tier(D(10000), D("0.001"), D("5.00")),
         Tier(None, D("0.0005")))


def test_billable_is_never_negative() -> None:
    assert billable(D(90), D(100)) == 0
    assert billable(D(100), D(100)) == 0
    assert billable(D(101), D(100)) == 1


def test_per_unit_with_a_sub_cent_price_rounds_once() -> None:
    # 1,001 × 0.002 = 2.002 -> 2.00; 1,003 × 0.002 = 2.006 -> 2.01; 2,500 × 0.002 = 5.00
    pricing = Pricing("per_unit", unit_price=D("0.002"))
    assert pricing.amount(D(1001), "EUR") == D("2.00")
    assert pricing.amount(D(1003), "EUR") == D("2.01")
    assert pricing.amount(D(2500), "EUR") == D("5.00")
    # 2.5 units × 0.001 = 0.0025 -> 0.00; half a cent: 5 × 0.001 = 0.005 -> 0.01 (half up)
    assert pricing.amount(D(0), "EUR") == D("0.00")
    assert Pricing("per_unit", unit_price=D("0.001")).amount(D(5), "EUR") == D("0.01")


def test_graduated_at_and_past_a_tier_boundary() -> None:
    # exactly 1,000: all in tier 1: 1,000 × 0.002 = 2.00, tier 2 not reached (no flat)
    assert graduated(D(1000), TIERS) == Fraction(2)
    # 1,001: 2.00 + 1 × 0.001 + 5.00 (tier 2 reached) = 7.001 -> 7.00
    assert graduated(D(1001), TIERS) == Fraction(7001, 1000)
    # exactly 10,000: 2.00 + 9,000 × 0.001 + 5.00 = 16.00
    assert graduated(D(10000), TIERS) == Fraction(16)
    # 10,001: 16.00 + 0.0005 = 16.0005 -> 16.00 (rounded once, below the half cent)
    assert graduated(D(10001), TIERS) == Fraction(160005, 10000)
    assert round_fraction(graduated(D(10001), TIERS), "EUR") == D("16.00")
    # 10,010: 16.00 + 10 × 0.0005 = 16.005 -> 16.01 (half away from zero)
    assert round_fraction(graduated(D(10010), TIERS), "EUR") == D("16.01")
    assert [u.units for u in graduated_uses(D(1001), TIERS)] == [D(1000), D(1)]


def test_volume_at_and_past_a_tier_boundary() -> None:
    # 1,000 falls in tier 1: 1,000 × 0.002 = 2.00
    assert volume_tier(D(1000), TIERS) == 0
    assert volume(D(1000), TIERS) == Fraction(2)
    # 1,001 falls in tier 2: every unit at 0.001 + 5.00 = 6.001 (cheaper per unit)
    assert volume(D(1001), TIERS) == Fraction(6001, 1000)
    # 10,001 in tier 3: 10,001 × 0.0005 = 5.0005 -> 5.00
    assert round_fraction(volume(D(10001), TIERS), "EUR") == D("5.00")
    assert volume(D(0), TIERS) == 0


def test_package_rounds_the_packages_up() -> None:
    # packages of 1,000 at 1.50: 1 -> 1 package; 1,000 -> 1; 1,001 -> 2; 0 -> none
    assert packages(D(1), D(1000)) == 1
    assert packages(D(1000), D(1000)) == 1
    assert packages(D(1001), D(1000)) == 2
    assert package(D(1001), D(1000), D("1.50")) == Fraction(3)
    assert package(D(0), D(1000), D("1.50")) == 0


def test_included_quantity_comes_off_first() -> None:
    # 10,000 included, then 0.002 up to 100,000 and 0.001 after (the API example):
    # 150,000 used -> 140,000 billable: 100,000 × 0.002 + 40,000 × 0.001 = 240.00
    pricing = Pricing("graduated", included=D(10000),
                      tiers=(Tier(D(100000), D("0.002")), Tier(None, D("0.001"))))
    assert pricing.amount(D(150000), "EUR") == D("240.00")
    assert pricing.amount(D(9000), "EUR") == D("0.00")


prices = st.decimals(min_value=0, max_value=10, places=4)
units = st.decimals(min_value=0, max_value=10**6, places=0)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 10**5), min_size=0, max_size=4)))
    tiers = [Tier(D(b), draw(prices), draw(prices)) for b in bounds]
    return (*tiers, Tier(None, draw(prices), draw(prices)))


@given(units, tier_lists())
def test_graduated_is_the_sum_of_its_tiers(quantity: Decimal, tiers: tuple[Tier, ...]) -> None:
    uses = graduated_uses(quantity, tiers)
    assert sum(u.units for u in uses) == quantity
    by_hand = Fraction(0)
    floor = D(0)
    for tier in tiers:  # each tier on its own: the units between its bounds
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        if top > floor:
            by_hand += Fraction(top - floor) * Fraction(tier.unit_price) + Fraction(tier.flat)
        if tier.up_to is None or quantity <= tier.up_to:
            break
        floor = tier.up_to
    assert graduated(quantity, tiers) == by_hand


@given(units, tier_lists())
def test_volume_charges_one_unit_price_per_tier(quantity: Decimal,
                                                tiers: tuple[Tier, ...]) -> None:
    index = volume_tier(quantity, tiers)
    low = D(0) if index == 0 else tiers[index - 1].up_to
    assert low is not None
    assert quantity == 0 or quantity > low
    tier = tiers[index]
    # every quantity in the same tier pays the same unit price: the amount is affine in it
    if quantity > 0:
        assert volume(quantity, tiers) == (Fraction(quantity) * Fraction(tier.unit_price)
                                           + Fraction(tier.flat))
        if tier.up_to is None or quantity + 1 <= tier.up_to:
            step = volume(quantity + 1, tiers) - volume(quantity, tiers)
            assert step == Fraction(tier.unit_price)


@given(units, units, st.integers(1, 5000), prices)
def test_package_is_monotonic(a: Decimal, b: Decimal, size: int, price: Decimal) -> None:
    low, high = sorted((a, b))
    assert package(low, D(size), price) <= package(high, D(size), price)


@given(units, units, tier_lists(), st.sampled_from(["graduated", "volume"]))
def test_never_negative_and_rounded_once(quantity: Decimal, included: Decimal,
                                         tiers: tuple[Tier, ...], model: str) -> None:
    pricing = Pricing("graduated" if model == "graduated" else "volume", included=included,
                      tiers=tiers)
    exact = pricing.exact(quantity)
    assert exact >= 0
    amount = pricing.amount(quantity, "EUR")
    assert amount >= 0
    assert amount.as_tuple().exponent == -2
    # rounded once: within half a cent of the exact amount, and the same as rounding it
    assert abs(Fraction(amount) - exact) <= Fraction(1, 200)
    assert amount == round_fraction(exact, "EUR")


@given(units, units, prices)
def test_per_unit_is_billable_times_price(quantity: Decimal, included: Decimal,
                                          price: Decimal) -> None:
    pricing = Pricing("per_unit", included=included, unit_price=price)
    assert pricing.exact(quantity) == Fraction(billable(quantity, included)) * Fraction(price)
