"""A plan change cancels the lots it makes moot (R4.10): entitlements' answers, lots and
history, and the invoice of the next period (the three parts together).

Every tenant is in UTC, monthly, anchored 2026-03-01: period [03-01, 04-01) of 31 days, its end
2026-04-01T00:00:00Z; VAT 20 %. Demo catalog (deploy/catalog/2026-11.yaml): essentials 49.00
(sales, crm, emailing), professional 99.00 (sales, crm, accounting, emailing; ai_assist),
seats-accounting 12.00, seats-crm 10.00, ai-assist 25.00 (single-instance), analytics 30.00.
Prorations are R4.2's price × remaining local days / 31, rounded once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer

from shared.settings import CommonSettings
from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, create_tenant, eventually, set_clock
from tests.entitlements.ent_support import history, isolated_app, purchase, tenant_doc
from tests.invoicing.inv_support import buy, invoices_of, lines, private_platform, summary

START = datetime(2026, 2, 28, 12, tzinfo=UTC)
PERIOD_END = "2026-04-01T00:00:00Z"
NEXT = "2026-04-01..2026-05-01"
Json = dict[str, Any]


async def lots_by_id(c: httpx.AsyncClient, tenant: str) -> dict[str, Json]:
    return {lot["id"]: lot for lot in (await tenant_doc(c, tenant))["lots"]}


async def entries(c: httpx.AsyncClient, tenant: str, kind: str) -> list[Json]:
    return [e for e in await history(c, tenant) if e["type"] == kind]


def reasons(found: list[Json]) -> dict[str, str | None]:
    """Lot id → the `reason` its history entry gives (None when it gives none)."""
    return {e["lot"]: e.get("reason") for e in found}


async def cancel_by_owner(c: httpx.AsyncClient, tenant: str, lot: str) -> None:
    r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", json={"actor": OWNER},
                     headers=ADMIN)
    assert r.status_code == 200, r.text


async def next_invoice(c: httpx.AsyncClient, tenant: str) -> Json:
    """The period invoice of [04-01, 05-01), issued at its start."""
    found = [i for i in await invoices_of(c, tenant) if summary(i)[:2] == ("period", NEXT)]
    assert len(found) == 1, [summary(i) for i in await invoices_of(c, tenant)]
    invoice = found[0]
    total = Decimal(invoice["subtotal"]) + Decimal(invoice["tax"])
    assert total == Decimal(invoice["total"]), invoice
    return invoice


async def published(bootstrap: str, topic: str, tenant: str, kind: str,
                    within: float = 10.0) -> list[Json]:
    """The `kind` events of `tenant` on `topic` (polls until at least one is there)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[Json] = []
    try:
        async with asyncio.timeout(within):
            while not found:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        event = orjson.loads(record.value) if record.value else {}
                        if record.key == tenant.encode() and event.get("type") == kind:
                            found.append(event)
    finally:
        await consumer.stop()
    return found


async def seat_lots(c: httpx.AsyncClient, tenant: str) -> tuple[str, str, str]:
    """At 2026-03-10T09:00Z (22 days left): seats-accounting × 2, 24.00 × 22/31 = 17.032…
    → 17.03; seats-accounting × 1, 12.00 × 22/31 = 8.516… → 8.52, cancelled by the owner at
    once; seats-crm × 1, 10.00 × 22/31 = 7.096… → 7.10. Their ids (moot, self, crm)."""
    await set_clock(c, "2026-03-10T09:00:00Z")
    moot = await buy(c, tenant, "seats-accounting", 2)
    own = await buy(c, tenant, "seats-accounting", 1)
    crm = await buy(c, tenant, "seats-crm", 1)
    assert [b["charges"][0]["amount"] for b in (moot, own, crm)] == ["17.03", "8.52", "7.10"]
    await cancel_by_owner(c, tenant, own["lot"]["id"])
    return moot["lot"]["id"], own["lot"]["id"], crm["lot"]["id"]


