"""The documents invoicing issues (services/invoicing/documents.py): an invoice rendered from
its draft (R9.1 line order, R3.2 totals), the tax inside a gross credit (R3.2), minor units
as text, and the finance CSV. Every amount is worked out by hand in the docstring.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.invoicing.documents import (
    compose_tax,
    line_count,
    minor_text,
    render,
    served,
    to_csv,
)
from services.invoicing.models import (
    CSV_COLUMNS,
    Correction,
    Draft,
    Line,
    LineKind,
    LineRun,
    written,
)
from shared.billing.money import line_amount
from shared.billing.periods import Period

pytestmark = pytest.mark.unit

PARIS = ZoneInfo("Europe/Paris")  # read at import: a unit test opens no file
APRIL = Period(date(2026, 4, 1), date(2026, 5, 1))
MARCH = Period(date(2026, 3, 1), date(2026, 4, 1))
# The issue instant, as the service hands it over: UTC text (Paris midnight of 1 April 2026,
# UTC+2).
ISSUED = "2026-03-31T22:00:00Z"


def _line(kind: LineKind, module: str | None, quantity: str, price: str,
          currency: str = "EUR", period: Period | None = APRIL,
          description: str | None = None) -> Line:
    return Line.priced(module=module, kind=kind, description=description or f"{kind} {module}",
                       quantity=Decimal(quantity), unit_price=Decimal(price),
                       currency=currency, period=period,
                       source={"meter": kind, "module": module}, meter=f"m-{kind}")


def _draft(lines: list[Line], currency: str = "EUR", vat: str = "0.20",
           **fields: Any) -> Draft:
    return Draft(tenant="acme", kind="period", currency=currency, vat_rate=Decimal(vat),
                 period=APRIL, lines=lines, billing_date=date(2026, 4, 1), **fields)


def _period_invoice() -> Draft:
    """The lines of a period invoice, out of order."""
    return _draft([
        _line("support_overage", "support", "1.25", "120.00"),
        _line("email_overage", "emailing", "500", "0.002"),
        _line("plan", None, "1", "49.00"),
        _line("extra_users", "crm", "1", "9.00", period=MARCH),
        _line("pack", "crm", "2", "10.00"),
        _line("pack", "emailing", "1", "5.00"),
        _line("adjustment", "crm", "-1", "9.00", period=MARCH)])


# --- render (R9.1, R3.2) -----------------------------------------------------------------


def test_lines_are_grouped_by_module_module_less_first() -> None:
    """R9.1: the plan (no module) first; then by module, crm, emailing, support; within a
    module packs, then extra users, e-mail and support overage, adjustments last."""
    doc = render(_period_invoice(), ISSUED, "INV-2026-000042")
    assert [(x["module"], x["kind"]) for x in doc["lines"]] == [
        (None, "plan"), ("crm", "pack"), ("crm", "extra_users"), ("crm", "adjustment"),
        ("emailing", "pack"), ("emailing", "email_overage"), ("support", "support_overage")]


def test_totals_add_the_rounded_lines_and_tax_the_subtotal() -> None:
    """R3.2: 49.00 + 20.00 + 9.00 − 9.00 + 5.00 + 1.00 (500 × 0.002) + 150.00 (1.25 h ×
    120.00) = 225.00; VAT 20 % = 45.00; total 270.00."""
    doc = render(_period_invoice(), ISSUED, "INV-2026-000042")
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("225.00", "45.00", "270.00")
    by_kind = {x["kind"]: x for x in doc["lines"]}
    assert {k: (x["quantity"], x["unit_price"], x["amount"]) for k, x in by_kind.items()
            if k in ("support_overage", "email_overage", "adjustment")} == {
        "support_overage": ("1.25", "120.00", "150.00"),
        "email_overage": ("500", "0.002", "1.00"),
        "adjustment": ("-1", "9.00", "-9.00")}
    assert by_kind["adjustment"]["period"] == {"from": "2026-03-01", "to": "2026-04-01"}


def test_the_document_carries_its_header() -> None:
    """The issue instant is carried as given; the usage cutoff, 5 s after Paris midnight of
    1 April (UTC+2), is written in UTC: 2026-03-31T22:00:05Z. Extra fields are merged."""
    cutoff = datetime(2026, 4, 1, 0, 0, 5, tzinfo=PARIS)
    doc = render(_draft([_line("plan", None, "1", "49.00")], usage_cutoff=cutoff,
                        extra={"status": "issued"}), ISSUED, "INV-2026-000001")
    assert {k: doc[k] for k in ("number", "kind", "tenant", "issued_at", "billing_date",
                                "period", "currency", "vat_rate", "usage_cutoff",
                                "status")} == {
        "number": "INV-2026-000001", "kind": "period", "tenant": "acme",
        "issued_at": "2026-03-31T22:00:00Z", "billing_date": "2026-04-01",
        "period": {"from": "2026-04-01", "to": "2026-05-01"}, "currency": "EUR",
        "vat_rate": "0.20", "usage_cutoff": "2026-03-31T22:00:05Z", "status": "issued"}
    assert doc["_meters"] == ["m-plan"]


def test_the_tax_is_rounded_once_per_invoice() -> None:
    """R3.2: three lines of 0.10 at 25 % VAT: 0.30 × 0.25 = 0.075 → 0.08 (half-up), total
    0.38; rounding each line's tax (0.025 → 0.03) would give 0.09."""
    doc = render(_draft([_line("pack", "crm", "1", "0.10", description=f"p{i}")
                         for i in range(3)], vat="0.25"), ISSUED, "INV-2026-000002")
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("0.30", "0.08", "0.38")


