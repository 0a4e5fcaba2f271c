"""R8.6: bank plans announce their renewal 30 and 7 days ahead (`support.renewal_due`), and a
daily plan's automatic renewal may be declined after its invoice, which is then credited in
full (R9.7). Worked by hand; demo prices VIP 680.00/year, OrangeCare 120.00 per user per year,
Europe/Paris, VAT 20 %.

VIP bought 2026-01-01 (Paris): contract [2026-01-01, 2027-01-01), expiring at local midnight
2027-01-01 = 2026-12-31T23:00Z. Notices at local midnight of
- 2026-12-02 (30 days before) = 2026-12-01T23:00Z,
- 2026-12-25 (7 days before) = 2026-12-24T23:00Z,
each offering the on-time renewal 680.00 × 0.90 = 612.00 (R8.4) for [2027-01-01, 2028-01-01).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.entitlements import support_renewals as ren
from services.entitlements.lifecycle import Effects, advance
from services.invoicing.service import InvoicingService
from shared.errors import Conflict
from shared.stack import Endpoints
from shared.subscription import Lot, TenantState
from tests.conftest import ADMIN, OWNER, create_tenant, eventually, set_clock
from tests.invoicing.inv_support import invoices_of, invoicing_part, private_platform

NOTICES_DB = 15
START = datetime(2026, 1, 1, 9, tzinfo=UTC)


# --- pure rules ------------------------------------------------------------------------------


def _vip(**fields: Any) -> Lot:
    values: dict[str, Any] = {
        "id": "lot-vip", "item": "vip", "kind": "support", "quantity": 1, "units": 1,
        "state": "active", "bought_at": START, "ends_at": datetime(2026, 12, 31, 23, tzinfo=UTC),
        "unit_price": Decimal("680.00"), "contract_start": date(2026, 1, 1),
        "contract_end": date(2027, 1, 1), "since": date(2026, 1, 1),
        "renewal_discount": Decimal("0.10")}
    values.update(fields)
    return Lot(**values)


def _tenant(*lots: Lot) -> TenantState:
    return TenantState(id="t", plan="essentials", cycle="P1Y", anchor=date(2026, 1, 1),
                       time_zone="Europe/Paris", currency="EUR", vat_rate=Decimal("0.20"),
                       admin_user="u-admin", created_at=START, lots=list(lots))


def _run(state: TenantState, now: datetime) -> tuple[TenantState, list[dict[str, Any]]]:
    effects = Effects()
    state = advance(state, now, effects)
    return state, [orjson.loads(raw) for _, _, raw in effects.events]


@pytest.mark.unit
def test_r8_6_notices_once_each_even_past_both_in_one_step() -> None:
    """Moved from 2026-01-01 to 2026-12-28 at once: both notices, each dated at its own
    instant (30 days: 2026-12-01T23:00Z, 7 days: 2026-12-24T23:00Z), 612.00 on time. The
    document after that step (what a restart or a replayed step reads) sends nothing more;
    at the end the contract expires as before (R8.2), still without a third notice."""
    state, events = _run(_tenant(_vip()), datetime(2026, 12, 28, tzinfo=UTC))
    assert [(e["type"], e["time"], e["data"]["days_left"]) for e in events] == [
        ("support.renewal_due", "2026-12-01T23:00:00Z", 30),
        ("support.renewal_due", "2026-12-24T23:00:00Z", 7)]
    data = events[0]["data"]
    assert {k: data[k] for k in ("lot", "item", "quantity", "contract", "expires_at",
                                 "currency", "full_price", "renewal_price", "discount",
                                 "renewal", "actor")} == {
        "lot": "lot-vip", "item": "vip", "quantity": 1,
        "contract": {"from": "2026-01-01", "to": "2027-01-01"},
        "expires_at": "2026-12-31T23:00:00Z", "currency": "EUR", "full_price": "680.00",
        "renewal_price": "612.00", "discount": "0.10",
        "renewal": {"from": "2027-01-01", "to": "2028-01-01"}, "actor": None}
    assert state.lots[0].renewal_notices == [30, 7]
    again, none = _run(state, datetime(2026, 12, 29, tzinfo=UTC))
    assert none == []
    _, end = _run(again, datetime(2027, 1, 2, tzinfo=UTC))
    assert [(e["type"], e["data"].get("reason")) for e in end] == [
        ("lot.expired", "contract_ended")]


@pytest.mark.unit
def test_r8_6_no_notice_for_a_renewed_cancelled_or_daily_contract() -> None:
    """A contract renewed by hand (a lot naming it in `renews`) or cancelled has nothing to
    offer; a daily plan renews by itself (R8.4). Only the renewal's own contract,
    [2027-01-01, 2028-01-01), is announced, in its own year."""
    renewal = _vip(id="lot-next", renews="lot-vip", bought_at=datetime(2026, 11, 20, tzinfo=UTC),
                   ends_at=datetime(2027, 12, 31, 23, tzinfo=UTC),
                   contract_start=date(2027, 1, 1), contract_end=date(2028, 1, 1))
    cancelled = _vip(id="lot-gone", item="vip-diamond", state="cancelled")
    daily = _vip(id="lot-daily", item="orangecare", ends_at=None, auto_renew=True)
    state = _tenant(_vip(), renewal, cancelled, daily)
    _, events = _run(state, datetime(2026, 12, 28, tzinfo=UTC))
    assert [e for e in events if e["type"] == "support.renewal_due"] == []
    _, later = _run(state, datetime(2027, 12, 28, tzinfo=UTC))
    assert [(e["data"]["lot"], e["data"]["days_left"]) for e in later
            if e["type"] == "support.renewal_due"] == [("lot-next", 30), ("lot-next", 7)]


@pytest.mark.unit
def test_r8_6_declining_an_invoiced_daily_renewal() -> None:
    """Before its renewal is invoiced, cancelling declines nothing to credit; after, the
    decline names the invoice's purchase event, and undoing it is refused (the invoice was
    credited: renew by hand instead). A renewal invoiced before the event id was kept on
    the lot cannot be named, so it is refused as before."""
    zone = _tenant().zone
    daily = _vip(id="lot-oc", item="orangecare", quantity=2, ends_at=None, auto_renew=True)
    assert ren.declined_renewal(daily, zone) is None
    invoiced = daily.model_copy(update={"renewal_invoiced": date(2027, 1, 1),
                                        "renewal_event": "ev-renewal"})
    assert ren.declined_renewal(invoiced, zone) == {
        "lot": "lot-oc", "item": "orangecare", "quantity": 2,
        "ends_at": "2026-12-31T23:00:00Z",
        "declined": {"from": "2027-01-01", "to": "2028-01-01"},
        "renewal_event": "ev-renewal"}
    with pytest.raises(Conflict) as refused:
        ren.refuse_uncancel(invoiced.model_copy(update={"state": "cancelled"}))
    assert refused.value.error_code == "renewal_declined"
    ren.refuse_uncancel(daily)  # nothing invoiced: undoing is fine
    with pytest.raises(Conflict) as legacy:
        ren.declined_renewal(invoiced.model_copy(update={"renewal_event": None}), zone)
    assert legacy.value.error_code == "renewal_already_invoiced"


# --- on the platform ---------------------------------------------------------------------------


async def _history(c: httpx.AsyncClient, tenant: str, kind: str) -> list[dict[str, Any]]:
    r = await c.get(f"/v1/tenants/{tenant}/history?limit=1000", headers=ADMIN)
    assert r.status_code == 200, r.text
    return [e for e in r.json()["data"] if e["type"] == kind]


async def _buy(c: httpx.AsyncClient, tenant: str, item: str, action: str = "buy",
               quantity: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"actor": OWNER, "item": item, "confirm": True, "action": action}
    if quantity is not None:
        body["quantity"] = quantity
    r = await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def _topic_events(bootstrap: str, topic: str, tenant: str, kind: str,
                        within: float = 5.0) -> list[dict[str, Any]]:
    """The `kind` events of `tenant` on `topic`, read from the beginning until idle."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p)
               for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value or b"{}")
                    if record.key == tenant.encode() and event.get("type") == kind:
                        found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_r8_6_vip_notices_on_the_manual_clock(endpoints: Endpoints, unique: str
                                                    ) -> None:
    """Four essentials P1Y tenants. `step` and `renewed` buy VIP on 2026-01-01; `renewed`
    renews it on time on 2026-11-20 (612.00), so its first contract is not announced;
    `cancelled` buys then cancels it (nothing to offer). `jump` buys VIP on 2026-11-20:
    [2026-11-20, 2027-11-20), announced at local midnight 2027-10-21 (summer time:
    2027-10-20T22:00Z) and 2027-11-13 (2027-11-12T23:00Z).
    Clock: 2026-12-10 → `step` gets the 30-day notice only; 2026-12-28 → its 7-day notice;
    2026-12-29 → nothing new; 2027-11-15, past both of `jump`'s in one step → both; moved
    again to 2027-11-16 → nothing new. Once each, in the history and on the topic."""
    async with private_platform(endpoints, f"ntc{unique}", START, db=NOTICES_DB) as app:
        c = app.client
        step, renewed, cancelled, jump = (f"{n}-{unique}" for n in
                                          ("step", "renewed", "cancelled", "jump"))
        for tenant in (step, renewed, cancelled, jump):
            await create_tenant(c, tenant, cycle="P1Y")
        lots = {tenant: (await _buy(c, tenant, "vip"))["lot"]["id"]
                for tenant in (step, renewed, cancelled)}
        r = await c.post(f"/v1/tenants/{cancelled}/lots/{lots[cancelled]}/cancel", headers=ADMIN,
                         json={"actor": OWNER})
        assert r.status_code == 200, r.text
        await set_clock(c, "2026-11-20T09:00:00Z")
        renewal = await _buy(c, renewed, "vip", action="renew")
        assert renewal["charges"][0]["amount"] == "612.00"
        await _buy(c, jump, "vip")

        async def notices(tenant: str) -> list[tuple[str, int, str]]:
            return [(e["at"], e["days_left"], e["renewal_price"])
                    for e in await _history(c, tenant, "support.renewal_due")]

        await set_clock(c, "2026-12-10T09:00:00Z")
        assert await notices(step) == [("2026-12-01T23:00:00Z", 30, "612.00")]
        await set_clock(c, "2026-12-28T09:00:00Z")
        await set_clock(c, "2026-12-29T09:00:00Z")
        expected = [("2026-12-01T23:00:00Z", 30, "612.00"),
                    ("2026-12-24T23:00:00Z", 7, "612.00")]
        assert await notices(step) == expected
        await set_clock(c, "2027-11-15T09:00:00Z")
        await set_clock(c, "2027-11-16T09:00:00Z")
        assert await notices(jump) == [("2027-10-20T22:00:00Z", 30, "612.00"),
                                       ("2027-11-12T23:00:00Z", 7, "612.00")]
        assert await notices(step) == expected
        assert await notices(renewed) == []  # its new contract's are due in Dec. 2027
        assert await notices(cancelled) == []
        topic = f"subscriptions-inv-ntc{unique}"
        published = await _topic_events(endpoints.kafka_bootstrap, topic, step,
                                        "support.renewal_due")
        assert [(e["time"], e["data"]["days_left"], e["data"]["contract"]["to"])
                for e in published] == [("2026-12-01T23:00:00Z", 30, "2027-01-01"),
                                        ("2026-12-24T23:00:00Z", 7, "2027-01-01")]


