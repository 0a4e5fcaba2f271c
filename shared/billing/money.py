"""Money arithmetic (R3): Decimal only, never binary floats.

Every rounding goes through exact rational arithmetic (``fractions.Fraction``) and is done
once, half-up (half away from zero, like ``decimal.ROUND_HALF_UP``), to the currency's minor
unit (R3.2). Results never depend on the ambient ``decimal`` context precision.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

__all__ = [
    "MINOR_UNITS",
    "Totals",
    "format_money",
    "invoice_totals",
    "line_amount",
    "minor_unit",
    "parse_money",
    "round_fraction",
    "round_money",
]

# ISO 4217 minor units (number of fractional digits). Currencies not listed use 2, the
# most common value (documented choice: R3 is silent on unknown codes).
MINOR_UNITS: dict[str, int] = {
    # 0 digits
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # 2 digits (explicit for the common ones; also the default)
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "INR": 2, "MAD": 2, "MXN": 2, "NOK": 2, "NZD": 2, "PLN": 2,
    "SEK": 2, "SGD": 2, "USD": 2, "ZAR": 2,
    # 3 digits
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # 4 digits
    "CLF": 4, "UYW": 4,
}  # fmt: skip
DEFAULT_MINOR_UNIT = 2

Number = Decimal | Fraction | int


def minor_unit(currency: str) -> int:
    """Fractional digits of ``currency`` (ISO 4217); unknown codes → 2."""
    return MINOR_UNITS.get(currency.strip().upper(), DEFAULT_MINOR_UNIT)


def _exact(value: Number, what: str) -> Fraction:
    """Exact value of a Decimal/Fraction/int; floats and non-finite values are refused (R3.1)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | Fraction | int):
        raise TypeError(f"{what} must be a Decimal, Fraction or int, not {type(value).__name__}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{what} must be finite, got {value}")
    return Fraction(value)


