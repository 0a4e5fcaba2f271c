"""Worked examples, each computed by hand in its docstring.

Demo catalog (deploy/catalog/2026-11.yaml): essentials 49.00/month (sales, crm, emailing),
seats-crm 10.00, seats-business 25.00 (sales, crm, accounting), extra users 15.00 on sales and
crm, emails-1000 5.00 (1,000 e-mails), e-mail overage 0.002. VAT 20 %.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.stack import Endpoints
from tests.conftest import ADMIN, create_tenant, set_clock
from tests.invoicing.inv_support import (
    access,
    buy,
    emails,
    invoices_of,
    lines,
    private_platform,
    send,
    summary,
)


async def test_anchor_31_january_through_leap_february(endpoints: Endpoints,
                                                        unique: str) -> None:
    """Anchor 2028-01-31 (2028 is a leap year), Europe/Paris, essentials 49.00, VAT 20 %.

    R2.3 from the original anchor: periods [01-31, 02-29), [02-29, 03-31), [03-31, 04-30).
    - 2028-01-31: first period in advance, kind immediate: 49.00 + 9.80 = 58.80.
    - 2028-02-29 and 2028-03-31: kind period, plan 49.00 each, no usage: 58.80 each.
    Clock at 2028-04-01: three invoices, numbers INV-2028-000001..3 in order.
    """
    async with private_platform(endpoints, unique, datetime(2028, 1, 30, 12, tzinfo=UTC)) as app:
        tenant = f"leap-{unique}"
        await create_tenant(app.client, tenant, anchor="2028-01-31")
        await set_clock(app.client, "2028-04-01T00:00:00Z")
        found = await invoices_of(app.client, tenant)
        assert [summary(i) for i in found] == [
            ("immediate", "2028-01-31..2028-02-29", "58.80"),
            ("period", "2028-02-29..2028-03-31", "58.80"),
            ("period", "2028-03-31..2028-04-30", "58.80"),
        ]
        assert [i["number"] for i in found] == ["INV-2028-000001", "INV-2028-000002",
                                                "INV-2028-000003"]
        assert lines(found[1]) == [(None, "plan", "1", "49.00")]
        assert found[1]["subtotal"] == "49.00"
        assert found[1]["tax"] == "9.80"


async def test_march_examples(endpoints: Endpoints, unique: str) -> None:
    """Five tenants anchored 2026-03-01 (period [03-01, 04-01), 31 days), VAT 20 %.

    pack (Europe/Paris): analytics (30.00) bought 2026-03-20 → R4.2 30.00 × 12/31 = 11.6129
      → 11.61, its own immediate invoice: tax 2.322 → 2.32, total 13.93. On 04-01 the
      renewal carries the full price: plan 49.00 + analytics 30.00 = 79.00, tax 15.80, 94.80.
    cancel: seats-crm × 2 bought 03-01 (20.00 × 31/31 = 20.00 immediate, total 24.00); users
      u1, u2, u3 (and the admin) granted on crm; the lot cancelled 03-15. 04-01: extra users
      3 − capacity 2 (a lot cancelled during the period still counts, R6.4) = 1 × 15.00;
      in advance plan 49.00 and no seats-crm → 64.00, tax 12.80, total 76.80. 05-01: capacity
      0 → 3 × 15.00 = 45.00 + 49.00 = 94.00, tax 18.80, total 112.80.
    three: u1 on crm and sales, u2 on crm, u3 on sales, the admin on both, one seats-crm × 1:
      crm 2 − 1 = 1, sales 2 − 0 = 2 → 3 × 15.00 = 45.00; advance 49.00 + 10.00 = 59.00;
      subtotal 104.00, tax 20.80, total 124.80.
    off (renewal switched off 03-10, one extra user on crm): 04-01 carries only the arrears
      15.00 (tax 3.00, total 18.00) with `period` = the period that ended; nothing after.
    dst (America/Los_Angeles; DST starts 2026-03-08): 03-01 starts 08:00Z (PST), 04-01 at
      07:00Z (PDT). 100 e-mails at 04-01T06:30Z (23:30 local on 03-31) fall in March, 50 at
      07:30Z in April; no e-mail pack → overage 100 × 0.002 = 0.20; 49.00 + 0.20 = 49.20,
      tax 9.84, total 59.04, issued at 2026-04-01T07:00:00Z.
    """
    async with private_platform(endpoints, unique, datetime(2026, 2, 28, 12, tzinfo=UTC)) as app:
        c = app.client
        pack, cancel, three, off, dst = (f"{n}-{unique}" for n in
                                         ("pack", "cancel", "three", "off", "dst"))
        for tenant in (pack, cancel, three, off):
            await create_tenant(c, tenant, anchor="2026-03-01")
        await create_tenant(c, dst, anchor="2026-03-01", time_zone="America/Los_Angeles")
        await set_clock(c, "2026-03-01T12:00:00Z")
        lot = (await buy(c, cancel, "seats-crm", 2))["lot"]["id"]
        await buy(c, three, "seats-crm", 1)
        events = []
        for i, (tenant, user, module) in enumerate([
                (cancel, "u1", "crm"), (cancel, "u2", "crm"), (cancel, "u3", "crm"),
                (cancel, "u-admin", "crm"), (three, "u1", "crm"), (three, "u1", "sales"),
                (three, "u2", "crm"), (three, "u3", "sales"), (three, "u-admin", "crm"),
                (three, "u-admin", "sales"), (off, "u1", "crm")]):
            events.append(access(tenant, user, module, "2026-03-02T10:00:00Z", f"a{i}-{unique}"))
        events.append(emails(dst, 100, "2026-04-01T06:30:00Z", f"e1-{unique}"))
        events.append(emails(dst, 50, "2026-04-01T07:30:00Z", f"e2-{unique}"))
        await send(c, events)
        await set_clock(c, "2026-03-10T12:00:00Z")
        r = await c.patch(f"/v1/tenants/{off}", json={"renewal": False}, headers=ADMIN)
        assert r.status_code == 200, r.text
        await set_clock(c, "2026-03-15T12:00:00Z")
        r = await c.post(f"/v1/tenants/{cancel}/lots/{lot}/cancel", json={}, headers=ADMIN)
        assert r.status_code == 200, r.text
        await set_clock(c, "2026-03-20T10:00:00Z")
        bought = await buy(c, pack, "analytics")
        assert bought["charges"][0]["amount"] == "11.61"
        await set_clock(c, "2026-04-01T12:00:00Z")
        await set_clock(c, "2026-05-01T12:00:00Z")

        got = [summary(i) for i in await invoices_of(c, pack)]
        assert got[:3] == [("immediate", "2026-03-01..2026-04-01", "58.80"),
                           ("immediate", None, "13.93"),
                           ("period", "2026-04-01..2026-05-01", "94.80")]
        found = await invoices_of(c, pack)
        assert lines(found[1]) == [(None, "proration", "1", "11.61")]
        assert found[1]["lines"][0]["period"] == {"from": "2026-03-20", "to": "2026-04-01"}

        found = await invoices_of(c, cancel)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-03-01..2026-04-01", "58.80"),
            ("immediate", None, "24.00"),
            ("period", "2026-04-01..2026-05-01", "76.80"),
            ("period", "2026-05-01..2026-06-01", "112.80")]
        assert lines(found[2]) == [(None, "plan", "1", "49.00"),
                                   ("crm", "extra_users", "1", "15.00")]
        assert found[2]["lines"][1]["period"] == {"from": "2026-03-01", "to": "2026-04-01"}
        assert found[2]["lines"][1]["source"]["users"] == ["u1", "u2", "u3"]

        found = await invoices_of(c, three)
        assert summary(found[2]) == ("period", "2026-04-01..2026-05-01", "124.80")
        assert lines(found[2]) == [(None, "plan", "1", "49.00"),
                                   ("crm", "pack", "1", "10.00"),
                                   ("crm", "extra_users", "1", "15.00"),
                                   ("sales", "extra_users", "2", "30.00")]

        found = await invoices_of(c, off)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-03-01..2026-04-01", "58.80"),
            ("period", "2026-03-01..2026-04-01", "18.00")]
        assert lines(found[1]) == [("crm", "extra_users", "1", "15.00")]

        found = await invoices_of(c, dst)
        assert found[0]["issued_at"] == "2026-03-01T08:00:00Z"
        assert found[1]["issued_at"] == "2026-04-01T07:00:00Z"
        assert summary(found[1]) == ("period", "2026-04-01..2026-05-01", "59.04")
        assert lines(found[1]) == [(None, "plan", "1", "49.00"),
                                   ("emailing", "email_overage", "100", "0.20")]


async def test_upgrade_mid_period_counts_a_new_modules_users_from_the_upgrade(
        endpoints: Endpoints, unique: str) -> None:
    """Anchor 2026-03-01, Europe/Paris, essentials (sales, crm, emailing) upgraded to
    professional (+ accounting, 99.00) on 2026-03-20 at 11:00 local; period 31 days.

    Immediate: R4.2 (99.00 − 49.00) × 12/31 = 19.354… → 19.35, tax 3.87, total 23.22.
    Access: u1 on accounting 03-02 → 03-10 (before the upgrade: not counted), u2 on accounting
    from 03-05 (still held after the upgrade: counted), u3 on accounting from 03-25 (counted),
    u4 on crm 03-02 → 03-10 (crm was in both plans: counted for the whole period).
    04-01: plan 99.00 in advance; accounting 2 × 20.00 = 40.00; crm 1 × 15.00 = 15.00;
    subtotal 154.00, tax 30.80, total 184.80 (counting u1 too would make it 208.80).
    """
    async with private_platform(endpoints, unique, datetime(2026, 2, 28, 12, tzinfo=UTC)) as app:
        c = app.client
        tenant = f"upgrade-{unique}"
        await create_tenant(c, tenant, anchor="2026-03-01")
        await set_clock(c, "2026-03-01T12:00:00Z")
        await send(c, [
            access(tenant, "u1", "accounting", "2026-03-02T10:00:00Z", f"g1-{unique}"),
            access(tenant, "u1", "accounting", "2026-03-10T10:00:00Z", f"r1-{unique}",
                   revoked=True),
            access(tenant, "u2", "accounting", "2026-03-05T10:00:00Z", f"g2-{unique}"),
            access(tenant, "u3", "accounting", "2026-03-25T10:00:00Z", f"g3-{unique}"),
            access(tenant, "u4", "crm", "2026-03-02T10:00:00Z", f"g4-{unique}"),
            access(tenant, "u4", "crm", "2026-03-10T10:00:00Z", f"r4-{unique}", revoked=True),
        ])
        await set_clock(c, "2026-03-20T10:00:00Z")
        upgraded = await buy(c, tenant, "professional")
        assert upgraded["charges"][0]["amount"] == "19.35"
        await set_clock(c, "2026-04-01T12:00:00Z")

        found = await invoices_of(c, tenant)
        assert [summary(i) for i in found] == [
            ("immediate", "2026-03-01..2026-04-01", "58.80"),
            ("immediate", None, "23.22"),
            ("period", "2026-04-01..2026-05-01", "184.80")]
        assert lines(found[2]) == [(None, "plan", "1", "99.00"),
                                   ("accounting", "extra_users", "2", "40.00"),
                                   ("crm", "extra_users", "1", "15.00")]
        assert found[2]["lines"][1]["source"]["users"] == ["u2", "u3"]
        # Provenance names the window the users were counted over: from the upgrade.
        assert found[2]["lines"][1]["source"]["from"] == "2026-03-20T10:00:00Z"
        assert found[2]["lines"][2]["source"]["from"] == "2026-02-28T23:00:00Z"  # crm: March
