"""The invoicing answers as the OpenAPI document describes them (docs/api.md, "Invoice").
Documentation only: the routes answer the stored documents as they are, so these models
never filter an answer; `extra="allow"` since a document may carry more than listed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_LINE: dict[str, Any] = {
    "module": "crm", "kind": "extra_users", "description": "3 extra users of crm",
    "quantity": "3", "unit_price": "15.00", "amount": "45.00",
    "period": {"from": "2026-11-01", "to": "2026-12-01"}, "source": {"meter": "crm_users"}}
# The invoice the document shows as an example; also what a PDF template is tried on at start.
EXAMPLE_INVOICE: dict[str, Any] = {
    "number": "INV-2026-000042", "kind": "period", "tenant": "acme",
    "issued_at": "2026-11-30T23:00:00Z", "billing_date": "2026-12-01",
    "period": {"from": "2026-12-01", "to": "2027-01-01"}, "currency": "EUR",
    "vat_rate": "0.20", "lines": [_LINE], "subtotal": "45.00", "tax": "9.00",
    "total": "54.00", "credit_notes": [], "status": "issued",
    "seller": {"legal_name": "Meterbill Demo SAS", "address": "1 rue de la Paix, Paris",
               "vat_id": "FR00123456789"},
    "buyer": {"legal_name": "Acme SAS", "address": "12 avenue des Champs, Paris",
              "vat_id": "FR12345678901", "email": "billing@acme.example"},
    "payment_terms_days": 30, "due_date": "2026-12-30"}


class Period(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from", examples=["2026-12-01"])
    to: str = Field(examples=["2027-01-01"])


class InvoiceLine(BaseModel):
    """One line; money and quantities as decimal strings (R3.1), provenance in `source`."""

    model_config = ConfigDict(extra="allow")
    module: str | None
    kind: str = Field(description="plan, pack, proration, one_time, support_contract, "
                      "support_renewal, extra_users, email_overage, support_overage, "
                      "adjustment; credit on a credit note")
    description: str
    quantity: str
    unit_price: str
    amount: str
    period: Period | None
    source: dict[str, Any]


class Party(BaseModel):
    model_config = ConfigDict(extra="allow")
    legal_name: str | None
    address: str | None = None
    vat_id: str | None = None


class CreditNoteRef(BaseModel):
    number: str
    amount: str
    issued_at: str
    reason: str


class Invoice(BaseModel):
    """An invoice (`kind` period or immediate) or a credit note (`kind` credit_note, which
    also names the invoice it `credits`, its `amount` and `reason`), amounts positive."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_INVOICE]})
    number: str | None = Field(description="null on an upcoming invoice")
    kind: str | None = Field(description="period, immediate or credit_note")
    tenant: str
    issued_at: str | None
    billing_date: str | None
    period: Period | None
    currency: str
    vat_rate: str | None = None
    lines: list[InvoiceLine]
    subtotal: str
    tax: str
    total: str
    credit_notes: list[CreditNoteRef] | None = Field(
        default=None, description="an invoice's credit notes (not on a credit note)")
    status: str | None = Field(default=None,
                               description="issued, partially_credited or credited")
    credits: str | None = Field(default=None, description="a credit note: the invoice")
    seller: Party | None = None
    buyer: Party | None = None
    payment_terms_days: int | None = None
    due_date: str | None = None


class UpcomingInvoice(Invoice):
    """What the next billing date would invoice from usage so far (`number` null)."""

    as_of: str = Field(description="the instant the usage was read up to")


class InvoicePage(BaseModel):
    """Invoices and credit notes, newest first, 100 a page; `next_cursor` null at the end."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"data": [EXAMPLE_INVOICE], "next_cursor": None}]})
    data: list[Invoice]
    next_cursor: str | None


class BillingRun(BaseModel):
    """What a billing run issued, and the tenants already billed for that date (R9.5)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"date": "2026-04-01", "issued": ["INV-2026-000042"], "skipped": ["acme"]}]})
    date: str
    issued: list[str]
    skipped: list[str]
