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


@dataclass(frozen=True, slots=True)
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
        return line_order(self.module, self.kind, self.description)

    def public(self, currency: str) -> dict[str, Any]:
        """The line as documents show it (docs/api.md "Invoice")."""
        quantity, unit_price, amount = written(self.quantity, self.unit_price, self.amount,
                                               currency)
        return {"module": self.module, "kind": self.kind, "description": self.description,
                "quantity": quantity, "unit_price": unit_price, "amount": amount,
                "period": period_json(self.period), "source": self.source}


def line_order(module: str | None, kind: str, description: str) -> tuple[int, str, int, str]:
    """Where a line goes on its document: grouped by module (R9.1), module-less lines (plan,
    packs tied to no module) first."""
    return (0 if module is None else 1, module or "", _KIND_ORDER.get(kind, 9), description)


@dataclass(frozen=True, slots=True)
class Correction:
    """What an adjustment line (R9.4) of a (catalog, meter, module, recomputed, billed) is in
    any period: all of it but the period it names."""

    meter: str
    module: str | None
    corrects: str  # the meter before any '@rate'
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    written: tuple[str, str, str]  # quantity, unit price and amount as documents write them
    # The description either side of the period's dates.
    head: str
    tail: str

    def line(self, period: Period, source: dict[str, Any]) -> Line:
        """This correction's line for `period`, with the provenance `source`."""
        description = dated(self.head, period.start, period.end, self.tail)
        return Line(module=self.module, kind="adjustment", description=description,
                    quantity=self.quantity, unit_price=self.unit_price, amount=self.amount,
                    period=period, source=source, meter=self.meter)


def dated(head: str, start: date | str, end: date | str, tail: str) -> str:
    """An adjustment line's description: its period's dates (`YYYY-MM-DD`) between the
    words either side."""
    return f"{head}{start} – {end}{tail}"


@dataclass(slots=True)
class LineRun:
    """One correction dated over several periods, with one provenance: the adjustment lines
    of an old access grant, alike but for the period each names (R9.4). It stays one record
    from composition to storage (a document's `_runs`, one `invoice_lines` row) and becomes
    its lines where a document is served (`documents.served_lines`): a run of 36 periods
    is numbered, kept and written as one line, not 36."""

    correction: Correction
    source: dict[str, Any]
    periods: list[Period]

    def stored(self) -> dict[str, Any]:
        """The run as a document keeps it (`_runs`): its lines but their dates. The periods'
        dates stay `date`s until the document is written as JSON (orjson writes them
        `YYYY-MM-DD`, as `Period.public` does)."""
        c = self.correction
        quantity, unit_price, amount = c.written
        return {"module": c.module, "kind": "adjustment", "head": c.head, "tail": c.tail,
                "quantity": quantity, "unit_price": unit_price, "amount": amount,
                "source": self.source, "meter": c.meter,
                "periods": [(p.start, p.end) for p in self.periods]}


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
    # Adjustment lines kept as runs of periods (R9.4), beside `lines`.
    runs: list[LineRun] = field(default_factory=list)
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
