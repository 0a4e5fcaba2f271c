"""Finance's reads: one invoice with its credit notes and status, the list by month,
tenant and status (keyset pages), and the month export (R9.6)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from services.invoicing import legal
from services.invoicing.documents import to_csv
from services.invoicing.state import InvoiceState
from services.invoicing.store import InvoiceStore, decode_cursor, encode_cursor
from shared.errors import NotFound, ValidationFailed
from shared.times import month_window

PAGE_SIZE = 100
STATUSES = ("issued", "partially_credited", "credited")
KINDS = ("period", "immediate", "credit_note")


class InvoiceReads:
    def __init__(self, state: InvoiceState, store: InvoiceStore,
                 recover: Callable[[], Awaitable[int]], accounting_zone: ZoneInfo) -> None:
        self.state = state
        self.store = store
        self._recover = recover
        # `month=` selects a month of the accounting zone, like the numbers' years (R9.3).
        self._zone = accounting_zone

    async def invoice(self, number: str, tenant_scope: str | None) -> dict[str, Any]:
        doc = await self.store.invoice(number)
        if doc is None:
            raw = await self.state.pending_doc(number)
            if raw is not None:
                await self._recover()
                doc = await self.store.invoice(number)
        if doc is None or (tenant_scope is not None and doc["tenant"] != tenant_scope):
            raise NotFound(f"invoice '{number}' not found", field="number")
        return (await self._decorate([doc]))[0]

    async def _decorate(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        notes = await self.store.credit_notes([d["number"] for d in docs])
        for doc in docs:
            doc.pop("usage_cutoff", None)
            legal.served(doc, self._zone)  # R9.8: the due date, from the final issue instant
            if doc["kind"] == "credit_note":
                doc["status"] = "issued"  # a credit note is never credited itself
                continue
            mine = notes.get(doc["number"], [])
            doc["credit_notes"] = [{"number": n["number"], "amount": n["amount"],
                                    "issued_at": n["issued_at"], "reason": n.get("reason", "")}
                                   for n in mine]
            credited = sum((Decimal(n["amount"]) for n in mine), Decimal(0))
            total = Decimal(doc["total"])
            doc["status"] = ("issued" if credited == 0 else
                             "credited" if credited >= total else "partially_credited")
        return docs

    async def list_invoices(self, month: str | None, tenant: str | None, status: str | None,
                            cursor: str | None, kind: str | None = None) -> dict[str, Any]:
        """Invoices and credit notes, newest first (R9.7), by accounting month (R9.3)."""
        window = month_window(month, "month", self._zone) if month is not None else None
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status: one of {', '.join(STATUSES)}", field="status")
        if kind is not None and kind not in KINDS:
            raise ValidationFailed(f"kind: one of {', '.join(KINDS)}", field="kind")
        position = None
        if cursor is not None:
            try:
                position = decode_cursor(cursor)
            except (ValueError, OverflowError):
                raise ValidationFailed("cursor: not a cursor this API gave", field="cursor"
                                       ) from None
        docs = await self.store.list_invoices(window, tenant, status, kind, position,
                                             PAGE_SIZE + 1)
        page = await self._decorate(docs[:PAGE_SIZE])
        next_cursor = None
        if len(docs) > PAGE_SIZE:
            last = page[-1]
            next_cursor = encode_cursor(last["issued_at"], last["number"])
        return {"data": page, "next_cursor": next_cursor}

    async def export(self, month: str, tenant_scope: str | None) -> str:
        start, end = month_window(month, "month", self._zone)
        docs = await self.store.month_documents(start, end, tenant_scope)
        return to_csv([legal.served(doc, self._zone) for doc in docs])
