"""Several items in one purchase (R4.11): one preview listing every charge, one confirmation
applying all the items or none, one `purchase.confirmed` and so one immediate invoice.

Every tenant is in UTC, monthly, anchored 2026-03-01: period [03-01, 04-01) of 31 days; the
baskets are bought on 2026-03-20T10:00Z, leaving 12 days (20 included, 04-01 excluded); VAT
20 %. Demo catalog (deploy/catalog/2026-11.yaml): essentials 49.00 (sales, crm, emailing),
professional 99.00 (sales, crm, accounting, emailing; includes ai_assist), seats-accounting
12.00, seats-crm 10.00, analytics 30.00, ai-assist 25.00 (single-instance). Prorations are
R4.2's price × remaining local days / days of the period, rounded once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, create_tenant, eventually, set_clock
from tests.entitlements.ent_support import history, isolated_app, tenant_doc
from tests.invoicing.inv_support import buy, invoices_of, lines, private_platform, summary

START = datetime(2026, 2, 28, 12, tzinfo=UTC)
BUY_AT = "2026-03-20T10:00:00Z"
PERIOD_END = "2026-04-01T00:00:00Z"
Json = dict[str, Any]


async def basket(c: httpx.AsyncClient, tenant: str, items: list[Json], *,
                 confirm: bool = True, key: str | None = None, **extra: Any) -> httpx.Response:
    body: Json = {"actor": OWNER, "items": items, "confirm": confirm, **extra}
    headers = ADMIN | ({"Idempotency-Key": key} if key else {})
    return await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=headers)


def charged(answer: Json) -> list[tuple[str, int, str, str]]:
    return [(ch["item"], ch["quantity"], ch["unit_price"], ch["amount"])
            for ch in answer["charges"]]


THREE: list[Json] = [{"item": "professional"}, {"item": "seats-accounting", "quantity": 3},
         {"item": "analytics"}]


async def test_upgrade_seats_and_a_pack_in_one_purchase(endpoints: Endpoints,
                                                        unique: str) -> None:
    """Essentials, with ai-assist bought 2026-03-10T09:00Z (22 days left: 25.00 × 22/31 =
    17.741… → 17.74; lot A). On 03-20 one purchase of three items:
    - professional (upgrade): (99.00 − 49.00) × 12/31 = 19.354… → 19.35
    - seats-accounting × 3: 36.00 × 12/31 = 13.935… → 13.94
    - analytics: 30.00 × 12/31 = 11.612… → 11.61
    Charged now 44.90 on ONE immediate invoice: tax 8.98, total 53.88. Next cycle
    99.00 + 36.00 + 30.00 = 165.00. Professional includes ai_assist, so lot A is moot: it is
    cancelled at the period end (R4.10, `cancels`).
    The preview answers all that and changes nothing; the confirmation, sent twice with one
    Idempotency-Key, buys once. The April invoice renews exactly the 165.00 announced
    (lot A not renewed): tax 33.00, total 198.00.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"three-{unique}"
        await create_tenant(c, tenant, time_zone="UTC", anchor="2026-03-01")
        await set_clock(c, "2026-03-10T09:00:00Z")
        ai = await buy(c, tenant, "ai-assist")
        assert ai["charges"][0]["amount"] == "17.74"
        lot_a = ai["lot"]["id"]
        await set_clock(c, BUY_AT)
        before, past = await tenant_doc(c, tenant), await history(c, tenant)
        expected = [("professional", 1, "50.00", "19.35"),
                    ("seats-accounting", 3, "12.00", "13.94"), ("analytics", 1, "30.00", "11.61")]

        r = await basket(c, tenant, THREE, confirm=False)
        assert r.status_code == 200, r.text
        preview = r.json()
        assert (preview["status"], preview["lot"], preview["lots"]) == ("preview", None, [])
        assert charged(preview) == expected
        assert (preview["next_cycle_amount"], preview["cancels"]) == ("165.00", [lot_a])
        assert preview["invoice"] is None
        assert await tenant_doc(c, tenant) == before
        assert await history(c, tenant) == past

        r = await basket(c, tenant, THREE, key=f"k-{unique}")
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["status"], body["lot"], body["cancels"]) == ("confirmed", None, [lot_a])
        assert charged(body) == expected
        assert [(lot["item"], lot["quantity"], lot["state"]) for lot in body["lots"]] == [
            ("seats-accounting", 3, "active"), ("analytics", 1, "active")]
        assert body["next_cycle_amount"] == "165.00"
        assert body["invoice"] is not None
        again = await basket(c, tenant, THREE, key=f"k-{unique}")
        assert (again.status_code, again.json()) == (201, body)

        doc = await tenant_doc(c, tenant)
        assert doc["plan"] == "professional"
        assert {lot["item"]: (lot["state"], lot["ends_at"]) for lot in doc["lots"]} == {
            "ai-assist": ("cancelled", PERIOD_END), "seats-accounting": ("active", None),
            "analytics": ("active", None)}
        confirmed = [e for e in await history(c, tenant) if e["type"] == "purchase.confirmed"]
        assert len(confirmed) == 2  # ai-assist, then the whole basket once
        assert confirmed[1]["kind"] == "basket"
        assert [i["item"] for i in confirmed[1]["items"]] == [
            "professional", "seats-accounting", "analytics"]
        assert len(confirmed[1]["charges"]) == 3

        found = [i for i in await invoices_of(c, tenant) if i["number"] == body["invoice"]]
        assert [summary(i) for i in found] == [("immediate", None, "53.88")]
        invoice = found[0]
        assert sorted(lines(invoice), key=str) == sorted([
            (None, "proration", "1", "19.35"), ("accounting", "proration", "3", "13.94"),
            (None, "proration", "1", "11.61")], key=str)
        assert (invoice["subtotal"], invoice["tax"]) == ("44.90", "8.98")
        assert len(await invoices_of(c, tenant)) == 3  # March, ai-assist, the basket

        await set_clock(c, "2026-04-01T12:00:00Z")
        april = [i for i in await invoices_of(c, tenant) if i["kind"] == "period"]
        assert [summary(i) for i in april] == [("period", "2026-04-01..2026-05-01", "198.00")]
        assert april[0]["subtotal"] == "165.00"


