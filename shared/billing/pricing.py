"""Usage pricing models (R10.2): what a period's quantity of a meter costs, pure.

Every model starts from billable = max(0, quantity − included). Amounts are computed as exact
fractions and rounded once, half away from zero, to the currency's minor unit (R3.2), by
`shared.billing.money.round_fraction`: a unit price of 0.002 on 1,001 units is 2.002 before
the one rounding, never 0.00 × 1,001.

Choices the rules leave open, made here:
- nothing billable costs nothing: no tier is reached, so no flat fee is charged either;
- a tier holds the units above the previous tier's `up_to` up to and including its own, so
  a billable total exactly at `up_to` stays in that tier and one unit more reaches the next;
- quantities may be fractional (a SUM meter of decimals): a graduated tier then holds the
  fraction that falls in it, a package count is rounded up as for whole units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from shared.billing.money import round_fraction

Model = Literal["per_unit", "graduated", "volume", "package"]
MODELS: tuple[Model, ...] = ("per_unit", "graduated", "volume", "package")


@dataclass(frozen=True, slots=True)
class Tier:
    """Units up to `up_to` (None: without end) at `unit_price` each, plus `flat` once."""

    up_to: Decimal | None
    unit_price: Decimal
    flat: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class TierUse:
    """How much of one tier a quantity used, for the line's provenance (R9.6)."""

    index: int
    units: Decimal
    unit_price: Decimal
    flat: Decimal


def billable(quantity: Decimal, included: Decimal) -> Decimal:
    """The units beyond the included quantity, never negative."""
    return max(Decimal(0), quantity - included)


def per_unit(units: Decimal, unit_price: Decimal) -> Fraction:
    return Fraction(units) * Fraction(unit_price)


def graduated_uses(units: Decimal, tiers: Sequence[Tier]) -> list[TierUse]:
    """The tiers `units` reaches, each with the units that fall in it."""
    uses: list[TierUse] = []
    floor = Decimal(0)
    for index, tier in enumerate(tiers):
        if units <= floor:
            break
        top = units if tier.up_to is None else min(units, tier.up_to)
        uses.append(TierUse(index, top - floor, tier.unit_price, tier.flat))
        if tier.up_to is None:
            break
        floor = tier.up_to
    return uses


def graduated(units: Decimal, tiers: Sequence[Tier]) -> Fraction:
    """Each unit at the price of its tier, plus the flat fee of every tier reached."""
    return sum((Fraction(u.units) * Fraction(u.unit_price) + Fraction(u.flat)
                for u in graduated_uses(units, tiers)), Fraction(0))


def volume_tier(units: Decimal, tiers: Sequence[Tier]) -> int:
    """The index of the tier the whole billable total falls in."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or units <= tier.up_to:
            return index
    return len(tiers) - 1  # the catalog makes the last tier open-ended; kept total anyway


def volume(units: Decimal, tiers: Sequence[Tier]) -> Fraction:
    """Every unit at the price of the tier the total falls in, plus that tier's flat fee."""
    if units <= 0:
        return Fraction(0)
    tier = tiers[volume_tier(units, tiers)]
    return Fraction(units) * Fraction(tier.unit_price) + Fraction(tier.flat)


def packages(units: Decimal, size: Decimal) -> int:
    """⌈units ÷ size⌉, exactly."""
    if units <= 0:
        return 0
    ratio = Fraction(units) / Fraction(size)
    return -(-ratio.numerator // ratio.denominator)


def package(units: Decimal, size: Decimal, price: Decimal) -> Fraction:
    return packages(units, size) * Fraction(price)


@dataclass(frozen=True, slots=True)
class Pricing:
    """One usage charge's terms for one cycle: what `amount` needs."""

    model: Model
    included: Decimal = Decimal(0)
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None

    def exact(self, quantity: Decimal) -> Fraction:
        """The amount of `quantity`, before any rounding."""
        units = billable(quantity, self.included)
        if self.model == "per_unit":
            assert self.unit_price is not None  # the catalog checked it
            return per_unit(units, self.unit_price)
        if self.model == "graduated":
            return graduated(units, self.tiers)
        if self.model == "volume":
            return volume(units, self.tiers)
        assert self.package_size is not None
        assert self.package_price is not None
        return package(units, self.package_size, self.package_price)

    def amount(self, quantity: Decimal, currency: str) -> Decimal:
        """The line amount, rounded once (R3.2)."""
        return round_fraction(self.exact(quantity), currency)
