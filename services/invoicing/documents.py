"""The documents invoicing issues, as pure functions: an invoice rendered from its draft
(R9.1, R3.2), the tax inside a credit (R3.2), and the CSV export for finance.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from services.invoicing.models import CSV_COLUMNS, Draft, Line, period_json
from shared.billing.money import format_money, invoice_totals, round_fraction
from shared.times import utc_text


def render(draft: Draft, issued_at: str, number: str) -> dict[str, Any]:
    """The invoice document (docs/api.md "Invoice"), lines sorted by module (R9.1), totals R3.2."""
    lines = sorted(draft.lines, key=Line.sort_key)
    totals = invoice_totals([line.amount for line in lines], draft.vat_rate, draft.currency)
    return {
        "number": number, "kind": draft.kind, "tenant": draft.tenant,
        "issued_at": issued_at, "billing_date": None if draft.billing_date is None
        else draft.billing_date.isoformat(),
        "period": period_json(draft.period), "currency": draft.currency,
        "vat_rate": format(draft.vat_rate, "f"),
        "lines": [line.public(draft.currency) for line in lines],
        # internal (never served): the meter each line was measured by, for invoice_lines
        "_meters": [line.meter for line in lines],
        "subtotal": format_money(totals.subtotal, draft.currency),
        "tax": format_money(totals.tax, draft.currency),
        "total": format_money(totals.total, draft.currency),
        "usage_cutoff": None if draft.usage_cutoff is None else utc_text(draft.usage_cutoff),
        **draft.extra,
    }


def credit_note(invoice: dict[str, Any], gross: Decimal, tax: Decimal, reason: str,
                number: str, issued_at: str) -> dict[str, Any]:
    """A credit note on `invoice` (R9.7): a document of its own, read and listed like an
    invoice, its amounts positive; one line, net of tax, naming the invoice it credits."""
    currency = invoice["currency"]
    net = format_money(gross - tax, currency)
    return {
        "number": number, "kind": "credit_note", "credits": invoice["number"],
        "invoice": invoice["number"], "tenant": invoice["tenant"], "issued_at": issued_at,
        "billing_date": None, "period": invoice.get("period"), "currency": currency,
        "vat_rate": invoice.get("vat_rate", "0"),
        "lines": [{"module": None, "kind": "credit",
                   "description": f"credit on {invoice['number']}: {reason}"[:1024],
                   "quantity": "1", "unit_price": net, "amount": net,
                   "period": invoice.get("period"),
                   "source": {"credits": invoice["number"], "reason": reason}}],
        "amount": format_money(gross, currency), "subtotal": net,
        "tax": format_money(tax, currency), "total": format_money(gross, currency),
        "reason": reason,
    }


def compose_tax(gross: Decimal, vat: Decimal, currency: str) -> Decimal:
    """The tax inside a gross credit: gross × vat / (1 + vat), rounded once (R3.2)."""
    return round_fraction(Fraction(gross) * Fraction(vat) / (1 + Fraction(vat)), currency)


def minor_text(minor: int, digits: int) -> str:
    return format(Decimal(minor).scaleb(-digits), "f")


def to_csv(docs: Sequence[dict[str, Any]]) -> str:
    """One row per line. A credit note's rows are negative (quantity, amount and its
    document's totals), so a month's rows sum to what was invoiced net of credits (R9.7).
    Documents come as served: `due_date` derived (legal.served); a document issued before
    legal mentions leaves their columns empty (R9.8)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for doc in docs:
        sign = _negated if doc["kind"] == "credit_note" else str
        mentions = _legal_columns(doc)
        for i, line in enumerate(doc.get("lines", []), start=1):
            period = line.get("period") or {}
            writer.writerow([
                doc["number"], doc["kind"], doc["tenant"], doc["issued_at"], doc["currency"],
                i, line.get("module") or "", line["kind"], line["description"],
                sign(line["quantity"]), line["unit_price"], sign(line["amount"]),
                period.get("from", ""), period.get("to", ""), sign(doc["subtotal"]),
                sign(doc["tax"]), sign(doc["total"]),
                orjson.dumps(line.get("source")).decode(), *mentions])
    return out.getvalue()


def _legal_columns(doc: dict[str, Any]) -> list[str]:
    seller = doc.get("seller") or {}
    buyer = doc.get("buyer") or {}
    return [doc.get("due_date") or "", seller.get("legal_name") or "",
            seller.get("vat_id") or "", buyer.get("legal_name") or "",
            buyer.get("vat_id") or ""]


def _negated(amount: str) -> str:
    """A decimal string's opposite, written the same way ("12.50" → "-12.50", "0.00" kept)."""
    value = Decimal(amount)
    return amount if value == 0 else format(-value, "f")
