"""One test per rule (R2.3, R4.1–R4.9, R5, R5.2, R5.3), each on an app of its own whose manual
clock the test sets to the dates the rule's example needs."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.stack import Endpoints
from tests.conftest import ADMIN, create_tenant, set_clock
from tests.entitlements.ent_support import events_for, history, isolated_app, purchase, tenant_doc

MARCH_1 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_r4_2_worked_example_pack_prorated(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        await create_tenant(c, f"t-{unique}", time_zone="UTC", anchor="2026-03-01")
        await set_clock(c, "2026-03-20T10:00:00Z")
        r = await purchase(c, f"t-{unique}", "analytics")  # 30.00 a month
        assert r.status_code == 201, r.text
        body = r.json()
        # R4.2: 30.00 × 12/31 = 11.61, period 2026-03-20..2026-04-01, full price next cycle.
        assert body["charges"] == [{
            "kind": "proration", "description": body["charges"][0]["description"],
            "amount": "11.61", "period": {"from": "2026-03-20", "to": "2026-04-01"},
            "item": "analytics", "quantity": 1, "unit_price": "30.00"}]
        assert body["next_cycle_amount"] == "30.00"
        assert body["status"] == "confirmed"
        assert body["invoice"] is None
        assert body["lot"]["state"] == "active"
        assert body["lot"]["ends_at"] is None
        # The charges travel in purchase.confirmed for invoicing (R9.2).
        events = await events_for(endpoints.kafka_bootstrap, f"t-{unique}", want=2)
        confirmed = [e for e in events if e["type"] == "purchase.confirmed"]
        assert [e["data"]["charges"][0]["amount"] for e in confirmed] == ["11.61"]


async def test_r4_2_plan_upgrade_charges_prorated_difference(endpoints: Endpoints,
                                                            unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        await create_tenant(c, f"t-{unique}", time_zone="UTC")
        await set_clock(c, "2026-03-20T10:00:00Z")
        preview = await purchase(c, f"t-{unique}", "professional", confirm=False)
        assert preview.json()["status"] == "preview"
        r = await purchase(c, f"t-{unique}", "professional")
        assert r.status_code == 201, r.text
        # (99.00 − 49.00) × 12/31 = 19.354… → 19.35, rounded once (R3.2).
        assert r.json()["charges"][0]["amount"] == "19.35"
        assert r.json()["next_cycle_amount"] == "99.00"
        assert (await tenant_doc(c, f"t-{unique}"))["plan"] == "professional"


async def test_r2_3_month_end_anchors(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, datetime(2026, 1, 31, 12, tzinfo=UTC)) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC", anchor="2026-01-31")
        expected = [("2026-02-15T12:00:00Z", "2026-01-31", "2026-02-28"),
                    ("2026-03-10T12:00:00Z", "2026-02-28", "2026-03-31"),
                    ("2026-04-05T12:00:00Z", "2026-03-31", "2026-04-30"),
                    ("2026-05-30T12:00:00Z", "2026-04-30", "2026-05-31")]
        for instant, start, end in expected:
            await set_clock(c, instant)
            assert (await tenant_doc(c, tenant))["period"] == {"from": start, "to": end}
        # A purchase in the period 2026-04-30..2026-05-31 (31 days) on 05-30: 1/31.
        r = await purchase(c, tenant, "analytics")
        assert r.json()["charges"][0]["amount"] == "0.97"  # 30.00 × 1/31
        assert r.json()["charges"][0]["period"] == {"from": "2026-05-30", "to": "2026-05-31"}


async def test_r2_1_periods_are_local_to_the_tenant_zone(endpoints: Endpoints,
                                                        unique: str) -> None:
    # 2026-03-31T23:30Z is already 1 April in Paris: a new period there, not in UTC.
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        await create_tenant(c, f"p-{unique}", time_zone="Europe/Paris", anchor="2026-03-01")
        await set_clock(c, "2026-03-31T23:30:00Z")
        assert (await tenant_doc(c, f"p-{unique}"))["period"]["from"] == "2026-04-01"
        zone = await app.runtime.redis.hget("tenant-zones", f"p-{unique}")
        assert zone == "Europe/Paris"  # metering files e-mails under the local day


async def test_r4_3_preview_changes_nothing(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        await set_clock(c, "2026-03-20T10:00:00Z")
        before, entries = await tenant_doc(c, tenant), await history(c, tenant)
        for item, quantity in (("seats-crm", 5), ("professional", None), ("web-training", 2)):
            r = await purchase(c, tenant, item, quantity=quantity, confirm=False)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "preview"
            assert r.json()["lot"] is None
            assert r.json()["charges"], "a preview lists every amount it will charge"
        assert (await purchase(c, tenant, "seats-crm", quantity=5, confirm=False)).json()[
            "charges"][0]["amount"] == "19.35"  # 5 × 10.00 × 12/31
        assert await tenant_doc(c, tenant) == before
        assert await history(c, tenant) == entries


async def test_r4_4_cancel_whole_lot_until_period_end_then_expire(endpoints: Endpoints,
                                                                 unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        lot = (await purchase(c, tenant, "seats-crm", quantity=5)).json()["lot"]["id"]
        await set_clock(c, "2026-03-10T00:00:00Z")
        r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", headers=ADMIN,
                         json={"actor": {"user_id": "u-owner", "role": "owner"}})
        assert r.status_code == 200, r.text
        assert r.json()["lot"] == {"id": lot, "item": "seats-crm", "quantity": 5,
                                   "state": "cancelled", "ends_at": "2026-04-01T00:00:00Z"}
        r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/uncancel", headers=ADMIN, json={})
        assert r.json()["lot"]["state"] == "active"
        await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", headers=ADMIN)
        # Still covering until the period end: the whole lot, never part of it.
        check = await c.get(f"/v1/tenants/{tenant}/check?module=crm&user=u-9", headers=ADMIN)
        assert check.json()["limit"] == 5
        assert check.json()["covered_by"] == lot
        await set_clock(c, "2026-03-31T23:59:59Z")
        assert (await tenant_doc(c, tenant))["lots"][0]["state"] == "cancelled"
        await set_clock(c, "2026-04-01T00:00:00Z")
        assert (await tenant_doc(c, tenant))["lots"][0]["state"] == "expired"
        r = await c.post(f"/v1/tenants/{tenant}/lots/{lot}/uncancel", headers=ADMIN)
        assert r.status_code == 409  # too late: it expired at the period end


async def test_r4_8_expiry_published_on_time(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="Europe/Paris")
        lot = (await purchase(c, tenant, "sub-accounts")).json()["lot"]["id"]
        await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", headers=ADMIN)
        await set_clock(c, "2026-06-01T00:00:00Z")
        events = await events_for(endpoints.kafka_bootstrap, tenant, want=4)
        expired = [e for e in events if e["type"] == "lot.expired"]
        assert len(expired) == 1
        # Local midnight of 1 April in Paris, when the period ended (R2.1).
        assert expired[0]["time"] == "2026-03-31T22:00:00Z"
        assert expired[0]["data"]["lot"] == lot
        assert expired[0]["id"]


async def test_r4_5_downgrade_at_period_end_without_refund(endpoints: Endpoints,
                                                          unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC", plan="professional")
        await set_clock(c, "2026-03-20T10:00:00Z")
        r = await purchase(c, tenant, "essentials")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "scheduled"
        assert r.json()["charges"] == []
        assert r.json()["effective_at"] == "2026-04-01T00:00:00Z"
        assert (await tenant_doc(c, tenant))["plan"] == "professional"
        ai = await c.get(f"/v1/tenants/{tenant}/check?feature=ai_assist", headers=ADMIN)
        assert ai.json()["decision"] == "covered"
        await set_clock(c, "2026-04-01T00:00:00Z")
        doc = await tenant_doc(c, tenant)
        assert doc["plan"] == "essentials"
        assert doc["pending_plan"] is None
        ai = await c.get(f"/v1/tenants/{tenant}/check?feature=ai_assist", headers=ADMIN)
        assert ai.json()["decision"] == "denied"
        assert "plan.downgraded" in [h["type"] for h in await history(c, tenant)]


async def test_r4_1_renewal_off_ends_subscription_and_packs(endpoints: Endpoints,
                                                           unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        await purchase(c, tenant, "seats-crm", quantity=2)
        r = await c.patch(f"/v1/tenants/{tenant}", json={"renewal": False}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["ends_at"] == "2026-04-01T00:00:00Z"
        assert r.json()["lots"][0]["ends_at"] == "2026-04-01T00:00:00Z"
        # On again, then off again: allowed any time before the period end.
        await c.patch(f"/v1/tenants/{tenant}", json={"renewal": True}, headers=ADMIN)
        await set_clock(c, "2026-03-31T12:00:00Z")
        await c.patch(f"/v1/tenants/{tenant}", json={"renewal": False}, headers=ADMIN)
        await set_clock(c, "2026-04-01T00:00:00Z")
        doc = await tenant_doc(c, tenant)
        assert doc["status"] == "ended"
        assert [lot["state"] for lot in doc["lots"]] == ["expired"]
        check = await c.get(f"/v1/tenants/{tenant}/check?module=crm", headers=ADMIN)
        assert check.json()["decision"] == "denied"
        assert check.json()["reason"] == "subscription_ended"
        types = [e["type"] for e in await events_for(endpoints.kafka_bootstrap, tenant, 6)]
        assert types.count("subscription.ended") == 1
        assert "lot.expired" in types


async def test_r4_6_one_time_items_charged_in_full_never_renewed(endpoints: Endpoints,
                                                                unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        await create_tenant(c, f"t-{unique}", time_zone="UTC")
        await set_clock(c, "2026-03-20T10:00:00Z")
        r = await purchase(c, f"t-{unique}", "web-training", quantity=2)
        assert r.status_code == 201, r.text
        assert r.json()["charges"][0]["kind"] == "one_time"
        assert r.json()["charges"][0]["amount"] == "300.00"  # in full, not prorated
        assert r.json()["next_cycle_amount"] is None
        assert (await tenant_doc(c, f"t-{unique}"))["lots"] == []  # nothing to renew


async def test_r4_7_single_instance_pack_once(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        await create_tenant(c, f"e-{unique}", time_zone="UTC")
        assert (await purchase(c, f"e-{unique}", "ai-assist")).status_code == 201
        again = await purchase(c, f"e-{unique}", "ai-assist")
        assert again.status_code == 409
        assert "R4.7" in again.json()["error"]["message"]
        assert (await purchase(c, f"e-{unique}", "ai-assist", quantity=2)).status_code == 422
        # Included in the plan: refused even once.
        await create_tenant(c, f"p-{unique}", time_zone="UTC", plan="professional")
        included = await purchase(c, f"p-{unique}", "ai-assist")
        assert included.status_code == 409
        assert included.json()["error"]["code"] == "already_included"
        # Quantity packs: as many lots as needed.
        for _ in range(3):
            assert (await purchase(c, f"p-{unique}", "emails-1000")).status_code == 201
        assert len((await tenant_doc(c, f"p-{unique}"))["lots"]) == 3


async def test_r5_who_may_do_what(endpoints: Endpoints, unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        table = {  # R5 (docs/rules.md, R5): role → action → allowed
            "owner": {"buy": True, "quote": True, "trial": True, "request_feature": False},
            "admin": {"buy": False, "quote": False, "trial": True, "request_feature": True},
            "supervisor": {"buy": False, "quote": False, "trial": False,
                           "request_feature": True},
            "agent": {"buy": False, "quote": False, "trial": False, "request_feature": False},
        }
        for role, actions in table.items():
            for action, allowed in actions.items():
                r = await purchase(c, tenant, "analytics", action=action, confirm=False,
                                   actor={"user_id": f"u-{role}", "role": role})
                assert (r.status_code < 400) == allowed, (role, action, r.text)
                if not allowed:
                    assert r.status_code == 403
                    message = r.json()["error"]["message"]
                    assert f"role '{role}'" in message  # R5.2: names role and action
        # An admin may ask for a quote where the account allows it.
        await create_tenant(c, f"q-{unique}", time_zone="UTC", account_allows_quotes=True)
        r = await purchase(c, f"q-{unique}", "analytics", action="quote",
                           actor={"user_id": "u-a", "role": "admin"})
        assert r.status_code == 202
        assert r.json()["status"] == "requested"


async def test_r5_2_requests_notify_the_owner_and_charge_nothing(endpoints: Endpoints,
                                                                unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        r = await purchase(c, tenant, "storage", action="request_feature",
                           actor={"user_id": "u-sup", "role": "supervisor"})
        assert r.status_code == 202
        assert r.json()["charges"] == []
        r = await purchase(c, tenant, "web-training", action="quote")
        assert r.json()["status"] == "requested"
        events = await events_for(endpoints.kafka_bootstrap, tenant, want=3)
        requested = {e["type"]: e["data"] for e in events if e["type"].endswith("requested")}
        assert requested["feature.requested"]["notify"] == "owner"
        assert requested["feature.requested"]["actor"]["role"] == "supervisor"
        assert requested["quote.requested"]["item"] == "web-training"
        assert (await tenant_doc(c, tenant))["lots"] == []


async def test_r5_3_trial_then_expiry_and_no_second_trial(endpoints: Endpoints,
                                                         unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        r = await purchase(c, tenant, "analytics", action="trial")
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "trialing"
        assert r.json()["charges"] == []
        assert r.json()["lot"]["ends_at"] == "2026-03-15T00:00:00Z"  # 14 days
        check = await c.get(f"/v1/tenants/{tenant}/check?feature=analytics", headers=ADMIN)
        assert check.json()["decision"] == "covered"
        assert check.json()["reason"] == "trial"
        await set_clock(c, "2026-03-15T00:00:00Z")
        check = await c.get(f"/v1/tenants/{tenant}/check?feature=analytics", headers=ADMIN)
        assert check.json()["decision"] == "denied"
        again = await purchase(c, tenant, "analytics", action="trial")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "trial_used"
        assert (await purchase(c, tenant, "analytics")).status_code == 201  # the owner buys
        types = [h["type"] for h in await history(c, tenant)]
        assert types.index("trial.ended") < types.index("purchase.confirmed")


async def test_r4_9_history_lists_dates_actors_amounts(endpoints: Endpoints,
                                                      unique: str) -> None:
    async with isolated_app(endpoints, MARCH_1) as app:
        c = app.client
        tenant = f"t-{unique}"
        await create_tenant(c, tenant, time_zone="UTC")
        await set_clock(c, "2026-03-20T10:00:00Z")
        lot = (await purchase(c, tenant, "seats-crm", quantity=3)).json()["lot"]["id"]
        await c.post(f"/v1/tenants/{tenant}/lots/{lot}/cancel", headers=ADMIN,
                     json={"actor": {"user_id": "u-owner", "role": "admin"}})
        entries = await history(c, tenant)
        assert [e["type"] for e in entries] == ["tenant.created", "purchase.confirmed",
                                                "lot.cancelled"]
        bought = entries[1]
        assert bought["at"] == "2026-03-20T10:00:00Z"
        assert bought["actor"]["user_id"] == "u-owner"
        assert bought["actor"]["role"] == "owner"
        assert bought["charges"][0]["amount"] == "11.61"  # 3 × 10.00 × 12/31
        # Append-only and paged: the first two entries never change.
        page = await c.get(f"/v1/tenants/{tenant}/history?limit=2", headers=ADMIN)
        assert page.json()["data"] == entries[:2]
        rest = await c.get(f"/v1/tenants/{tenant}/history?cursor={page.json()['next_cursor']}",
                           headers=ADMIN)
        assert rest.json()["data"] == entries[2:]
