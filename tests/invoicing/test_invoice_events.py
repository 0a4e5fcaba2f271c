"""`invoice.issued` and `credit_note.issued` on `subscription-events` (docs/events.md): one
event per document, with one id, even when the process dies between numbering a document
and writing it to ClickHouse: the announcement is written by the numbering call itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.invoicing.part import InvoicingPart
from services.invoicing.service import InvoicingService
from shared.stack import Endpoints
from tests.conftest import ADMIN, create_tenant, eventually
from tests.invoicing.inv_support import private_platform

START = datetime(2026, 3, 1, 9, tzinfo=UTC)
DB = 14


async def _events(bootstrap: str, topic: str, settle_s: float = 1.5) -> list[dict[str, Any]]:
    """Every event of the topic, read until nothing new came for `settle_s`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        while batch := await consumer.getmany(timeout_ms=int(settle_s * 1000)):
            found += [orjson.loads(r.value or b"") for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return found


def _service(part: Any) -> InvoicingService:
    assert isinstance(part, InvoicingPart)
    assert part.service is not None
    return part.service


async def test_a_document_numbered_before_a_crash_is_announced_once(
        endpoints: Endpoints, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first run numbers the tenant's first invoice (R9.1: 58.80 = 49.00 essentials
    + 20 % VAT, billed on the anchor, 2026-03-01) and dies before ClickHouse has it; the
    second run writes it from its pending copy (R9.3). One `invoice.issued` names it, with
    the amounts the invoice shows."""
    tenant = f"announce-{unique}"
    topic = f"subscriptions-inv-{unique}"
    async with private_platform(endpoints, unique, START, db=DB,
                                invoicing_consumer=False) as app:
        await create_tenant(app.client, tenant)
        service = _service(app.parts[2])

        async def crash(docs: Any) -> None:
            raise RuntimeError("killed between numbering and ClickHouse")

        monkeypatch.setattr(service.store, "insert_documents", crash)
        with pytest.raises(RuntimeError, match="killed"):
            await service.bill([tenant], START)
        pending = await service.state.pending()
        await eventually(lambda: _outbox_empty(service), within=10)
    monkeypatch.undo()
    assert len(pending) == 1
    async with private_platform(endpoints, unique, START, db=DB, flush=False) as app:
        number = next(iter(pending))
        shown = await app.client.get(f"/v1/invoices/{number}", headers=ADMIN)
        await asyncio.sleep(1.0)  # the consumer reads tenant.created: already billed
        events = await _events(endpoints.kafka_bootstrap, topic)

    assert shown.status_code == 200, shown.text
    announced = [e for e in events if e["type"] == "invoice.issued"]
    assert len(announced) == 1
    event = announced[0]
    assert (event["source"], event["subject"], event["time"]) == (
        "invoicing", tenant, shown.json()["issued_at"])
    assert {k: event["data"][k] for k in ("tenant", "actor", "number", "kind", "currency",
                                          "subtotal", "tax", "total", "billing_date")} == {
        "tenant": tenant, "actor": None, "number": number, "kind": "immediate",
        "currency": "EUR", "subtotal": "49.00", "tax": "9.80", "total": "58.80",
        "billing_date": "2026-03-01"}
    assert event["data"]["issued_at"] == shown.json()["issued_at"]


async def _outbox_empty(service: InvoicingService) -> bool:
    return int(await service.state.redis.xlen(service.state.keys.outbox)) == 0
