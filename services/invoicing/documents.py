"""The documents invoicing issues, as pure functions: an invoice rendered from its draft
(R9.1, R3.2), the tax inside a credit (R3.2), and the CSV export for finance.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from services.invoicing.models import CSV_COLUMNS, Draft, Line, period_json
from shared.billing.money import format_money, invoice_totals, round_fraction
from shared.times import utc_text


def render(draft: Draft, issued_at: datetime, number: str) -> dict[str, Any]:
    """The invoice document (docs/api.md "Invoice"), lines sorted by module (R9.1), totals R3.2."""
    lines = sorted(draft.lines, key=Line.sort_key)
    totals = invoice_totals([line.amount for line in lines], draft.vat_rate, draft.currency)
    rendered = []
    for line in lines:
        item = line.public(draft.currency)
        item["_meter"] = line.meter
        rendered.append(item)
    return {
        "number": number, "kind": draft.kind, "tenant": draft.tenant,
        "issued_at": utc_text(issued_at), "billing_date": None if draft.billing_date is None
        else draft.billing_date.isoformat(),
        "period": period_json(draft.period), "currency": draft.currency,
        "vat_rate": format(draft.vat_rate, "f"), "lines": rendered,
        "subtotal": format_money(totals.subtotal, draft.currency),
        "tax": format_money(totals.tax, draft.currency),
        "total": format_money(totals.total, draft.currency),
        "usage_cutoff": None if draft.usage_cutoff is None else utc_text(draft.usage_cutoff),
        **draft.extra,
    }


def compose_tax(gross: Decimal, vat: Decimal, currency: str) -> Decimal:
    """The tax inside a gross credit: gross × vat / (1 + vat), rounded once (R3.2)."""
    return round_fraction(Fraction(gross) * Fraction(vat) / (1 + Fraction(vat)), currency)


def minor_text(minor: int, digits: int) -> str:
    return format(Decimal(minor).scaleb(-digits), "f")


def to_csv(docs: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for doc in docs:
        for i, line in enumerate(doc.get("lines", []), start=1):
            period = line.get("period") or {}
            writer.writerow([
                doc["number"], doc["kind"], doc["tenant"], doc["issued_at"], doc["currency"],
                i, line.get("module") or "", line["kind"], line["description"],
                line["quantity"], line["unit_price"], line["amount"], period.get("from", ""),
                period.get("to", ""), doc["subtotal"], doc["tax"], doc["total"],
                orjson.dumps(line.get("source")).decode()])
    return out.getvalue()