def test_a_yen_invoice_has_no_decimals() -> None:
    """JPY has 0 minor digits: 1 × 1500 = 1500; 3 × 333 = 999; 0.5 × 3 = 1.5 → 2 (half-up).
    Subtotal 2501, VAT 10 % = 250.1 → 250, total 2751."""
    doc = render(_draft([_line("plan", None, "1", "1500", "JPY"),
                         _line("pack", "crm", "3", "333", "JPY"),
                         _line("support_overage", "support", "0.5", "3", "JPY")],
                        currency="JPY", vat="0.10"), ISSUED, "INV-2026-000003")
    assert [x["amount"] for x in doc["lines"]] == ["1500", "999", "2"]
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("2501", "250", "2751")


def test_a_kuwaiti_dinar_invoice_has_three_decimals() -> None:
    """KWD has 3 minor digits: 3 × 0.4115 = 1.2345 → 1.235 (half-up; half-even would give
    1.234); VAT 5 % = 0.06175 → 0.062; total 1.297."""
    doc = render(_draft([_line("pack", "crm", "3", "0.4115", "KWD")], currency="KWD",
                        vat="0.05"), ISSUED, "INV-2026-000004")
    assert doc["lines"][0]["amount"] == "1.235"
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("1.235", "0.062", "1.297")


def test_an_invoice_without_lines_totals_zero() -> None:
    doc = render(_draft([]), ISSUED, "INV-2026-000005")
    assert (doc["lines"], doc["subtotal"], doc["tax"], doc["total"]) == (
        [], "0.00", "0.00", "0.00")


# --- compose_tax (R3.2) ------------------------------------------------------------------


# --- runs of lines (R9.4) ----------------------------------------------------------------


def _correction(module: str | None, meter: str, quantity: str, price: str,
                currency: str = "EUR") -> Correction:
    q, p = Decimal(quantity), Decimal(price)
    amount = line_amount(q, p, currency)
    return Correction(meter, module, meter, q, p, amount, written(q, p, amount, currency),
                      f"late usage: {meter} for ", f" recomputed {quantity}, billed 0")