async def test_one_refused_item_refuses_the_whole_purchase(endpoints: Endpoints,
                                                           unique: str) -> None:
    """Essentials with seats-crm × 1 bought on 03-20 (10.00 × 12/31 = 3.870… → 3.87).
    The basket [seats-crm × 3, ai-assist, professional] decides the plan first (index 2):
    on professional, which includes ai_assist, ai-assist (index 1) is refused (409
    `already_included`, field `items.1.item`), so the seats are not bought either: the
    document, the history and the invoices stay as they were. Without the upgrade the same
    two packs are sold: the preview charges 30.00 × 12/31 = 11.61 and 25.00 × 12/31 = 9.677…
    → 9.68. Malformed baskets are refused before anything is decided, each error naming
    the index of the item at fault.
    """
    async with private_platform(endpoints, unique, START) as app:
        c, tenant = app.client, f"refused-{unique}"
        await create_tenant(c, tenant, time_zone="UTC", anchor="2026-03-01")
        await set_clock(c, BUY_AT)
        assert (await buy(c, tenant, "seats-crm"))["charges"][0]["amount"] == "3.87"
        before, past = await tenant_doc(c, tenant), await history(c, tenant)

        async def both_invoiced() -> list[Json]:
            found = await invoices_of(c, tenant)  # the first period's, and the seats'
            return found if len(found) == 2 else []

        invoices = await eventually(both_invoiced)  # issued by invoicing in its own time
        packs: list[Json] = [{"item": "seats-crm", "quantity": 3}, {"item": "ai-assist"}]

        r = await basket(c, tenant, [*packs, {"item": "professional"}])
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("already_included", "items.1.item")
        assert error["message"].startswith("items.1: ")
        assert await tenant_doc(c, tenant) == before
        assert await history(c, tenant) == past
        assert await invoices_of(c, tenant) == invoices

        preview = (await basket(c, tenant, packs, confirm=False)).json()
        assert [ch["amount"] for ch in preview["charges"]] == ["11.61", "9.68"]

        malformed: list[tuple[Json, str]] = [
            ({"items": [*packs, {"item": "nope"}]}, "items.2.item"),
            ({"items": [packs[0], {"item": "seats-crm", "quantity": 0}]}, "items.1.quantity"),
            ({"items": [{"item": "ai-assist", "quantity": 2}]}, "items.0.quantity"),
            ({"items": [{"item": "essentials"}, packs[0], {"item": "professional"}]},
             "items.2.item"),
            ({"items": packs, "item": "seats-crm"}, "items"),
            ({"items": []}, "items"),
            ({"items": [packs[0]] * 21}, "items"),
            ({"items": packs, "action": "trial"}, "items"),
            ({}, "item"),
        ]
        for extra, field in malformed:
            body: Json = {"actor": OWNER, "confirm": True, **extra}
            r = await c.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
            assert r.status_code == 422, (extra, r.text)
            assert r.json()["error"]["field"] == field, (extra, r.text)
        assert await tenant_doc(c, tenant) == before


async def test_a_downgrade_with_packs_sells_only_what_the_lower_plan_keeps(
        endpoints: Endpoints) -> None:
    """Professional; on 03-20 a basket with a downgrade to essentials (scheduled at the
    period end, 04-01T00:00Z, R4.5) and packs bought now. seats-accounting would be moot
    under essentials (no accounting, R4.10): refused, `items.1.item`, nothing changed.
    With seats-crm × 2 instead: 20.00 × 12/31 = 7.741… → 7.74 charged now, the downgrade
    scheduled; next cycle 49.00 + 20.00 = 69.00.
    """
    async with isolated_app(endpoints, START) as app:
        c, tenant = app.client, "downgrade-basket"
        await create_tenant(c, tenant, plan="professional", time_zone="UTC",
                            anchor="2026-03-01")
        await set_clock(c, BUY_AT)
        before = await tenant_doc(c, tenant)
        r = await basket(c, tenant, [{"item": "essentials"}, {"item": "seats-accounting"}])
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("moot_after_plan_change", "items.1.item")
        assert await tenant_doc(c, tenant) == before

        r = await basket(c, tenant, [{"item": "essentials"},
                                     {"item": "seats-crm", "quantity": 2}])
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["status"], body["effective_at"]) == ("confirmed", PERIOD_END)
        assert charged(body) == [("seats-crm", 2, "10.00", "7.74")]
        assert body["next_cycle_amount"] == "69.00"
        doc = await tenant_doc(c, tenant)
        assert (doc["plan"], doc["pending_plan"]["plan"]) == ("professional", "essentials")
        assert [lot["item"] for lot in doc["lots"]] == ["seats-crm"]
