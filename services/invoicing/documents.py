"""The documents invoicing issues, as pure functions: an invoice rendered from its draft
(R9.1, R3.2), the tax inside a credit (R3.2), and the CSV export for finance.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from services.invoicing.models import (
    CSV_COLUMNS,
    Draft,
    Line,
    dated,
    line_order,
    period_json,
)
from shared.billing.money import format_money, invoice_totals, round_fraction
from shared.times import utc_text


def render(draft: Draft, issued_at: str, number: str) -> dict[str, Any]:
    """The invoice document as kept (docs/api.md "Invoice", served by `served`), lines sorted
    by module (R9.1), totals R3.2. A run of lines (`Draft.runs`) of two periods or more is
    kept as one entry of `_runs`; one of a single period is a line like the others."""
    runs = [run for run in draft.runs if len(run.periods) > 1]
    lines = sorted([*draft.lines, *(run.correction.line(run.periods[0], run.source)
                                    for run in draft.runs if len(run.periods) == 1)],
                   key=Line.sort_key)
    amounts = [line.amount for line in lines]
    for run in runs:
        amounts.extend([run.correction.amount] * len(run.periods))
    totals = invoice_totals(amounts, draft.vat_rate, draft.currency)
    doc = {
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
    if runs:
        doc["_runs"] = [run.stored() for run in runs]
    return doc


def kept(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as ClickHouse keeps it: its lines' meters (`_meters`, or each line's
    `_meter` in a document rendered before `_meters`) dropped, which only `invoice_lines`
    needs; its runs (`_runs`) kept."""
    out = {k: v for k, v in doc.items() if k != "_meters"}
    if "_meters" not in doc and any("_meter" in line for line in doc.get("lines", [])):
        out["lines"] = [{k: v for k, v in line.items() if k != "_meter"}
                        for line in doc["lines"]]
    return out


def served(doc: dict[str, Any]) -> dict[str, Any]:
    """A kept document as served (docs/api.md "Invoice"): each run made its lines, every
    internal key (leading underscore) dropped. Changes `doc`."""
    if "_runs" in doc:
        doc["lines"] = served_lines(doc)
    for key in [k for k in doc if k.startswith("_")]:
        del doc[key]
    return doc


def served_lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A document's lines, its runs (`_runs`) each made one line per period, in the order
    `render` gives (R9.1): the lines a run stands for, as they would be one by one."""
    runs = doc.get("_runs")
    lines: list[dict[str, Any]] = doc.get("lines", [])
    if not runs:
        return lines
    lines = [*lines, *(line for run in runs for line in _run_lines(run))]
    return sorted(lines, key=lambda line: line_order(line["module"], line["kind"],
                                                     line["description"]))


def _run_lines(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A kept run's lines, as `models.Correction.line` makes each and `Line.public` shows it."""
    return [run_line(run, start, end) for start, end in run["periods"]]


def run_line(run: dict[str, Any], start: date | str, end: date | str) -> dict[str, Any]:
    """A kept run's line of the period [start, end): its dates are texts once read back,
    `date`s in a document just rendered."""
    return {"module": run["module"], "kind": run["kind"],
            "description": dated(run["head"], start, end, run["tail"]),
            "quantity": run["quantity"], "unit_price": run["unit_price"],
            "amount": run["amount"], "period": {"from": str(start), "to": str(end)},
            "source": run["source"]}


def line_count(doc: dict[str, Any]) -> int:
    """How many lines a kept document has, its runs' counted one per period."""
    return len(doc.get("lines", [])) + sum(len(run["periods"]) for run in doc.get("_runs", []))


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
