"""Which endpoints an event of `subscription-events` goes to, and the delivery id each gets,
as pure functions (docs/webhooks.md, "Which events go where").

An endpoint gets the event types it lists, of its tenant (or of every tenant when it names
none). The delivery id, sent as `webhook-id`, is derived from the endpoint and the event's
`id`: an event read twice (a replay after a crash before the commit, or the rare duplicate
publication) makes the same delivery, which is written once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from services.webhooks.store import Endpoint, NewDelivery


def delivery_id(endpoint: str, event_id: str) -> str:
    return "msg_" + hashlib.sha256(f"{endpoint}\0{event_id}".encode()).hexdigest()[:32]


def deliveries_for(body: bytes, endpoints: Sequence[Endpoint]) -> list[NewDelivery]:
    """The deliveries of one message; none for a message that is not an event object (the
    stream's own consumers dead-letter those)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return []
    event_type: str = event["type"]
    subject, given_id = event.get("subject"), event.get("id")
    tenant = subject if isinstance(subject, str) else ""
    event_id = given_id if isinstance(given_id, str) and given_id \
        else hashlib.sha256(body).hexdigest()
    return [NewDelivery(id=delivery_id(e.id, event_id), endpoint=e.id, tenant=tenant,
                        event_type=event_type, event_id=event_id, body=body)
            for e in endpoints if e.wants(event_type, tenant)]
