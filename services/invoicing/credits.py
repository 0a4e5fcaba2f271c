"""Credit notes (R9.3): never more than what is left to credit on an invoice, checked and
numbered in one atomic step; with an Idempotency-Key, a request sent again answers the note
the first one issued.
"""

from __future__ import annotations

import hashlib
from datetime import UTC
from decimal import Decimal
from typing import Any

import orjson

from services.invoicing.documents import compose_tax, minor_text
from services.invoicing.reads import InvoiceReads
from services.invoicing.state import NUMBER_PLACEHOLDER, CreditRequest, CreditResult, InvoiceState
from services.invoicing.store import InvoiceStore
from shared.billing.money import format_money, minor_unit, parse_money
from shared.clock import Clock
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.settings import InvoicingSettings
from shared.times import utc_text


class CreditNotes:
    def __init__(self, state: InvoiceState, store: InvoiceStore, reads: InvoiceReads,
                 clock: Clock, settings: InvoicingSettings) -> None:
        self.state = state
        self.store = store
        self.reads = reads
        self.clock = clock
        self.settings = settings

    async def credit_note(self, number: str, amount_text: str | None, reason: str,
                          tenant_scope: str | None, idempotency_key: str | None = None
                          ) -> dict[str, Any]:
        """R9.3. With an Idempotency-Key, a request sent again answers the note the first one
        issued (409 if the body differs), even once nothing is left to credit."""
        await self.reads.invoice(number, tenant_scope)  # another tenant's invoice does not exist
        request = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise ValidationFailed("Idempotency-Key: 1 to 255 characters",
                                       field="Idempotency-Key")
            fingerprint = hashlib.sha256(
                orjson.dumps([number, amount_text, reason])).hexdigest()
            request = CreditRequest(idempotency_key, fingerprint,
                                    self.settings.invoicing_idempotency_ttl_s)
            earlier = await self.state.credit_replay(number, idempotency_key)
            if earlier is not None:
                return await self._replayed_note(earlier, fingerprint)
        try:
            return await self._issue_credit_note(number, amount_text, reason, request)
        except ValidationFailed as refused:
            if request is None or refused.error_code != "credit_exceeds_invoice":
                raise
            # A twin request (same key, sent at the same time) may have taken what was left.
            earlier = await self.state.credit_replay(number, request.key)
            if earlier is None:
                raise
            return await self._replayed_note(earlier, request.fingerprint)

    async def _issue_credit_note(self, number: str, amount_text: str | None, reason: str,
                                 request: CreditRequest | None) -> dict[str, Any]:
        invoice = await self.reads.invoice(number, None)
        currency = invoice["currency"]
        digits = minor_unit(currency)
        total_minor = int(Decimal(invoice["total"]).scaleb(digits))
        credited = await self.state.credited_minor(number)
        left = total_minor - credited
        if amount_text is None:
            amount_minor = left
        else:
            try:
                amount = parse_money(amount_text)
            except ValueError:
                raise ValidationFailed(f"amount: '{amount_text}' is not a decimal string",
                                       field="amount") from None
            scaled = amount.scaleb(digits)
            if scaled != scaled.to_integral_value():
                raise ValidationFailed(f"amount: at most {digits} decimals in {currency}",
                                       field="amount")
            amount_minor = int(scaled)
            if amount_minor <= 0:
                raise ValidationFailed("amount: must be positive", field="amount")
        if amount_minor <= 0 or amount_minor > left:
            raise ValidationFailed(
                f"amount: only {minor_text(left, digits)} {currency} is left to credit on "
                f"{number}", field="amount", code="credit_exceeds_invoice")
        now = await self.clock.now()
        gross = Decimal(amount_minor).scaleb(-digits)
        vat = Decimal(invoice.get("vat_rate", "0"))
        tax = compose_tax(gross, vat, currency)
        doc = {"number": NUMBER_PLACEHOLDER, "kind": "credit_note", "invoice": number,
               "tenant": invoice["tenant"], "issued_at": utc_text(now), "currency": currency,
               "amount": format_money(gross, currency),
               "subtotal": format_money(gross - tax, currency),
               "tax": format_money(tax, currency), "total": format_money(gross, currency),
               "reason": reason}
        result = await self.state.credit(number, total_minor, amount_minor,
                                         now.astimezone(UTC).year, orjson.dumps(doc), request)
        if result.outcome == "refused":
            raise ValidationFailed(
                f"amount: only {minor_text(result.left_minor, digits)} {currency} is left to "
                f"credit on {number}", field="amount", code="credit_exceeds_invoice")
        if result.outcome == "replayed":  # the same request, at the same time
            return await self._replayed_note(result, request.fingerprint if request else "")
        doc["number"] = result.number
        await self.store.insert_documents([doc])
        await self.state.clear_pending([result.number])
        return doc

    async def _replayed_note(self, earlier: CreditResult, fingerprint: str) -> dict[str, Any]:
        if earlier.fingerprint != fingerprint:
            raise Conflict("this Idempotency-Key was used for a different request",
                           field="Idempotency-Key", code="idempotency_key_reused")
        doc = await self.store.credit_note(earlier.number)
        if doc is None:
            # Numbered, not yet in ClickHouse (the first request is writing it, or died
            # before): its pending copy is the document.
            raw = await self.state.pending_doc(earlier.number)
            doc = orjson.loads(raw) if raw is not None else await self.store.credit_note(
                earlier.number)  # written and cleared in between
        if doc is None:
            raise NotFound(f"credit note '{earlier.number}' not found", field="number")
        result: dict[str, Any] = doc
        return result
