"""What the PDF template is given (services/invoicing/pdf.py, `document_view`), pure: dates
in the accounting zone, periods to their last day, amounts in the currency's minor units
(0 digits for JPY, 3 for KWD), VAT as a percentage, lines grouped by module in order.
Worked by hand in each docstring."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.invoicing.pdf import document_view, money_text, percent_text, period_text
from shared.billing.money import format_money, minor_unit

pytestmark = pytest.mark.unit

PARIS = ZoneInfo("Europe/Paris")  # read at import: a unit test opens no file
UTC_ZONE = ZoneInfo("UTC")


def _line(module: str | None, amount: str, period: dict[str, str] | None = None
          ) -> dict[str, Any]:
    return {"module": module, "kind": "plan", "description": f"line {module} {amount}",
            "quantity": "1", "unit_price": amount, "amount": amount, "period": period,
            "source": {}}


def _doc(currency: str, lines: list[dict[str, Any]], subtotal: str, tax: str, total: str,
         **more: Any) -> dict[str, Any]:
    return {"number": "INV-2027-000001", "kind": "period", "tenant": "acme",
            "issued_at": "2026-12-31T23:30:00Z", "period": None, "currency": currency,
            "vat_rate": "0.10", "lines": lines, "subtotal": subtotal, "tax": tax,
            "total": total, "seller": None, "buyer": None, "due_date": "2027-01-31", **more}


def test_amounts_keep_the_minor_units_of_their_currency() -> None:
    """JPY has no minor unit: 4900 + 490 = 5390. KWD has three: 49.000 + 4.900 = 53.900."""
    jpy = document_view(_doc("JPY", [_line(None, "4900")], "4900", "490", "5390"), UTC_ZONE)
    assert (jpy["subtotal"], jpy["tax"], jpy["total"]) == ("4900", "490", "5390")
    assert jpy["groups"][0]["lines"][0]["amount"] == "4900"
    kwd = document_view(_doc("KWD", [_line(None, "49.000")], "49.000", "4.900", "53.900"),
                        UTC_ZONE)
    assert (kwd["subtotal"], kwd["tax"], kwd["total"]) == ("49.000", "4.900", "53.900")
    assert (kwd["currency"], kwd["vat_percent"]) == ("KWD", "10")


@given(st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
       st.integers(min_value=-10**12, max_value=10**12))
def test_a_served_amount_prints_as_served(currency: str, minor: int) -> None:
    """Any amount the API serves (already in minor units) prints the same, with exactly the
    currency's digits after the point (none for JPY)."""
    served = format_money(Decimal(minor).scaleb(-minor_unit(currency)), currency)
    printed = money_text(served, currency)
    assert printed == served
    _, point, fraction = printed.partition(".")
    digits = minor_unit(currency)
    assert (point, len(fraction)) == (("." if digits else ""), digits)


@pytest.mark.parametrize(("rate", "percent"), [
    ("0.20", "20"), ("0.055", "5.5"), ("0", "0"), ("0.00", "0"), ("0.077", "7.7"),
    ("1", "100")])
def test_vat_rates_print_as_percentages(rate: str, percent: str) -> None:
    assert percent_text(rate) == percent


@pytest.mark.parametrize(("period", "printed"), [
    ({"from": "2026-03-01", "to": "2026-04-01"}, "2026-03-01 – 2026-03-31"),
    ({"from": "2028-02-01", "to": "2028-03-01"}, "2028-02-01 – 2028-02-29"),  # leap year
    ({"from": "2026-12-01", "to": "2027-01-01"}, "2026-12-01 – 2026-12-31"),
    ({"from": "2026-03-10", "to": "2026-03-11"}, "2026-03-10 – 2026-03-10"),  # one day
    (None, None)])
def test_a_period_prints_from_its_first_to_its_last_day(period: dict[str, str] | None,
                                                        printed: str | None) -> None:
    assert period_text(period) == printed


def test_the_issue_date_is_the_accounting_zones_and_lines_keep_their_groups() -> None:
    """Issued 2026-12-31T23:30Z: the 31st in UTC, already 1 January 2027 in Paris. Lines
    (sorted by module at issue, R9.1): none, none, crm, sales → groups General (2), crm,
    sales, in that order."""
    april = {"from": "2026-04-01", "to": "2026-05-01"}
    lines = [_line(None, "49.00", april), _line(None, "5.00"), _line("crm", "20.00", april),
             _line("sales", "15.00", april)]
    doc = _doc("EUR", lines, "89.00", "8.90", "97.90")
    assert document_view(doc, UTC_ZONE)["issue_date"] == "2026-12-31"
    view = document_view(doc, PARIS)
    assert view["issue_date"] == "2027-01-01"
    assert [(g["label"], [line["amount"] for line in g["lines"]]) for g in view["groups"]] == [
        ("General", ["49.00", "5.00"]), ("crm", ["20.00"]), ("sales", ["15.00"])]
    assert [line["period"] for line in view["groups"][0]["lines"]] == [
        "2026-04-01 – 2026-04-30", ""]
    assert (view["title"], view["credits"], view["seller"], view["buyer"]) == (
        "Invoice", None, None, None)


def test_a_credit_note_names_its_invoice_and_parties_keep_their_address_lines() -> None:
    seller = {"legal_name": "Seller SA", "address": "1 rue A\n\n75001 Paris",
              "vat_id": "FR001"}
    doc = _doc("EUR", [_line(None, "10.00")], "10.00", "1.00", "11.00", kind="credit_note",
               credits="INV-2026-000004", seller=seller,
               buyer={"legal_name": "acme", "address": None, "vat_id": None, "email": None})
    view = document_view(doc, UTC_ZONE)
    assert (view["title"], view["credits"]) == ("Credit note", "INV-2026-000004")
    assert view["seller"] == {"legal_name": "Seller SA",
                              "address_lines": ["1 rue A", "75001 Paris"],
                              "vat_id": "FR001", "email": None}
    assert view["buyer"] == {"legal_name": "acme", "address_lines": [], "vat_id": None,
                             "email": None}
