"""What invoicing announces (services/invoicing/announce.py): one `invoice.issued` or
`credit_note.issued` per document, built as a template before the document is numbered, with
the same placeholders the numbering call fills in both."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.invoicing.announce import announcement, api_actor
from services.invoicing.state import ISSUED_AT_PLACEHOLDER, NUMBER_PLACEHOLDER

pytestmark = pytest.mark.unit

ACTOR = {"user_id": "u-owner", "role": "owner", "api_key": None}
PERIOD = {"from": "2026-03-01", "to": "2026-04-01"}


def _invoice(**fields: Any) -> dict[str, Any]:
    doc = {"kind": "invoice", "tenant": "acme", "currency": "EUR", "subtotal": "49.00",
           "tax": "9.80", "total": "58.80", "period": PERIOD, "billing_date": "2026-03-01",
           "lines": [{"item": "essentials"}, {"item": "seats-crm"}], "event": "evt-1"}
    doc.update(fields)
    return doc


def test_an_invoice_is_announced_with_placeholders_for_its_number_and_instant() -> None:
    made = announcement(_invoice(), ACTOR)
    event = orjson.loads(made.template)
    assert (made.tenant, event["id"], event["subject"]) == ("acme", made.event_id, "acme")
    assert (event["type"], event["source"], event["time"]) == (
        "invoice.issued", "invoicing", ISSUED_AT_PLACEHOLDER)
    assert event["data"] == {
        "tenant": "acme", "actor": ACTOR, "number": NUMBER_PLACEHOLDER, "kind": "invoice",
        "issued_at": ISSUED_AT_PLACEHOLDER, "currency": "EUR", "subtotal": "49.00",
        "tax": "9.80", "total": "58.80", "period": PERIOD, "billing_date": "2026-03-01",
        "lines": 2, "purchase_event": "evt-1"}


def test_a_credit_note_names_the_invoice_it_credits_and_why() -> None:
    note = {"kind": "credit_note", "tenant": "acme", "currency": "EUR", "subtotal": "-10.00",
            "tax": "-2.00", "total": "-12.00", "credits": "INV-2026-000001",
            "reason": "goodwill"}
    event = orjson.loads(announcement(note, api_actor("key-1")).template)
    assert event["type"] == "credit_note.issued"
    data = event["data"]
    assert (data["credits"], data["reason"], data["period"]) == (
        "INV-2026-000001", "goodwill", None)
    assert data["actor"] == {"user_id": None, "role": None, "api_key": "key-1"}
    assert not {"lines", "billing_date", "purchase_event"} & data.keys()


def test_each_announcement_has_its_own_event_id() -> None:
    first, second = announcement(_invoice(), None), announcement(_invoice(), None)
    assert first.event_id != second.event_id
    assert orjson.loads(first.template)["data"]["actor"] is None