async def test_r8_6_daily_renewal_declined_after_its_invoice(endpoints: Endpoints,
                                                             unique: str) -> None:
    """essentials P1Y; OrangeCare × 2 bought 2026-01-01: 2 × 120.00 = 240.00 (288.00 with
    VAT). Its renewal is invoiced at local midnight 2026-12-01 (2026-11-30T23:00Z):
    2 × 120.00 × 0.90 = 216.00, VAT 43.20, total 259.20 (R8.4). Declined on 2026-12-10, after
    that invoice and before the renewal date: the lot ends at 2027-01-01 (2026-12-31T23:00Z)
    and one credit note gives back the whole invoice: 259.20 = 216.00 + 43.20 (tax inside:
    259.20 × 0.20 / 1.20). Undoing the cancellation is refused; at 2027-01-01 the lot expires
    and is not rolled over, and the year's invoice has the plan only (490.00 → 588.00).
    The decline redelivered issues nothing new."""
    async with private_platform(endpoints, f"dcl{unique}", START, db=NOTICES_DB) as app:
        c = app.client
        tenant = f"decline-{unique}"
        await create_tenant(c, tenant, cycle="P1Y")
        lot = (await _buy(c, tenant, "orangecare", quantity=2))["lot"]["id"]
        await set_clock(c, "2026-12-10T09:00:00Z")
        renewals = [e for e in await _history(c, tenant, "purchase.confirmed")
                    if e.get("renewal") == "automatic"]
        assert len(renewals) == 1
        r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", headers=ADMIN,
                         json={"actor": OWNER})
        assert r.status_code == 200, r.text
        assert datetime.fromisoformat(r.json()["lot"]["ends_at"]) == datetime(
            2026, 12, 31, 23, tzinfo=UTC)
        declined, = await _history(c, tenant, "support.renewal_declined")
        assert (declined["lot"], declined["renewal_event"], declined["declined"]) == (
            lot, renewals[0]["event_id"], {"from": "2027-01-01", "to": "2028-01-01"})
        assert declined["actor"]["user_id"] == OWNER["user_id"]

        async def credit_notes() -> list[dict[str, Any]]:
            return [d for d in await invoices_of(c, tenant) if d["kind"] == "credit_note"]

        note, = await eventually(credit_notes, within=15)
        renewal_invoice = next(d for d in await invoices_of(c, tenant)
                               if d["kind"] == "immediate" and d["total"] == "259.20")
        assert (note["credits"], note["subtotal"], note["tax"], note["total"]) == (
            renewal_invoice["number"], "216.00", "43.20", "259.20")
        got = await c.get(f"/v1/invoices/{renewal_invoice['number']}", headers=ADMIN)
        assert got.json()["status"] == "credited"
        undo = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/uncancel", headers=ADMIN,
                            json={"actor": OWNER})
        assert (undo.status_code, undo.json()["error"]["code"]) == (409, "renewal_declined")

        service = invoicing_part(app).service
        assert isinstance(service, InvoicingService)
        event, = await _topic_events(endpoints.kafka_bootstrap, f"subscriptions-inv-dcl{unique}",
                                     tenant, "support.renewal_declined")
        await service.on_subscription_event(event)  # redelivered: nothing new

        await set_clock(c, "2027-01-02T00:00:00Z")
        assert await _history(c, tenant, "support.renewed") == []
        expired, = await _history(c, tenant, "lot.expired")
        assert (expired["lot"], expired["reason"], expired["at"]) == (
            lot, "cancelled", "2026-12-31T23:00:00Z")
        found = await invoices_of(c, tenant)
        assert [(d["kind"], d["total"]) for d in found] == [
            ("immediate", "588.00"), ("immediate", "288.00"), ("immediate", "259.20"),
            ("credit_note", "259.20"), ("period", "588.00")]


