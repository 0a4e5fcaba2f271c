"""Invoicing models: invoice lines and documents, request bodies, and the CSV column order
(the tenant document it bills is shared.subscription's).

Money is `Decimal` in memory and a decimal string in JSON (R3.1); an issued invoice is an
immutable JSON document (R9.3), rendered once at issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.billing.money import format_money, line_amount
from shared.billing.periods import Period

# --- invoice lines and documents -----------------------------------------------------------

LineKind = Literal["plan", "pack", "proration", "one_time", "support_contract",
                   "support_renewal", "extra_users", "email_overage", "support_overage",
                   "adjustment", "usage", "minimum_commitment"]
InvoiceKind = Literal["period", "immediate"]
_KIND_ORDER: Final = {"plan": 0, "pack": 1, "proration": 2, "one_time": 3,
                      "support_contract": 3, "support_renewal": 3, "extra_users": 4,
                      "email_overage": 5, "support_overage": 6, "usage": 6,
                      "minimum_commitment": 7, "adjustment": 8}


def period_json(period: Period | None) -> dict[str, str] | None:
    return None if period is None else period.public()


def number_text(value: Decimal) -> str:
    """A quantity or unit price as a plain decimal string, without exponent."""
    text = format(value, "f")
    return text


def written(quantity: Decimal, unit_price: Decimal, amount: Decimal, currency: str
            ) -> tuple[str, str, str]:
    """A line's quantity, unit price and amount as its document writes them."""
    return number_text(quantity), number_text(unit_price), format_money(amount, currency)


# Not frozen, though never changed once made: a frozen dataclass's constructor costs three
# times as much, and a billing run makes tens of thousands of lines (late usage, R9.4).
@dataclass(slots=True)
class Line:
    """One invoice line (R9.1): amount already rounded once (R3.2), provenance (R9.6)."""

    module: str | None
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    period: Period | None
    source: dict[str, Any]
    meter: str = ""
    # The line as documents show it (`public`), when its maker wrote it already: late usage
    # dates one correction over dozens of periods (R9.4), each line shown as it is made.
    # Never changed once made, as the line itself.
    shown: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def priced(cls, *, module: str | None, kind: LineKind, description: str,
               quantity: Decimal, unit_price: Decimal, currency: str, period: Period | None,
               source: dict[str, Any], meter: str = "") -> Line:
        """A line whose amount is quantity × unit price, rounded once (R3.2): the one place
        composition rounds."""
        return cls(module=module, kind=kind, description=description, quantity=quantity,
                   unit_price=unit_price, amount=line_amount(quantity, unit_price, currency),
                   period=period, source=source, meter=meter)

    def sort_key(self) -> tuple[int, str, int, str]:
        # Grouped by module (R9.1): module-less lines (plan, packs tied to no module) first.
        return (0 if self.module is None else 1, self.module or "",
                _KIND_ORDER.get(self.kind, 9), self.description)

    def public(self, currency: str) -> dict[str, Any]:
        if self.shown is not None:
            return self.shown
        return shown_line(self.module, self.kind, self.description,
                          written(self.quantity, self.unit_price, self.amount, currency),
                          period_json(self.period), self.source)


def shown_line(module: str | None, kind: LineKind, description: str,
               texts: tuple[str, str, str], period: dict[str, str] | None,
               source: dict[str, Any]) -> dict[str, Any]:
    """A line as documents show it (docs/api.md "Invoice"); `texts` as `written` gives."""
    quantity, unit_price, amount = texts
    return {"module": module, "kind": kind, "description": description,
            "quantity": quantity, "unit_price": unit_price, "amount": amount,
            "period": period, "source": source}


@dataclass(slots=True)
class Draft:
    """An invoice before its number: what a billing date (or a purchase) produces."""

    tenant: str
    kind: InvoiceKind
    currency: str
    vat_rate: Decimal
    period: Period | None
    lines: list[Line]
    billing_date: date | None = None
    # The ClickHouse instant up to which usage was read (R9.4: later rows are "late").
    usage_cutoff: datetime | None = None
    key: str = ""  # idempotency key: the billing date, or the event id (R9.5)
    extra: dict[str, Any] = field(default_factory=dict)
    # Usage stored up to `usage_cutoff` is billed by this invoice: the next one bills what
    # is stored later as late usage (R9.4). Period invoices and late-usage invoices.
    advances_cutoff: bool = False


# The columns of an invoice's CSV (`Accept: text/csv`) and of the month's export. Readers
# may rely on their positions: new columns go at the end, never between.
CSV_COLUMNS: Final = ("invoice", "kind", "tenant", "issued_at", "currency", "line",
                      "module", "line_kind", "description", "quantity", "unit_price",
                      "amount", "period_from", "period_to", "invoice_subtotal", "invoice_tax",
                      "invoice_total", "source",
                      # R9.8: the legal mentions a ledger needs beside the amounts.
                      "due_date", "seller_legal_name", "seller_vat_id", "buyer_legal_name",
                      "buyer_vat_id")


# --- request bodies ------------------------------------------------------------------------


class BillingRunRequest(BaseModel):
    """`POST /v1/billing-runs` (docs/api.md): `date` defaults to today (UTC)."""

    model_config = ConfigDict(extra="forbid")
    date: str | None = Field(default=None, max_length=10)
    tenant: str | None = Field(default=None, min_length=1, max_length=128)


class CreditNoteRequest(BaseModel):
    """`POST /v1/invoices/{number}/credit-notes`: `amount` (gross, tax included) defaults to
    everything left to credit."""

    model_config = ConfigDict(extra="forbid")
    # Few enough digits that scaling to minor units stays exact in Decimal's 28 digits.
    amount: str | None = Field(default=None, max_length=24)
    reason: str = Field(default="", max_length=1000)
