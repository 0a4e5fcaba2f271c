"""What invoicing announces on `subscription-events` (docs/events.md): `invoice.issued` and
`credit_note.issued`, one per document, as pure functions.

An announcement is built before its document is numbered, as a template with the same
placeholders as the document (state.py): the numbering call fills both and appends the
announcement to invoicing's outbox in the same atomic step, so a document is announced once,
with one event id, whatever crash follows its numbering.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from services.invoicing.documents import line_count
from services.invoicing.state import ISSUED_AT_PLACEHOLDER, NUMBER_PLACEHOLDER, Announcement


def announcement(doc: dict[str, Any], actor: dict[str, Any] | None) -> Announcement:
    """The event announcing the document `doc` (still a template itself: its number and
    issue instant are the placeholders)."""
    event_id = str(uuid.uuid4())
    credit = doc["kind"] == "credit_note"
    data: dict[str, Any] = {
        "tenant": doc["tenant"], "actor": actor, "number": NUMBER_PLACEHOLDER,
        "kind": doc["kind"], "issued_at": ISSUED_AT_PLACEHOLDER,
        "currency": doc["currency"], "subtotal": doc["subtotal"], "tax": doc["tax"],
        "total": doc["total"], "period": doc.get("period"),
    }
    if credit:
        data.update(credits=doc["credits"], reason=doc["reason"])
    else:
        data.update(billing_date=doc.get("billing_date"), lines=line_count(doc),
                    purchase_event=doc.get("event"))
    event = {"specversion": "1.0", "id": event_id, "source": "invoicing",
             "type": "credit_note.issued" if credit else "invoice.issued",
             "subject": doc["tenant"], "time": ISSUED_AT_PLACEHOLDER,
             "datacontenttype": "application/json", "data": data}
    return Announcement(event_id, doc["tenant"], orjson.dumps(event))


def api_actor(key_id: str) -> dict[str, Any]:
    """The actor of a document an API key asked for (a credit note): no product user."""
    return {"user_id": None, "role": None, "api_key": key_id}
