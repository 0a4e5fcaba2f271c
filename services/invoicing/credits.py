"""Credit notes (R9.3): never more than what is left to credit on an invoice, checked and
numbered in one atomic step; with an Idempotency-Key, a request sent again answers the note
the first one issued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from services.invoicing import legal
from services.invoicing.announce import announcement
from services.invoicing.documents import compose_tax, credit_note, minor_text
from services.invoicing.reads import InvoiceReads
from services.invoicing.state import (
    ISSUED_AT_PLACEHOLDER,
    NUMBER_PLACEHOLDER,
    CreditRequest,
    CreditResult,
    InvoiceState,
)
from services.invoicing.store import InvoiceStore
from shared.billing.money import minor_unit, parse_money
from shared.clock import Clock
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.settings import InvoicingSettings


@dataclass(frozen=True)
class CreditNotes:
    """Credit notes (R9.3): numbered in Redis (`state`), stored in ClickHouse (`store`)."""

    state: InvoiceState
    store: InvoiceStore
    reads: InvoiceReads
    clock: Clock
    settings: InvoicingSettings

    async def credit_note(self, number: str, amount_text: str | None, reason: str,
                          tenant_scope: str | None, idempotency_key: str | None = None,
                          actor: dict[str, Any] | None = None) -> dict[str, Any]:
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
            return await self._issue_credit_note(number, amount_text, reason, request, actor)
        except ValidationFailed as refused:
            if request is None or refused.error_code != "credit_exceeds_invoice":
                raise
            # A twin request (same key, sent at the same time) may have taken what was left.
            earlier = await self.state.credit_replay(number, request.key)
            if earlier is None:
                raise
            return await self._replayed_note(earlier, request.fingerprint)

    async def _issue_credit_note(self, number: str, amount_text: str | None, reason: str,
                                 request: CreditRequest | None,
                                 actor: dict[str, Any] | None) -> dict[str, Any]:
        invoice = await self.reads.invoice(number, None)
        if invoice["kind"] == "credit_note":
            raise Conflict(f"{number} is a credit note; credit the invoice it credits, "
                           f"{invoice['credits']}", field="number", code="not_an_invoice")
        currency = invoice["currency"]
        digits = minor_unit(currency)
        total_minor = int(Decimal(invoice["total"]).scaleb(digits))
        left = total_minor - await self.state.credited_minor(number)
        amount_minor = left if amount_text is None else _minor_amount(amount_text, currency)
        if amount_minor <= 0 or amount_minor > left:
            raise _exceeds(number, left, currency)
        gross = Decimal(amount_minor).scaleb(-digits)
        tax = compose_tax(gross, Decimal(invoice.get("vat_rate", "0")), currency)
        doc = credit_note(invoice, gross, tax, reason, NUMBER_PLACEHOLDER,
                          ISSUED_AT_PLACEHOLDER)
        tenant = str(invoice["tenant"])
        views = await self.state.tenant_documents([tenant])
        # R9.8: the parties as they are at the note's issue; due on its issue date.
        doc.update(legal.mentions(self.settings, tenant, views.get(tenant),
                                  legal.CREDIT_NOTE_TERMS_DAYS))
        result = await self.state.credit(number, total_minor, amount_minor,
                                         await self.clock.now(), orjson.dumps(doc),
                                         announcement(doc, actor), request)
        if result.outcome == "refused":
            raise _exceeds(number, result.left_minor, currency)
        if result.outcome == "replayed":  # the same request, at the same time
            return await self._replayed_note(result, request.fingerprint if request else "")
        doc["number"], doc["issued_at"] = result.number, result.issued_at
        await self.store.insert_documents([doc])
        await self.state.clear_pending([result.number])
        return legal.served(doc, self.settings.accounting_zone)

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
        return legal.served(dict(doc), self.settings.accounting_zone)


def _minor_amount(text: str, currency: str) -> int:
    """A credit amount in minor units: a positive decimal with at most the currency's
    decimals."""
    digits = minor_unit(currency)
    try:
        amount = parse_money(text)
    except ValueError:
        raise ValidationFailed(f"amount: '{text}' is not a decimal string",
                               field="amount") from None
    scaled = amount.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise ValidationFailed(f"amount: at most {digits} decimals in {currency}",
                               field="amount")
    if scaled <= 0:
        raise ValidationFailed("amount: must be positive", field="amount")
    return int(scaled)


def _exceeds(number: str, left_minor: int, currency: str) -> ValidationFailed:
    return ValidationFailed(
        f"amount: only {minor_text(left_minor, minor_unit(currency))} {currency} is left to "
        f"credit on {number}", field="amount", code="credit_exceeds_invoice")