async def downgrade(c: httpx.AsyncClient, tenant: str, moot: str) -> None:
    """At 2026-03-20T10:00Z professional → essentials: a preview that changes nothing, then
    the confirmed downgrade, scheduled at the period end and cancelling only `moot`."""
    await set_clock(c, "2026-03-20T10:00:00Z")
    before, past = await tenant_doc(c, tenant), await history(c, tenant)
    preview = await purchase(c, tenant, "essentials", confirm=False)
    assert preview.status_code == 200, preview.text
    assert preview.json()["status"] == "preview"
    assert preview.json()["cancels"] == [moot]
    assert preview.json()["charges"] == []
    assert preview.json()["effective_at"] == PERIOD_END
    assert await tenant_doc(c, tenant) == before
    assert await history(c, tenant) == past
    r = await purchase(c, tenant, "essentials")
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["status"], body["charges"], body["cancels"]) == ("scheduled", [], [moot])
    assert body["effective_at"] == PERIOD_END
    assert body["next_cycle_amount"] == "49.00"
    assert body["invoice"] is None


async def test_downgrade_cancels_seat_lots_of_a_dropped_module(endpoints: Endpoints,
                                                                unique: str) -> None:
    """Professional (99.00) with seats-accounting × 2 (lot M), seats-accounting × 1 the owner
    cancelled itself (lot S) and seats-crm × 1 (lot C); essentials has no accounting.

    The downgrade on 03-20 cancels M only: C's crm is in essentials, S is already cancelled
    and stays the tenant's own cancellation. At 04-01 M expires with reason plan_change, S
    with reason cancelled; plan.changed essentials at 04-01T00:00Z names M.
    Next period (04-01..05-01): plan essentials 49.00 + seats-crm 1 × 10.00 = 59.00, tax
    11.80, total 70.80. Billing M too would add 2 × 12.00 = 24.00 (83.00), S 12.00 more.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"down-{unique}"
        await create_tenant(c, tenant, plan="professional", time_zone="UTC",
                            anchor="2026-03-01")
        moot, own, crm = await seat_lots(c, tenant)
        await downgrade(c, tenant, moot)
        lots = await lots_by_id(c, tenant)
        assert (lots[moot]["state"], lots[moot]["ends_at"]) == ("cancelled", PERIOD_END)
        assert lots[moot]["next_cycle_amount"] is None
        assert (lots[own]["state"], lots[own]["ends_at"]) == ("cancelled", PERIOD_END)
        assert (lots[crm]["state"], lots[crm]["ends_at"]) == ("active", None)
        cancelled = await entries(c, tenant, "lot.cancelled")
        assert reasons(cancelled) == {own: None, moot: "plan_change"}
        assert [e["ends_at"] for e in cancelled] == [PERIOD_END, PERIOD_END]
        scheduled = await entries(c, tenant, "plan.downgrade_scheduled")
        assert [e["cancels"] for e in scheduled] == [[moot]]
        assert await entries(c, tenant, "plan.changed") == []

        await set_clock(c, "2026-04-01T12:00:00Z")
        doc = await tenant_doc(c, tenant)
        assert (doc["plan"], doc["pending_plan"]) == ("essentials", None)
        assert {lot["id"]: lot["state"] for lot in doc["lots"]} == {
            moot: "expired", own: "expired", crm: "active"}
        expired = await entries(c, tenant, "lot.expired")
        assert reasons(expired) == {moot: "plan_change", own: "cancelled"}
        assert {e["at"] for e in expired} == {PERIOD_END}
        changed = await entries(c, tenant, "plan.changed")
        assert [(e["at"], e["from"], e["to"], e["cancels"]) for e in changed] == [
            (PERIOD_END, "professional", "essentials", [moot])]
        events = await published(endpoints.kafka_bootstrap, f"subscriptions-inv-{unique}",
                                 tenant, "plan.changed")
        assert [(e["time"], e["data"]["cancels"]) for e in events] == [(PERIOD_END, [moot])]

        invoice = await next_invoice(c, tenant)
        assert lines(invoice) == [(None, "plan", "1", "49.00"), ("crm", "pack", "1", "10.00")]
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (
            "59.00", "11.80", "70.80")


async def test_upgrade_charges_now_and_cancels_an_included_feature_pack(
        endpoints: Endpoints, unique: str) -> None:
    """Essentials with ai-assist (25.00) bought 2026-03-05T09:00Z: 27 days left (05..31),
    25.00 × 27/31 = 21.774… → 21.77, tax 4.354 → 4.35, total 26.12.

    Upgrade to professional (which includes ai_assist) on 2026-03-11T09:00Z: 21 days left,
    (99.00 − 49.00) × 21/31 = 1050/31 = 33.870… → 33.87 charged now, period 03-11..04-01;
    tax 6.774 → 6.77, total 40.64. The ai-assist lot stays until 04-01, then expires with
    reason plan_change. Next period: professional 99.00 alone, tax 19.80, total 118.80
    (ai-assist still billed would add 25.00: 124.00, 148.80).
    First invoice (essentials for March, in advance): 49.00 + 9.80 = 58.80.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"up-{unique}"
        await create_tenant(c, tenant, time_zone="UTC", anchor="2026-03-01")
        await set_clock(c, "2026-03-05T09:00:00Z")
        bought = await buy(c, tenant, "ai-assist")
        assert bought["charges"][0]["amount"] == "21.77"
        lot = bought["lot"]["id"]
        await set_clock(c, "2026-03-11T09:00:00Z")
        preview = (await purchase(c, tenant, "professional", confirm=False)).json()
        assert (preview["status"], preview["cancels"]) == ("preview", [lot])
        assert [ch["amount"] for ch in preview["charges"]] == ["33.87"]
        r = await purchase(c, tenant, "professional")
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["status"], body["cancels"], body["note"]) == ("confirmed", [lot], None)
        assert [(ch["kind"], ch["amount"], ch["period"]) for ch in body["charges"]] == [
            ("proration", "33.87", {"from": "2026-03-11", "to": "2026-04-01"})]
        assert body["next_cycle_amount"] == "99.00"
        assert body["invoice"] is not None
        assert (await lots_by_id(c, tenant))[lot]["state"] == "cancelled"
        assert (await lots_by_id(c, tenant))[lot]["ends_at"] == PERIOD_END
        assert reasons(await entries(c, tenant, "lot.cancelled")) == {lot: "plan_change"}
        changed = await entries(c, tenant, "plan.changed")
        assert [(e["at"], e["from"], e["to"], e["cancels"]) for e in changed] == [
            ("2026-03-11T09:00:00Z", "essentials", "professional", [lot])]

        await set_clock(c, "2026-04-01T12:00:00Z")
        assert (await lots_by_id(c, tenant))[lot]["state"] == "expired"
        expired = await entries(c, tenant, "lot.expired")
        assert [(e["at"], e["lot"], e["reason"]) for e in expired] == [
            (PERIOD_END, lot, "plan_change")]
        found = await invoices_of(c, tenant)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-03-01..2026-04-01", "58.80"), ("immediate", None, "26.12"),
            ("immediate", None, "40.64"), ("period", NEXT, "118.80")]
        assert found[2]["number"] == body["invoice"]
        assert lines(found[3]) == [(None, "plan", "1", "99.00")]


