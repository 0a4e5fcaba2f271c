"""Proration of mid-period purchases and upgrades (R4.2).

``charge = price × remaining_days / period_days``, rounded once, half-up, to the currency's
minor unit (R3.2). Downgrades are never prorated: they take effect at the period end (R4.5).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

from shared.billing.money import line_amount
from shared.billing.periods import Period

__all__ = ["prorated_charge", "proration_factor", "remaining_days", "upgrade_charge"]


def remaining_days(period: Period, purchase_day: date) -> int:
    """Local days from ``purchase_day`` (included) to the period end (excluded) (R4.2).

    Raises ValueError if ``purchase_day`` is outside ``[period.start, period.end)``.
    """
    if not period.contains(purchase_day):
        raise ValueError(
            f"purchase day {purchase_day} is outside the period [{period.start}, {period.end})"
        )
    return (period.end - purchase_day).days


def proration_factor(period: Period, purchase_day: date) -> Fraction:
    """Exact ``remaining_days / period_days`` (R4.2), in ``(0, 1]``."""
    return Fraction(remaining_days(period, purchase_day), period.days)


def prorated_charge(price: Decimal, period: Period, purchase_day: date, currency: str) -> Decimal:
    """Immediate charge for a recurring item bought on ``purchase_day`` (R4.2).

    ``price × remaining_days / period_days``, rounded once (R3.2). Example (R4.2): 30.00,
    period 2026-03-01..2026-04-01, bought 2026-03-20 → 30.00 × 12/31 = 11.61.
    Raises ValueError for a negative price.
    """
    if price < 0:
        raise ValueError(f"price must not be negative, got {price}")
    return line_amount(Decimal(1), price, currency, proration_factor(period, purchase_day))


def upgrade_charge(
    old_price: Decimal, new_price: Decimal, period: Period, day: date, currency: str
) -> Decimal:
    """Immediate charge for moving to a higher plan on ``day`` (R4.2).

    The prorated *difference* of the two plan prices, rounded once (not the difference of two
    rounded prorations). Raises ValueError if ``new_price < old_price``: that is a downgrade,
    which takes effect at the period end without charge or credit (R4.5).
    """
    for name, value in (("old_price", old_price), ("new_price", new_price)):
        if not isinstance(value, Decimal) or not value.is_finite():
            raise TypeError(f"{name} must be a finite Decimal (R3.1), got {value!r}")
    if new_price < old_price:
        raise ValueError(
            f"new price {new_price} is below old price {old_price}: a downgrade takes effect "
            "at the period end (R4.5)"
        )
    if old_price < 0:
        raise ValueError(f"price must not be negative, got {old_price}")
    # The difference is taken exactly (Fraction, no Decimal context rounding) and rounded
    # only once, together with the proration factor (R3.2).
    factor = proration_factor(period, day)
    exact_diff = Fraction(new_price) - Fraction(old_price)
    return line_amount(Decimal(1), Decimal(1), currency, exact_diff * factor)
