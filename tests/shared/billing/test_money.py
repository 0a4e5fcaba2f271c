"""R3 money: Decimal only, line amounts rounded once half-up, tax once per invoice.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.money import (
    Totals,
    format_money,
    invoice_totals,
    line_amount,
    minor_unit,
    parse_money,
    round_money,
)

pytestmark = pytest.mark.unit

D = Decimal


# --- minor units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("EUR", 2), ("USD", 2), ("GBP", 2), ("CHF", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3),
     ("BHD", 3), ("TND", 3), ("XYZ", 2), ("eur", 2), ("jpy", 0)],
)  # fmt: skip
def test_r3_2_minor_units(currency: str, digits: int) -> None:
    assert minor_unit(currency) == digits


# --- round_money: half-up (away from zero) ---------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (D("2.675"), "EUR", D("2.68")),  # exact half → up (binary float 2.675 would give 2.67)
        (D("-2.675"), "EUR", D("-2.68")),  # half away from zero
        (D("2.665"), "EUR", D("2.67")),  # half-up, not half-even (banker's would give 2.66)
        (D("0.005"), "EUR", D("0.01")),
        (D("0.004999"), "EUR", D("0.00")),
        (D("-0.004"), "EUR", D("0.00")),  # no negative zero
        (D("11.6129"), "EUR", D("11.61")),
        (D("1.5"), "JPY", D("2")),
        (D("2.5"), "JPY", D("3")),  # half-even would give 2
        (D("1499.5"), "KRW", D("1500")),
        (D("1.2345"), "KWD", D("1.235")),  # 4th digit 5, nothing after → up
        (D("1.2344999"), "TND", D("1.234")),
        (D("7"), "EUR", D("7.00")),
        (D("1E+3"), "EUR", D("1000.00")),
    ],
)
def test_r3_2_round_money_half_up(amount: Decimal, currency: str, expected: Decimal) -> None:
    result = round_money(amount, currency)
    assert result == expected
    assert result.as_tuple().exponent == -minor_unit(currency)
    assert not result.is_signed() or result != 0


def test_r3_1_round_money_rejects_float_and_nan() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        round_money(2.675, "EUR")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        round_money(D("NaN"), "EUR")
    with pytest.raises(ValueError, match="finite"):
        round_money(D("-Infinity"), "EUR")


def test_r3_2_round_money_ignores_decimal_context_precision() -> None:
    # 12345678901234567890.125 has 23 significant digits; with a 5-digit context a naive
    # quantize would fail or round early. Half-up at the 2nd decimal: ...890.13
    with localcontext() as ctx:
        ctx.prec = 5
        assert round_money(D("12345678901234567890.125"), "EUR") == D("12345678901234567890.13")


@pytest.mark.parametrize(("amount", "currency", "text"), [
    # A positive exponent: 1E+50 is 1 followed by 50 zeros, then the minor unit's zeros.
    ("1E+50", "EUR", "1" + "0" * 50 + ".00"),
    ("-25E+30", "KWD", "-25" + "0" * 30 + ".000"),
    ("7E+3", "JPY", "7000"),
])
def test_r3_2_round_money_of_an_amount_written_with_a_positive_exponent(
        amount: str, currency: str, text: str) -> None:
    assert str(round_money(D(amount), currency)) == text
    assert str(line_amount(D(amount), D("1"), currency)) == text


@given(mantissa=st.integers(-10**12, 10**12), exponent=st.integers(-30, 60),
       currency=st.sampled_from(["EUR", "JPY", "KWD"]))
def test_r3_2_property_round_money_agrees_with_exact_rationals(
        mantissa: int, exponent: int, currency: str) -> None:
    amount = D(mantissa).scaleb(exponent)
    step = Fraction(1, 10 ** minor_unit(currency))
    exact = Fraction(amount) / step  # in minor units
    units = math.floor(abs(exact) + Fraction(1, 2)) * (1 if exact >= 0 else -1)
    assert Fraction(round_money(amount, currency)) == units * step


# --- line_amount: rounded once ---------------------------------------------------------------


def test_r3_2_line_amount_simple_product() -> None:
    # 7 × 1.234567 = 8.641969 → 8.64
    assert line_amount(D(7), D("1.234567"), "EUR") == D("8.64")


def test_r3_2_line_amount_rounded_once_not_unit_price_first() -> None:
    # 3 × 0.335 = 1.005 → 1.01 (rounding the unit price first would give 3 × 0.34 = 1.02)
    assert line_amount(D(3), D("0.335"), "EUR") == D("1.01")
    # 3 × 0.333333 = 0.999999 → 1.00
    assert line_amount(D(3), D("0.333333"), "EUR") == D("1.00")


def test_r3_2_line_amount_factor_not_rounded_before() -> None:
    # R4.2: 1 × 30.00 × 12/31 = 360/31 = 11.6129… → 11.61
    # (rounding the factor first, 12/31 ≈ 0.39, would give 11.70)
    assert line_amount(D(1), D("30.00"), "EUR", Fraction(12, 31)) == D("11.61")
    # 2 × 10.00 × 1/3 = 20/3 = 6.666… → 6.67 (rounding 10/3 = 3.33 first would give 6.66)
    assert line_amount(D(2), D("10.00"), "EUR", Fraction(1, 3)) == D("6.67")
    # Decimal factor: 4 × 2.50 × 0.5 = 5.00
    assert line_amount(D(4), D("2.50"), "EUR", D("0.5")) == D("5.00")
    # JPY: 3 × 333 × 1/2 = 499.5 → 500
    assert line_amount(D(3), D(333), "JPY", Fraction(1, 2)) == D("500")


def test_r3_1_line_amount_rejects_floats() -> None:
    with pytest.raises(TypeError, match="quantity"):
        line_amount(1.5, D("1"), "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factor"):
        line_amount(D(1), D("1"), "EUR", 0.5)  # type: ignore[arg-type]


def _oracle_half_up(exact: Fraction, digits: int) -> Decimal:
    """Independent oracle: sign × floor(|x| × 10^d + 1/2), built as a string."""
    scaled = abs(exact) * 10**digits
    units = math.floor(scaled + Fraction(1, 2))
    sign = "-" if exact < 0 and units != 0 else ""
    if digits == 0:
        return Decimal(f"{sign}{units}")
    text = str(units).rjust(digits + 1, "0")
    return Decimal(f"{sign}{text[:-digits]}.{text[-digits:]}")


decimals_6 = st.decimals(
    min_value=D("-1000000"), max_value=D("1000000"), places=6, allow_nan=False,
    allow_infinity=False,
)  # fmt: skip
currencies = st.sampled_from(["EUR", "JPY", "KWD", "USD", "XXX"])


@given(q=decimals_6, p=decimals_6, currency=currencies)
def test_r3_2_property_line_amount_is_exact_product_rounded_half_up(
    q: Decimal, p: Decimal, currency: str
) -> None:
    digits = {"EUR": 2, "JPY": 0, "KWD": 3, "USD": 2, "XXX": 2}[currency]
    expected = _oracle_half_up(Fraction(q) * Fraction(p), digits)
    assert line_amount(q, p, currency) == expected
    # Second oracle: the product is exact in a 60-digit context, then Decimal's own
    # ROUND_HALF_UP quantize.
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.rounding = ROUND_HALF_UP
        assert line_amount(q, p, currency) == (q * p).quantize(D(1).scaleb(-digits))


@given(
    q=decimals_6,
    p=decimals_6,
    num=st.integers(min_value=0, max_value=400),
    den=st.integers(min_value=1, max_value=400),
    currency=currencies,
)
def test_r3_2_property_line_amount_with_fraction_factor(
    q: Decimal, p: Decimal, num: int, den: int, currency: str
) -> None:
    digits = {"EUR": 2, "JPY": 0, "KWD": 3, "USD": 2, "XXX": 2}[currency]
    factor = Fraction(num, den)
    expected = _oracle_half_up(Fraction(q) * Fraction(p) * factor, digits)
    result = line_amount(q, p, currency, factor)
    assert result == expected
    assert result.as_tuple().exponent == -digits


# --- invoice totals --------------------------------------------------------------------------


def test_r3_2_invoice_totals_example() -> None:
    # subtotal = 11.61 + 30.00 + 0.05 = 41.66; tax = 41.66 × 0.20 = 8.332 → 8.33;
    # total = 41.66 + 8.33 = 49.99
    totals = invoice_totals([D("11.61"), D("30.00"), D("0.05")], D("0.20"), "EUR")
    assert totals == Totals(subtotal=D("41.66"), tax=D("8.33"), total=D("49.99"))


def test_r3_2_tax_rounded_once_per_invoice_not_per_line() -> None:
    # subtotal = 3 × 0.05 = 0.15; tax = 0.15 × 0.10 = 0.015 → 0.02 (half-up);
    # per-line rounding would give 3 × round(0.005) = 3 × 0.01 = 0.03.
    totals = invoice_totals([D("0.05")] * 3, D("0.10"), "EUR")
    assert totals == Totals(subtotal=D("0.15"), tax=D("0.02"), total=D("0.17"))


def test_r3_2_tax_half_up() -> None:
    # 1.25 × 0.10 = 0.125 → 0.13 (half-even would give 0.12); total 1.25 + 0.13 = 1.38
    totals = invoice_totals([D("1.25")], D("0.10"), "EUR")
    assert (totals.tax, totals.total) == (D("0.13"), D("1.38"))


def test_r3_2_invoice_totals_empty_and_jpy() -> None:
    assert invoice_totals([], D("0.2"), "EUR") == Totals(D("0.00"), D("0.00"), D("0.00"))
    # 1000 + 99 = 1099; tax 1099 × 0.10 = 109.9 → 110; total 1209
    assert invoice_totals([D(1000), D(99)], D("0.10"), "JPY") == Totals(
        D("1099"), D("110"), D("1209")
    )


def test_r3_2_invoice_totals_rejects_unrounded_lines_and_negative_vat() -> None:
    with pytest.raises(ValueError, match="not rounded"):
        invoice_totals([D("1.005")], D("0.2"), "EUR")
    with pytest.raises(ValueError, match="negative"):
        invoice_totals([D("1.00")], D("-0.2"), "EUR")


@given(
    lines=st.lists(
        st.decimals(min_value=-10000, max_value=10000, places=2, allow_nan=False,
                    allow_infinity=False),
        max_size=20,
    ),
    vat=st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False),
)  # fmt: skip
def test_r3_2_property_totals_consistent(lines: list[Decimal], vat: Decimal) -> None:
    totals = invoice_totals(lines, vat, "EUR")
    exact_subtotal = sum((Fraction(x) for x in lines), Fraction(0))
    assert Fraction(totals.subtotal) == exact_subtotal
    assert totals.tax == _oracle_half_up(exact_subtotal * Fraction(vat), 2)
    assert totals.total == totals.subtotal + totals.tax


# --- formatting and parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (D("11.61"), "EUR", "11.61"),
        (D("0"), "EUR", "0.00"),
        (D("-0.001"), "EUR", "0.00"),
        (D("11.6"), "EUR", "11.60"),
        (D("1E+3"), "EUR", "1000.00"),  # never exponent notation
        (D("1500"), "JPY", "1500"),
        (D("1.2345"), "KWD", "1.235"),
        (D("-3.5"), "USD", "-3.50"),
    ],
)
def test_r3_2_format_money(amount: Decimal, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("11.61", D("11.61")), ("-3", D(-3)), (" 0.000001 ", D("0.000001")), ("+5.0", D("5.0"))],
)
def test_r3_1_parse_money(text: str, expected: Decimal) -> None:
    result = parse_money(text)
    assert result == expected
    assert isinstance(result, Decimal)


@pytest.mark.parametrize(
    "bad", ["NaN", "nan", "inf", "-Infinity", "1e3", "1E-2", "", " ", "1.2.3", "1_000", ".5",
            "5.", "12,5", "0x10", "sNaN"],
)  # fmt: skip
def test_r3_1_parse_money_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid money"):
        parse_money(bad)


def test_r3_1_parse_money_rejects_float() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_money(11.61)  # type: ignore[arg-type]


@given(amount=decimals_6, currency=currencies)
def test_r3_property_format_parse_round_trip(amount: Decimal, currency: str) -> None:
    assert parse_money(format_money(amount, currency)) == round_money(amount, currency)
