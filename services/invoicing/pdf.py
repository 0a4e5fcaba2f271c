"""Invoices and credit notes as PDF (R9.8), typeset by Typst from a template file.

`document_view` (pure) turns a document as served into what the template prints: display
strings only (dates, periods with their last day, amounts in the currency's minor units,
lines grouped by module), beside the document itself for a vendor template that wants more.
`DocumentRenderer` compiles a template with that view.

The view reaches Typst as JSON in `sys.inputs`, never as Typst source: a template prints
each value as text, so a legal name or a description holding Typst markup (`#eval(...)`,
`*bold*`) prints as written and runs nothing. The template is the operator's (the packaged
one, or `INVOICING_DOCUMENT_TEMPLATE`), trusted like any configuration; its own folder is its
Typst root (a logo beside it can be included) and where fonts of its own are looked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from itertools import groupby
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
import typst

from services.invoicing import legal
from services.invoicing.answers import EXAMPLE_INVOICE
from shared.billing.money import format_money
from shared.times import from_utc_text

PACKAGED_TEMPLATE: Final = Path(__file__).resolve().parent / "templates" / "invoice.typ"
# Typst is CPU-bound and synchronous: documents are compiled on threads of their own, two
# at a time at most, so a burst of downloads neither blocks the event loop nor takes the
# threads other work runs on.
COMPILE_THREADS: Final = 2
GENERAL_GROUP: Final = "General"  # the label of lines tied to no module (plan, credit)

Document = dict[str, Any]


def document_view(doc: Document, accounting_zone: ZoneInfo) -> dict[str, Any]:
    """What a template prints of `doc` (an invoice or a credit note as served)."""
    currency = doc["currency"]
    credit_note = doc["kind"] == "credit_note"
    issued_on = legal.issue_date(doc, accounting_zone)
    return {
        "title": "Credit note" if credit_note else "Invoice",
        "number": doc["number"],
        "kind": doc["kind"],
        "credits": doc.get("credits") if credit_note else None,
        "issue_date": None if issued_on is None else issued_on.isoformat(),
        "due_date": doc.get("due_date"),
        "period": period_text(doc.get("period")),
        "currency": currency,
        "seller": _party(doc.get("seller")),
        "buyer": _party(doc.get("buyer")),
        "groups": list(_groups(doc.get("lines", []), currency)),
        "vat_percent": percent_text(doc.get("vat_rate") or "0"),
        "subtotal": money_text(doc["subtotal"], currency),
        "tax": money_text(doc["tax"], currency),
        "total": money_text(doc["total"], currency),
        "document": doc,
    }


def money_text(amount: str, currency: str) -> str:
    """An amount with exactly the currency's minor-unit digits ("1500" JPY, "1.235" KWD)."""
    return format_money(Decimal(amount), currency)


def percent_text(rate: str) -> str:
    """A VAT rate as a percentage: "0.20" → "20", "0.055" → "5.5", "0" → "0"."""
    percent = Decimal(rate) * 100
    text = format(percent.normalize(), "f")
    return text


def period_text(period: dict[str, str] | None) -> str | None:
    """A period as printed, from its first to its last day: the API's `to` is the day after
    the period (2026-03-01 → 2026-04-01 prints "2026-03-01 – 2026-03-31")."""
    if not period:
        return None
    last = date.fromisoformat(period["to"]) - timedelta(days=1)
    return f"{period['from']} – {last.isoformat()}"


def _party(party: dict[str, Any] | None) -> dict[str, Any] | None:
    """A seller or buyer: its address split into the lines it was written on."""
    if party is None:
        return None
    address = party.get("address") or ""
    return {"legal_name": party.get("legal_name") or "",
            "address_lines": [line for line in address.splitlines() if line.strip()],
            "vat_id": party.get("vat_id"), "email": party.get("email")}


def _groups(lines: list[dict[str, Any]], currency: str) -> Iterator[dict[str, Any]]:
    """Lines grouped by module in the document's order (already sorted by module, R9.1)."""
    for module, grouped in groupby(lines, key=lambda line: line.get("module")):
        yield {"module": module, "label": module or GENERAL_GROUP,
               "lines": [{"description": line["description"],
                          "period": period_text(line.get("period")) or "",
                          "quantity": line["quantity"], "unit_price": line["unit_price"],
                          "amount": money_text(line["amount"], currency)}
                         for line in grouped]}


def compile_pdf(template: Path, view: dict[str, Any]) -> bytes:
    """The PDF of `view` by `template` (synchronous, CPU-bound: run it on a thread). Dated
    by the document's issue instant (to the second: PDF dates hold no fraction), so the same
    document always gives the same bytes."""
    issued_at = view["document"].get("issued_at")
    pdf: bytes = typst.compile(
        template, root=template.parent, font_paths=[template.parent],
        ignore_system_fonts=True, format="pdf",
        sys_inputs={"document": orjson.dumps(view).decode()},
        timestamp=None if issued_at is None
        else from_utc_text(issued_at).replace(microsecond=0))
    return pdf


def check_template(template: Path | None) -> None:
    """Print the example invoice with `template`: a template that cannot print one stops
    the start, naming the setting, rather than failing each download later."""
    chosen = template or PACKAGED_TEMPLATE
    try:
        compile_pdf(chosen, document_view(EXAMPLE_INVOICE, ZoneInfo("UTC")))
    except typst.TypstError as error:
        raise ValueError(f"INVOICING_DOCUMENT_TEMPLATE: {chosen} does not print an invoice: "
                         f"{error.message}") from None


class DocumentRenderer:
    """Renders documents with one template, on a small pool of threads of its own."""

    def __init__(self, template: Path | None, accounting_zone: ZoneInfo) -> None:
        self.template = (template or PACKAGED_TEMPLATE).resolve()
        self._zone = accounting_zone
        self._executor = ThreadPoolExecutor(max_workers=COMPILE_THREADS,
                                            thread_name_prefix="typst")

    async def pdf(self, doc: Document) -> bytes:
        view = document_view(doc, self._zone)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, compile_pdf, self.template, view)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