def _month(year: int, month: int) -> Period:
    return Period(date(year, month, 1),
                  date(year + month // 12, month % 12 + 1, 1))


def test_a_run_is_kept_as_one_entry_and_served_as_its_lines() -> None:
    """An old access grant corrects January, February and March 2023 by one crm user at
    15.00 (one run), beside a plan line of 49.00: subtotal 49.00 + 3 × 15.00 = 94.00, VAT
    20 % = 18.80, total 112.80. Kept: the plan line and one run of three periods; served:
    four lines, the plan (no module) first, then crm's adjustments by their dates."""
    run = LineRun(_correction("crm", "extra_users", "1", "15.00"),
                  {"meter": "extra_users", "corrects": "extra_users", "late_event_ids": ["g"]},
                  [_month(2023, 1), _month(2023, 2), _month(2023, 3)])
    doc = render(_draft([_line("plan", None, "1", "49.00")], runs=[run]), ISSUED, "INV-1")
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("94.00", "18.80", "112.80")
    assert len(doc["lines"]) == 1
    assert doc["_runs"] == [{
        "module": "crm", "kind": "adjustment", "head": "late usage: extra_users for ",
        "tail": " recomputed 1, billed 0", "quantity": "1", "unit_price": "15.00",
        "amount": "15.00", "source": run.source, "meter": "extra_users",
        "periods": [(date(2023, 1, 1), date(2023, 2, 1)), (date(2023, 2, 1), date(2023, 3, 1)),
                    (date(2023, 3, 1), date(2023, 4, 1))]}]
    assert line_count(doc) == 4
    shown = served(orjson.loads(orjson.dumps(doc)))  # as ClickHouse gives it back
    assert served(dict(doc)) == shown  # as the preview serves it, just rendered
    assert "_runs" not in shown
    assert "_meters" not in shown
    assert [(x["kind"], x["description"], x["amount"], x["period"]) for x in shown["lines"]] == [
        ("plan", "plan None", "49.00", {"from": "2026-04-01", "to": "2026-05-01"}),
        ("adjustment", "late usage: extra_users for 2023-01-01 – 2023-02-01 recomputed 1, "
         "billed 0", "15.00", {"from": "2023-01-01", "to": "2023-02-01"}),
        ("adjustment", "late usage: extra_users for 2023-02-01 – 2023-03-01 recomputed 1, "
         "billed 0", "15.00", {"from": "2023-02-01", "to": "2023-03-01"}),
        ("adjustment", "late usage: extra_users for 2023-03-01 – 2023-04-01 recomputed 1, "
         "billed 0", "15.00", {"from": "2023-03-01", "to": "2023-04-01"})]


def test_a_run_of_one_period_is_a_line_like_the_others() -> None:
    """A correction of one period only (a late e-mail batch, say) is an ordinary line: the
    document keeps no run."""
    run = LineRun(_correction(None, "emails_sent", "500", "0.002"), {},
                  [_month(2023, 5)])
    doc = render(_draft([], runs=[run]), ISSUED, "INV-1")
    assert "_runs" not in doc
    assert [(x["description"], x["amount"]) for x in doc["lines"]] == [
        ("late usage: emails_sent for 2023-05-01 – 2023-06-01 recomputed 500, billed 0",
         "1.00")]
    assert doc["_meters"] == ["emails_sent"]


_corrections = st.builds(
    _correction, module=st.sampled_from([None, "crm", "sales"]),
    meter=st.sampled_from(["extra_users", "emails_sent", "support@90.00"]),
    quantity=st.sampled_from(["1", "-2", "0.25", "3"]),
    price=st.sampled_from(["15.00", "9.00", "0.002", "120.00"]),
    currency=st.just("EUR"))


@given(runs=st.lists(st.tuples(_corrections, st.lists(st.integers(0, 40), min_size=1,
                                                        max_size=12, unique=True)),
                     max_size=4),
       plain=st.lists(st.sampled_from([("plan", None, "1", "49.00"),
                                       ("pack", "crm", "2", "10.00"),
                                       ("extra_users", "sales", "1", "9.00"),
                                       ("adjustment", "crm", "-1", "9.00")]), max_size=4),
       vat=st.sampled_from(["0", "0.20", "0.055"]))
def test_runs_serve_exactly_the_lines_made_one_by_one(
        runs: list[tuple[Correction, list[int]]],
        plain: list[tuple[LineKind, str | None, str, str]], vat: str) -> None:
    """Any runs of any periods, with any other lines: the document served from what is kept
    has the lines, in the order, and the totals of the same document rendered with every
    period of every run made a line of its own. As late usage makes them, no two runs name
    the same period for the same meter and module."""
    made: list[LineRun] = []
    named: set[tuple[str, str | None, int]] = set()
    for n, (c, months) in enumerate(runs):
        mine = [m for m in months if (c.meter, c.module, m) not in named]
        named.update((c.meter, c.module, m) for m in mine)
        if mine:
            made.append(LineRun(c, {"k": n}, [_month(2020 + m // 12, m % 12 + 1)
                                              for m in mine]))
    lines = [_line(*x, description=f"{x[0]} {n}") for n, x in enumerate(plain)]
    one_by_one = [run.correction.line(p, run.source) for run in made for p in run.periods]
    kept = render(_draft(lines, vat=vat, runs=made), ISSUED, "INV-1")
    alone = render(_draft([*lines, *one_by_one], vat=vat), ISSUED, "INV-1")
    assert line_count(kept) == len(alone["lines"])
    assert served(orjson.loads(orjson.dumps(kept))) == served(orjson.loads(orjson.dumps(alone)))


@pytest.mark.parametrize(("gross", "vat", "currency", "tax"), [
    ("120.00", "0.20", "EUR", "20.00"),   # 120 × 0.2 / 1.2 = 20 exactly (net 100.00)
    ("58.80", "0.20", "EUR", "9.80"),     # 49.00 + 20 %, credited in full
    ("10.00", "0.20", "EUR", "1.67"),     # 10 × 0.2 / 1.2 = 1.666…
    ("100.00", "0.196", "EUR", "16.39"),  # 19.6 / 1.196 = 16.3879…
    ("0.01", "1", "EUR", "0.01"),         # 0.005: half → up (half-even: 0.00)
    ("0.03", "1", "EUR", "0.02"),         # 0.015 → 0.02, not 0.03 − round(0.015) = 0.01
    ("5.00", "0", "EUR", "0.00"),         # no VAT
    ("1100", "0.10", "JPY", "100"),       # 1100 × 0.1 / 1.1 = 100
    ("1000", "0.10", "JPY", "91"),        # 90.909… → 91
    ("10.000", "0.05", "KWD", "0.476"),   # 0.5 / 1.05 = 0.47619…
    ("2.000", "0.10", "BHD", "0.182"),    # 0.2 / 1.1 = 0.181818…
])
def test_the_tax_inside_a_gross_credit(gross: str, vat: str, currency: str,
                                       tax: str) -> None:
    """R3.2: gross × vat / (1 + vat), computed exactly, rounded once half-up to the
    currency's minor unit (0 digits for JPY, 3 for KWD and BHD)."""
    found = compose_tax(Decimal(gross), Decimal(vat), currency)
    assert str(found) == tax
    assert Decimal(gross) - found >= 0


MINOR_DIGITS = {"EUR": 2, "JPY": 0, "KWD": 3}


@given(minor=st.integers(0, 10**12), currency=st.sampled_from(sorted(MINOR_DIGITS)),
       vat=st.decimals(min_value=0, max_value=1, places=4))
def test_the_tax_never_exceeds_the_gross_and_is_off_by_at_most_half_a_unit(
        minor: int, currency: str, vat: Decimal) -> None:
    """0 ≤ tax ≤ gross, so the net (gross − tax) is never negative; the tax has exactly the
    currency's digits and lies within half a minor unit of the exact value."""
    digits = MINOR_DIGITS[currency]
    gross = Decimal(minor).scaleb(-digits)
    tax = compose_tax(gross, vat, currency)
    assert Decimal(0) <= tax <= gross
    assert tax.as_tuple().exponent == -digits
    exact = Fraction(gross) * Fraction(vat) / (1 + Fraction(vat))
    assert abs(Fraction(tax) - exact) * 2 * 10**digits <= 1


# --- minor_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(("minor", "digits", "text"), [
    (1500, 0, "1500"),     # JPY
    (0, 0, "0"),
    (1234, 3, "1.234"),    # KWD, BHD
    (7, 3, "0.007"),
    (0, 3, "0.000"),
    (5, 2, "0.05"),        # EUR
    (100, 2, "1.00"),
    (0, 2, "0.00"),
    (123456, 4, "12.3456"),  # CLF
])
def test_minor_units_as_plain_decimal_text(minor: int, digits: int, text: str) -> None:
    assert minor_text(minor, digits) == text


@given(minor=st.integers(0, 10**15), digits=st.sampled_from([0, 2, 3, 4]))
def test_minor_text_keeps_every_digit_and_no_exponent(minor: int, digits: int) -> None:
    text = minor_text(minor, digits)
    assert "E" not in text.upper()
    assert Decimal(text).scaleb(digits) == minor
    assert len(text.partition(".")[2]) == digits


# --- to_csv --------------------------------------------------------------------------------


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_csv_columns_are_the_finance_export_columns() -> None:
    header = _rows(to_csv([]))
    assert header == [["invoice", "kind", "tenant", "issued_at", "currency", "line", "module",
                       "line_kind", "description", "quantity", "unit_price", "amount",
                       "period_from", "period_to", "invoice_subtotal", "invoice_tax",
                       "invoice_total", "source", "due_date", "seller_legal_name",
                       "seller_vat_id", "buyer_legal_name", "buyer_vat_id"]]
    assert tuple(header[0]) == CSV_COLUMNS


def test_one_row_per_line_in_the_invoices_order() -> None:
    """The rendered period invoice (7 lines) gives 7 rows numbered 1..7 in render order,
    each carrying the invoice's totals 225.00 / 45.00 / 270.00."""
    doc = render(_period_invoice(), ISSUED, "INV-2026-000042")
    rows = _rows(to_csv([doc]))[1:]
    assert [(r[5], r[6], r[7]) for r in rows] == [
        ("1", "", "plan"), ("2", "crm", "pack"), ("3", "crm", "extra_users"),
        ("4", "crm", "adjustment"), ("5", "emailing", "pack"),
        ("6", "emailing", "email_overage"), ("7", "support", "support_overage")]
    assert {(r[0], r[1], r[2], r[3], r[4], r[14], r[15], r[16]) for r in rows} == {
        ("INV-2026-000042", "period", "acme", "2026-03-31T22:00:00Z", "EUR", "225.00",
         "45.00", "270.00")}
    adjustment = rows[3]
    assert adjustment[9:14] == ["-1", "9.00", "-9.00", "2026-03-01", "2026-04-01"]
    assert orjson.loads(adjustment[17]) == {"meter": "adjustment", "module": "crm"}


def test_several_documents_and_awkward_text() -> None:
    """A document without lines adds no row; a description with a comma, quotes and a new
    line comes back whole; a line without a period leaves both dates empty."""
    awkward = 'training "advanced", day 1\nand 2'
    first = render(_draft([_line("one_time", None, "1", "150.00", period=None,
                                 description=awkward)]), ISSUED, "INV-2026-000010")
    empty = render(_draft([]), ISSUED, "INV-2026-000011")
    last = render(_draft([_line("plan", None, "1", "49.00")]), ISSUED, "INV-2026-000012")
    text = to_csv([first, empty, last])
    rows = _rows(text)[1:]
    assert [(r[0], r[5]) for r in rows] == [("INV-2026-000010", "1"), ("INV-2026-000012", "1")]
    assert rows[0][8] == awkward
    assert rows[0][12:14] == ["", ""]
    assert rows[0][11] == "150.00"
    assert text.endswith("\n")
    assert "\r" not in text  # rows end with a bare new line