async def test_dropping_the_downgrade_restores_the_lots_it_cancelled(endpoints: Endpoints,
                                                                      unique: str) -> None:
    """The downgrade of the first test (lots M, S, C; M cancelled by it on 03-20), dropped
    on 2026-03-25T08:00Z by buying professional again: charged nothing, M active again with
    no end (lot.uncancelled, reason plan_change); S, cancelled by the owner, stays cancelled
    and expires at 04-01 with reason cancelled.
    Next period: professional 99.00 + seats-accounting 2 × 12.00 = 24.00 + seats-crm 10.00
    = 133.00, tax 26.60, total 159.60.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"stay-{unique}"
        await create_tenant(c, tenant, plan="professional", time_zone="UTC",
                            anchor="2026-03-01")
        moot, own, crm = await seat_lots(c, tenant)
        await downgrade(c, tenant, moot)
        await set_clock(c, "2026-03-25T08:00:00Z")
        before = await tenant_doc(c, tenant)
        preview = await purchase(c, tenant, "professional", confirm=False)
        assert (preview.status_code, preview.json()["status"]) == (200, "preview")
        assert await tenant_doc(c, tenant) == before
        r = await purchase(c, tenant, "professional")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["charges"]) == ("confirmed", [])
        lots = await lots_by_id(c, tenant)
        assert (lots[moot]["state"], lots[moot]["ends_at"]) == ("active", None)
        assert lots[moot]["next_cycle_amount"] == "24.00"
        assert (lots[own]["state"], lots[own]["ends_at"]) == ("cancelled", PERIOD_END)
        assert (await tenant_doc(c, tenant))["pending_plan"] is None
        uncancelled = await entries(c, tenant, "lot.uncancelled")
        assert [(e["at"], e["lot"], e["reason"]) for e in uncancelled] == [
            ("2026-03-25T08:00:00Z", moot, "plan_change")]
        dropped = await entries(c, tenant, "plan.downgrade_cancelled")
        assert [(e["plan"], e["was"]) for e in dropped] == [("professional", "essentials")]

        await set_clock(c, "2026-04-01T12:00:00Z")
        doc = await tenant_doc(c, tenant)
        assert doc["plan"] == "professional"
        assert {lot["id"]: lot["state"] for lot in doc["lots"]} == {
            moot: "active", own: "expired", crm: "active"}
        assert reasons(await entries(c, tenant, "lot.expired")) == {own: "cancelled"}
        assert await entries(c, tenant, "plan.changed") == []
        invoice = await next_invoice(c, tenant)
        assert lines(invoice) == [(None, "plan", "1", "99.00"),
                                  ("accounting", "pack", "2", "24.00"),
                                  ("crm", "pack", "1", "10.00")]
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (
            "133.00", "26.60", "159.60")


def higher_plans_catalog(tmp_path: Path) -> Path:
    """The demo catalog plus two plans above professional (rank 2, 99.00) that are not
    dearer: premium, rank 3, at the same price, which also includes analytics; compact,
    rank 4, cheaper at 89.00."""
    demo = CommonSettings.model_fields["catalog"].default
    raw: Json = yaml.safe_load(Path(demo).read_text(encoding="utf-8"))
    professional = next(p for p in raw["plans"] if p["id"] == "professional")
    raw["plans"].append({**professional, "id": "premium", "rank": 3,
                         "features": ["ai_assist", "analytics"]})
    raw["plans"].append({**professional, "id": "compact", "rank": 4, "price": {
        "P1M": "89.00", "P1Y": "890.00", "P30D": "89.00", "P365D": "890.00"}})
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def says_no_charge(note: str | None) -> None:
    assert note is not None
    assert "no charge" in note.lower(), note
    assert "R4.2" in note, note


async def upgrade_for_nothing(c: httpx.AsyncClient, tenant: str, plan: str,
                              cancels: list[str], next_cycle: str) -> None:
    """Preview (changing nothing) then confirm an upgrade that charges nothing and says so."""
    before, past = await tenant_doc(c, tenant), await history(c, tenant)
    preview = await purchase(c, tenant, plan, confirm=False)
    assert preview.status_code == 200, preview.text
    assert (preview.json()["status"], preview.json()["charges"]) == ("preview", [])
    assert preview.json()["cancels"] == cancels
    says_no_charge(preview.json()["note"])
    assert (await tenant_doc(c, tenant), await history(c, tenant)) == (before, past)
    r = await purchase(c, tenant, plan)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["charges"], body["invoice"]) == ("confirmed", [], None)
    says_no_charge(body["note"])
    assert (body["cancels"], body["next_cycle_amount"]) == (cancels, next_cycle)
    assert (await tenant_doc(c, tenant))["plan"] == plan
    confirmed = (await entries(c, tenant, "purchase.confirmed"))[-1]
    assert (confirmed["item"], confirmed["charges"]) == (plan, [])


async def test_upgrade_that_is_not_dearer_charges_nothing(endpoints: Endpoints, unique: str,
                                                          tmp_path: Path) -> None:
    """Two professional tenants (first invoice 99.00 + 19.80 = 118.80) on 2026-03-11T09:00Z.

    same: analytics (30.00) bought 03-05T09:00Z, 30.00 × 27/31 = 26.129… → 26.13, tax 5.226
      → 5.23, total 31.36; upgraded to premium (99.00 = 99.00): nothing charged, no invoice;
      analytics, included in premium, cancelled at the period end.
    lower: upgraded to compact (89.00 < 99.00): nothing charged, no invoice.
    Then each buys seats-crm × 1 (21 days left): 10.00 × 21/31 = 6.774… → 6.77, tax 1.354 →
    1.35, total 8.12; once that invoice is there, invoicing has read the upgrade before it.
    Next period: same 99.00 + 10.00 = 109.00, tax 21.80, total 130.80 (no analytics 30.00);
    lower 89.00 + 10.00 = 99.00, tax 19.80, total 118.80.
    """
    catalog = higher_plans_catalog(tmp_path)
    async with private_platform(endpoints, unique, START, catalog=catalog) as app:
        c, same, lower = app.client, f"same-{unique}", f"lower-{unique}"
        for tenant in (same, lower):
            await create_tenant(c, tenant, plan="professional", time_zone="UTC",
                                anchor="2026-03-01")
        await set_clock(c, "2026-03-05T09:00:00Z")
        bought = await buy(c, same, "analytics")
        assert bought["charges"][0]["amount"] == "26.13"
        lot = bought["lot"]["id"]
        await set_clock(c, "2026-03-11T09:00:00Z")
        await upgrade_for_nothing(c, same, "premium", [lot], "99.00")
        await upgrade_for_nothing(c, lower, "compact", [], "89.00")
        assert reasons(await entries(c, same, "lot.cancelled")) == {lot: "plan_change"}
        for tenant in (same, lower):
            assert (await buy(c, tenant, "seats-crm", 1))["charges"][0]["amount"] == "6.77"

        async def sentinel_issued() -> bool:
            totals = [[summary(i)[2] for i in await invoices_of(c, t)] for t in (same, lower)]
            return all("8.12" in found for found in totals)

        await eventually(sentinel_issued)
        first = ("immediate", "2026-03-01..2026-04-01", "118.80")
        assert [summary(i) for i in await invoices_of(c, same)] == [
            first, ("immediate", None, "31.36"), ("immediate", None, "8.12")]
        assert [summary(i) for i in await invoices_of(c, lower)] == [
            first, ("immediate", None, "8.12")]

        await set_clock(c, "2026-04-01T12:00:00Z")
        assert (await lots_by_id(c, same))[lot]["state"] == "expired"
        assert reasons(await entries(c, same, "lot.expired")) == {lot: "plan_change"}
        for tenant, plan, total in ((same, "99.00", "130.80"), (lower, "89.00", "118.80")):
            invoice = await next_invoice(c, tenant)
            assert lines(invoice) == [(None, "plan", "1", plan), ("crm", "pack", "1", "10.00")]
            assert invoice["total"] == total


async def test_the_owner_cannot_undo_a_plan_change_cancellation(endpoints: Endpoints,
                                                                unique: str) -> None:
    """Professional with seats-accounting × 1 (lot M, bought 03-10). The downgrade of 03-20
    cancels M (plan_change): M would grant seats of a module essentials lacks, so the owner's
    undo on 03-21 is refused (409 moot_after_plan_change, naming R4.10) and M is unchanged;
    on 04-01 it expires with reason plan_change, the only lot.expired."""
    async with isolated_app(endpoints, START) as app:
        c, tenant = app.client, f"own-{unique}"
        await create_tenant(c, tenant, plan="professional", time_zone="UTC",
                            anchor="2026-03-01")
        await set_clock(c, "2026-03-10T09:00:00Z")
        lot = (await purchase(c, tenant, "seats-accounting")).json()["lot"]["id"]
        await set_clock(c, "2026-03-20T10:00:00Z")
        assert (await purchase(c, tenant, "essentials")).json()["cancels"] == [lot]
        await set_clock(c, "2026-03-21T10:00:00Z")
        r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/uncancel", json={"actor": OWNER},
                         headers=ADMIN)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "moot_after_plan_change"
        assert "R4.10" in r.json()["error"]["message"]
        lots = await lots_by_id(c, tenant)
        assert (lots[lot]["state"], lots[lot]["ends_at"]) == ("cancelled", PERIOD_END)
        assert await entries(c, tenant, "lot.uncancelled") == []
        await set_clock(c, "2026-04-01T12:00:00Z")
        assert (await lots_by_id(c, tenant))[lot]["state"] == "expired"
        assert reasons(await entries(c, tenant, "lot.expired")) == {lot: "plan_change"}