async def test_r8_6_decline_read_before_its_invoice_is_still_credited(
        endpoints: Endpoints, unique: str) -> None:
    """Both events are keyed by the tenant, so the purchase is read first; should the decline
    still come first (the purchase dead-lettered and replayed), it waits under the purchase's
    event id and the invoice is credited as soon as it is issued. A renewal of 2 × 120.00 ×
    0.90 = 216.00 → 259.20 with VAT, credited 259.20; both events again: nothing new."""
    async with private_platform(endpoints, f"ord{unique}", START, db=NOTICES_DB) as app:
        c = app.client
        tenant = f"order-{unique}"
        await create_tenant(c, tenant, cycle="P1Y")
        service = invoicing_part(app).service
        assert isinstance(service, InvoicingService)
        purchase_id, decline_id = f"{unique}-renewal", f"{unique}-declined"
        charge = {"kind": "support_renewal", "item": "orangecare", "quantity": 2,
                  "unit_price": "108.00", "amount": "216.00",
                  "description": "2 × orangecare automatic renewal (R8.4)",
                  "period": {"from": "2027-01-01", "to": "2028-01-01"}}
        purchase = {"id": purchase_id, "type": "purchase.confirmed", "subject": tenant,
                    "time": "2026-11-30T23:00:00Z",
                    "data": {"tenant": tenant, "actor": None, "item": "orangecare",
                             "kind": "support", "quantity": 2, "lot": "lot-x",
                             "currency": "EUR", "renewal": "automatic", "charges": [charge]}}
        decline = {"id": decline_id, "type": "support.renewal_declined", "subject": tenant,
                   "time": "2026-12-10T09:00:00Z",
                   "data": {"tenant": tenant, "actor": None, "lot": "lot-x",
                            "item": "orangecare", "quantity": 2,
                            "declined": {"from": "2027-01-01", "to": "2028-01-01"},
                            "renewal_event": purchase_id}}
        await service.on_subscription_event(decline)
        assert [d for d in await invoices_of(c, tenant) if d["total"] == "259.20"] == []
        await service.on_subscription_event(purchase)
        for event in (decline, purchase):
            await service.on_subscription_event(event)
        # The first period's own invoice (588.00) comes from the consumer in its own time.
        found = sorted((d["kind"], d["total"]) for d in await invoices_of(c, tenant)
                       if d["total"] == "259.20")
        assert found == [("credit_note", "259.20"), ("immediate", "259.20")]
        note = next(d for d in await invoices_of(c, tenant) if d["kind"] == "credit_note")
        assert (note["subtotal"], note["tax"]) == ("216.00", "43.20")
