"""Declined support renewals (R8.6): a daily plan's automatic renewal declined after its
renewal invoice was issued gets that invoice credited in full, by a credit note (R9.7).

Entitlements records `support.renewal_declined` naming the `purchase.confirmed` event that
invoiced the renewal (`renewal_event`). Both are keyed by the tenant, so on
`subscription-events` the purchase comes first on the same partition and its invoice is
normally numbered by the time the decline is read. For when it is not (the purchase
dead-lettered and replayed later, or read by another consumer), the decline is first kept
under the purchase event's id (`declined`), and the invoice's issue looks for it right after
numbering: each side writes its half before reading the other's, so at least one of them
sees both. Both may: the credit note's Idempotency-Key derives from the decline event's id,
so they, or a redelivered event, still issue one note.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from services.invoicing.credits import CreditNotes
from services.invoicing.state import InvoiceState
from shared.errors import ValidationFailed
from shared.events import InvalidEvent

log = logging.getLogger(__name__)

DECLINED: str = "support.renewal_declined"


class RenewalDeclines:
    def __init__(self, state: InvoiceState, credits: CreditNotes) -> None:
        self.state = state
        self.credits = credits

    async def on_declined(self, event: dict[str, Any]) -> None:
        """Remember the decline under its invoice's event id, then credit if it is issued."""
        purchase, note = _decline(event)
        await self.state.keep_decline(purchase, orjson.dumps(note))
        await self.settle(purchase)

    async def settle(self, purchase: str) -> None:
        """Credit in full the invoice of `purchase` if a decline of it waits and it is issued;
        nothing otherwise (called after every immediate invoice's issue)."""
        raw = await self.state.waiting_decline(purchase)
        if raw is None:
            return
        number = await self.state.invoice_of_event(purchase)
        if number is None:
            return  # not issued yet: its issue will settle it
        if number:  # '' would be a purchase that charged nothing: nothing to credit
            await self._credit(number, orjson.loads(raw))
        await self.state.forget_decline(purchase)

    async def _credit(self, number: str, note: dict[str, Any]) -> None:
        try:
            await self.credits.credit_note(number, None, str(note["reason"]),
                                           str(note["tenant"]),
                                           idempotency_key=f"renewal-declined:{note['event']}")
        except ValidationFailed as refused:
            if refused.error_code != "credit_exceeds_invoice":
                raise
            # Already credited in full (this decline's note, whose Idempotency-Key expired,
            # or credits by hand): there is nothing left to give back.
            log.info("renewal invoice %s already credited in full; decline %s settled",
                     number, note["event"])


def _decline(event: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(the purchase event id, what crediting needs) of a `support.renewal_declined`."""
    data = event.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("missing_field", "data", "a decline carries data")
    purchase = data.get("renewal_event")
    if not isinstance(purchase, str) or not purchase:
        raise InvalidEvent("missing_field", "data.renewal_event",
                           "names the purchase.confirmed event of the renewal's invoice")
    event_id, tenant = event.get("id"), event.get("subject")
    if not isinstance(event_id, str) or not event_id or not isinstance(tenant, str):
        raise InvalidEvent("missing_field", "id", "a decline has an id and a subject")
    declined = data.get("declined") or {}
    reason = (f"automatic renewal of {data.get('item')} (lot {data.get('lot')}) from "
              f"{declined.get('from')} declined before its renewal date (R8.6)")
    return purchase, {"event": event_id, "tenant": tenant, "reason": reason}