def round_fraction(value: Fraction, currency: str) -> Decimal:
    """Round an exact rational amount once, half-up, to the minor unit of ``currency`` (R3.2).

    The result is a Decimal whose exponent is exactly ``-minor_unit(currency)`` (``Decimal("0.00")``
    for zero, never ``-0.00``).
    """
    digits = minor_unit(currency)
    scaled = value * 10**digits
    magnitude = abs(scaled)
    units, remainder = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * remainder >= magnitude.denominator:  # half (or more) → away from zero
        units += 1
    sign = 1 if scaled < 0 and units != 0 else 0
    return Decimal((sign, tuple(int(c) for c in str(units)), -digits))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` half-up (away from zero) to the currency's minor unit (R3.2)."""
    if type(amount) is Decimal and amount.is_finite():
        return _round_decimal(amount, currency)
    return round_fraction(_exact(amount, "amount"), currency)


def line_amount(
    quantity: Decimal,
    unit_price: Decimal,
    currency: str,
    factor: Decimal | Fraction | int = 1,
) -> Decimal:
    """Invoice line amount = quantity × unit price × factor, rounded once (R3.2).

    The product is computed exactly (``factor`` is typically a proration ``Fraction`` such as
    12/31, R4.2); nothing is rounded before the single final half-up rounding.
    """
    if factor == 1 and type(quantity) is Decimal and type(unit_price) is Decimal \
            and quantity.is_finite() and unit_price.is_finite():
        return _decimal_product(quantity, unit_price, currency)
    exact = _exact(quantity, "quantity") * _exact(unit_price, "unit_price")
    return round_fraction(exact * _exact(factor, "factor"), currency)


def _decimal_product(quantity: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    """quantity × unit price rounded once, half away from zero: the same result as the exact
    rational path, in decimal arithmetic (the common case, many times faster). The context
    holds every digit of the product, so the product is exact and the rounding is the one."""
    digits = len(quantity.as_tuple().digits) + len(unit_price.as_tuple().digits)
    return _round_decimal(_exact_context(digits).multiply(quantity, unit_price), currency)


def _round_decimal(value: Decimal, currency: str) -> Decimal:
    """A finite Decimal rounded half away from zero to the minor unit; never -0.00."""
    step = _minor_step(currency)
    if value.same_quantum(step):  # already at the minor unit (a line's amount)
        return value if value else value.copy_abs()
    _, digits, exponent = value.as_tuple()
    # The quantized coefficient holds the digits and, for a positive exponent, its zeros.
    room = len(digits) + max(int(exponent), 0)
    rounded = value.quantize(step, context=_exact_context(room))
    return rounded if rounded else rounded.copy_abs()


@functools.lru_cache(maxsize=256)
def _minor_step(currency: str) -> Decimal:
    """The currency's minor unit as a Decimal exponent (0.01 for EUR), for `quantize`."""
    return Decimal((0, (1,), -minor_unit(currency)))


@functools.lru_cache(maxsize=256)
def _exact_context(digits: int) -> Context:
    """Room for `digits` digits and a rounding to any minor unit: nothing is lost before the
    one rounding, which is half away from zero (R3.2). Shared by every call asking for as
    many digits (a billing run prices tens of thousands of lines): no trap is set on the
    conditions an exact operation raises, so the flags it sets change no result."""
    return Context(prec=digits + 40, rounding=ROUND_HALF_UP, Emax=999_999, Emin=-999_999)


@dataclass(frozen=True, slots=True)
class Totals:
    """Invoice totals (R3.2): ``total == subtotal + tax``."""

    subtotal: Decimal
    tax: Decimal
    total: Decimal


def invoice_totals(line_amounts: Sequence[Decimal], vat_rate: Decimal, currency: str) -> Totals:
    """Subtotal = sum of the (already rounded) lines; tax = subtotal × VAT rounded once per
    invoice, half-up; total = subtotal + tax (R3.2).

    Raises ValueError if a line is not already rounded to the minor unit (lines are rounded
    once, by :func:`line_amount`) or if the VAT rate is negative.
    """
    vat = _exact(vat_rate, "vat_rate")
    if vat < 0:
        raise ValueError(f"vat_rate must not be negative, got {vat_rate}")
    step = _minor_step(currency)
    for i, line in enumerate(line_amounts):
        # At the minor unit already (every line's amount): rounding would give it back.
        if type(line) is Decimal and line.is_finite() and line.same_quantum(step):
            continue
        if round_money(line, currency) != line:
            raise ValueError(
                f"line_amounts[{i}]={line} is not rounded to the {currency} minor unit (R3.2)"
            )
    # Every line has the minor unit's digits at most: their sum is exact in a context that
    # holds 60 of them (so is the tax's product, in `line_amount`).
    subtotal = round_money(_sum(line_amounts), currency)
    tax = line_amount(subtotal, vat_rate, currency)  # R3.2: once per invoice
    total = round_money(_exact_context(60).add(subtotal, tax), currency)  # exact sum
    return Totals(subtotal=subtotal, tax=tax, total=total)


def _sum(amounts: Sequence[Decimal]) -> Decimal:
    context = _exact_context(60)
    total = Decimal(0)
    for amount in amounts:
        total = context.add(total, amount)
    return total


def format_money(d: Decimal, currency: str) -> str:
    """Plain decimal string with exactly the currency's minor-unit digits ("11.61", "0.00",
    "1500" for JPY, "1.235" for KWD). The amount is rounded half-up first (R3.2); no
    exponent notation, no thousands separator, no currency symbol.
    """
    return format(round_money(d, currency), "f")


_MONEY_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def parse_money(s: str) -> Decimal:
    """Parse a plain decimal string ("11.61", "-3", "0.000001") into an exact Decimal (R3.1).

    Accepted: optional sign, digits, optional ``.`` followed by digits; surrounding whitespace
    is ignored. Rejected with ValueError: floats (and any non-``str``), NaN, infinities,
    exponent notation, underscores, empty strings.
    """
    if not isinstance(s, str):
        raise ValueError(f"money must be given as a decimal string, not {type(s).__name__}")
    text = s.strip()
    if not _MONEY_RE.fullmatch(text):
        raise ValueError(f"invalid money amount: {s!r}")
    return Decimal(text)
