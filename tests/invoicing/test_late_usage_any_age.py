"""R9.4, late usage of any age: every billed period a late event changes is corrected by an
`adjustment` line naming that period, however old; after the subscription ended, on an
invoice of its own (kind `immediate`) within a day; an e-mail batch only in its own period.

Demo catalog (deploy/catalog/2026-11.yaml): essentials 49.00/month (sales, crm, emailing), an
extra user on crm 15.00 per month (the tenant's admin is not one), e-mail overage 0.002 per
e-mail with no e-mail pack. Amounts are rounded once per line, the tax once per invoice (R3.2).

Each test runs on a broker of its own (a cluster id of its own): metering's insert
deduplication token names a batch's partitions and offsets and the cluster, not the topic, so
on a broker shared with other private platforms a first batch at the same partition and offset
as an earlier topic's would be dropped by ClickHouse as a copy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.stack import Endpoints, TansuBroker, free_port
from tests.conftest import ADMIN, OWNER, create_tenant, set_clock
from tests.invoicing.inv_support import (
    access,
    emails,
    invoices_of,
    lines,
    private_platform,
    send,
    summary,
)


@pytest.fixture
def own_broker(endpoints: Endpoints, tmp_path: Path) -> Iterator[Endpoints]:
    """The session's valkey and chDB with a broker started for this test alone."""
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    broker.start()
    try:
        yield Endpoints(kafka_bootstrap=broker.bootstrap, redis_url=endpoints.redis_url,
                        clickhouse_dsn=endpoints.clickhouse_dsn)
    finally:
        broker.stop()


def adjustments(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in invoice["lines"] if line["kind"] == "adjustment"]


def monthly_periods(first: date, count: int) -> list[str]:
    """`count` monthly periods from `first` (a 1st of the month), as "from..to"."""
    found = []
    year, month = first.year, first.month
    for _ in range(count):
        nxt = (year + month // 12, month % 12 + 1)
        found.append(f"{year:04d}-{month:02d}-01..{nxt[0]:04d}-{nxt[1]:02d}-01")
        year, month = nxt
    return found


def line_period(line: dict[str, Any]) -> str:
    return f"{line['period']['from']}..{line['period']['to']}"


async def test_r9_4_an_access_grant_30_periods_old_corrects_all_30(own_broker: Endpoints,
                                                                   unique: str) -> None:
    """By hand. essentials monthly, anchor 2026-01-01 (Europe/Paris), VAT 21 %, no seats.
    - Clock to 2028-09-01: the first period in advance (immediate) and 32 period invoices,
      billing dates 2026-02-01 .. 2028-09-01, so periods January 2026 .. August 2028 are
      billed, each 49.00 with no usage.
    - Then a grant of crm to u1 (not the admin) dated 2026-03-10 arrives, about 30 months
      late. Access carries over: u1 is an extra crm user in every period from March 2026 on.
      March 2026 .. August 2028 = 10 + 12 + 8 = 30 billed periods, each billed 0 extra users,
      recomputed 1: 30 adjustment lines of (1 − 0) × 15.00 = 15.00, 450.00 in all. January
      and February 2026 are not touched (u1 had no access then).
    - 2028-10-01: plan 49.00 in advance + September 2028 in arrears (1 × 15.00 = 15.00, an
      ordinary extra_users line) + 450.00 of adjustments = 514.00; tax 514.00 × 0.21 =
      107.94; total 621.94. With 24 periods only: 6 × 15.00 = 90.00 (+ 18.90 VAT) missing.
    """
    tenant = f"any-age-{unique}"
    async with private_platform(own_broker, unique, datetime(2026, 1, 1, 12, tzinfo=UTC),
                                db=7) as app:
        c = app.client
        await create_tenant(c, tenant, anchor="2026-01-01", vat_rate="0.21")
        await set_clock(c, "2028-09-01T12:00:00Z")
        before = await invoices_of(c, tenant)
        assert [i["kind"] for i in before] == ["immediate"] + ["period"] * 32
        assert [i["billing_date"] for i in before[1:]] == [
            p.partition("..")[2] for p in monthly_periods(date(2026, 1, 1), 32)]
        await send(c, [access(tenant, "u1", "crm", "2026-03-10T10:00:00Z", f"late-{unique}")])
        await set_clock(c, "2028-10-01T12:00:00Z")
        found = await invoices_of(c, tenant)

    assert len(found) == 34
    invoice = found[-1]
    assert summary(invoice) == ("period", "2028-10-01..2028-11-01", "621.94")
    late = adjustments(invoice)
    expected = monthly_periods(date(2026, 3, 1), 30)
    assert Counter(line_period(line) for line in late) == Counter(expected)
    assert len(late) == 30
    for line in late:
        assert (line["module"], line["quantity"], line["unit_price"], line["amount"]) == (
            "crm", "1", "15.00", "15.00"), line
        assert f"late-{unique}" in line["source"]["late_event_ids"]
    assert sum(Decimal(line["amount"]) for line in late) == Decimal("450.00")
    others = [line for line in invoice["lines"] if line["kind"] != "adjustment"]
    assert [(x["module"], x["kind"], x["quantity"], x["amount"]) for x in others] == [
        (None, "plan", "1", "49.00"), ("crm", "extra_users", "1", "15.00")]
    assert (invoice["subtotal"], invoice["tax"]) == ("514.00", "107.94")


async def test_r9_4_late_usage_after_the_end_gets_its_own_invoice(own_broker: Endpoints,
                                                                  unique: str) -> None:
    """By hand. essentials monthly, anchor 2026-03-01 (Europe/Paris), VAT 20 %, no seats.
    - u1 granted crm 2026-03-02 (on time); renewal switched off 2026-03-10, so the last
      billing date is 2026-04-01 (2026-03-31T22:00Z): arrears only, 1 × 15.00 = 15.00, tax
      3.00, total 18.00, `period` March. No billing date is left.
    - At 2026-04-01T12:00Z a grant of crm to u2 dated 2026-03-20 arrives: March recomputed
      2 extra users, billed 1: (2 − 1) × 15.00 = 15.00, tax 3.00, total 18.00, on an invoice
      of kind `immediate` issued within a day of the arrival (by 2026-04-02T12:00Z).
    - Four more days on the clock: nothing more is issued for that usage.
    """
    tenant = f"ended-{unique}"
    async with private_platform(own_broker, unique, datetime(2026, 3, 1, 12, tzinfo=UTC),
                                db=8) as app:
        c = app.client
        await create_tenant(c, tenant, anchor="2026-03-01")
        await send(c, [access(tenant, "u1", "crm", "2026-03-02T10:00:00Z", f"u1-{unique}")])
        await set_clock(c, "2026-03-10T12:00:00Z")
        r = await c.patch(f"/v1/tenants/{tenant}", json={"renewal": False, "actor": OWNER},
                          headers=ADMIN)
        assert r.status_code == 200, r.text
        await set_clock(c, "2026-04-01T12:00:00Z")
        ended = await invoices_of(c, tenant)
        assert [summary(i) for i in ended] == [
            ("immediate", "2026-03-01..2026-04-01", "58.80"),
            ("period", "2026-03-01..2026-04-01", "18.00")]
        arrived = datetime(2026, 4, 1, 12, tzinfo=UTC)
        await send(c, [access(tenant, "u2", "crm", "2026-03-20T10:00:00Z", f"u2-{unique}")])
        await set_clock(c, "2026-04-02T12:00:00Z")
        within_a_day = await invoices_of(c, tenant)
        await set_clock(c, "2026-04-06T12:00:00Z")
        later = await invoices_of(c, tenant)

    assert len(within_a_day) == 3
    own = within_a_day[2]
    assert summary(own) == ("immediate", None, "18.00")
    assert (own["subtotal"], own["tax"]) == ("15.00", "3.00")
    line, = own["lines"]
    assert (line["module"], line["kind"], line["unit_price"], line["amount"]) == (
        "crm", "adjustment", "15.00", "15.00")
    assert Decimal(line["quantity"]) == 1
    assert line_period(line) == "2026-03-01..2026-04-01"
    assert line["source"]["late_event_ids"] == [f"u2-{unique}"]
    issued = datetime.fromisoformat(own["issued_at"])
    assert arrived <= issued <= arrived + timedelta(days=1)
    assert [i["number"] for i in later] == [i["number"] for i in within_a_day]
    # Written like every other line's quantity ("1"), not with the store's nine decimals.
    assert lines(own) == [("crm", "adjustment", "1", "15.00")]


async def test_r9_4_a_late_email_batch_changes_only_its_own_period(own_broker: Endpoints,
                                                                   unique: str) -> None:
    """By hand. essentials monthly, anchor 2026-03-01 (Europe/Paris), VAT 20 %, no e-mail
    pack, so every e-mail is billed at 0.002 in arrears.
    - 100 e-mails on 2026-04-10 (on time) and 100 on 2026-05-10 (on time).
    - 2026-04-01: 49.00 (no March usage), tax 9.80, total 58.80.
      2026-05-01: 49.00 + April 100 × 0.002 = 0.20 → 49.20, tax 9.84, total 59.04.
      2026-06-01: 49.00 + May 0.20 → 59.04.
    - At 2026-06-01T12:00Z a batch of 500 e-mails dated 2026-04-20 arrives: April recomputed
      600, billed 100: (600 − 100) × 0.002 = 1.00. May (and every later period) is not
      touched: e-mails do not carry over.
    - 2026-07-01: 49.00 + the April adjustment 1.00 = 50.00 (no June usage), tax 10.00,
      total 60.00, with exactly one adjustment line, for April.
    """
    tenant = f"late-mail-{unique}"
    async with private_platform(own_broker, unique, datetime(2026, 3, 1, 12, tzinfo=UTC),
                                db=9) as app:
        c = app.client
        await create_tenant(c, tenant, anchor="2026-03-01")
        await set_clock(c, "2026-04-15T12:00:00Z")
        await send(c, [emails(tenant, 100, "2026-04-10T10:00:00Z", f"m4-{unique}")])
        await set_clock(c, "2026-05-15T12:00:00Z")
        await send(c, [emails(tenant, 100, "2026-05-10T10:00:00Z", f"m5-{unique}")])
        await set_clock(c, "2026-06-01T12:00:00Z")
        await send(c, [emails(tenant, 500, "2026-04-20T10:00:00Z", f"late-{unique}")])
        await set_clock(c, "2026-07-01T12:00:00Z")
        found = await invoices_of(c, tenant)

    assert [summary(i) for i in found] == [
        ("immediate", "2026-03-01..2026-04-01", "58.80"),
        ("period", "2026-04-01..2026-05-01", "58.80"),
        ("period", "2026-05-01..2026-06-01", "59.04"),
        ("period", "2026-06-01..2026-07-01", "59.04"),
        ("period", "2026-07-01..2026-08-01", "60.00")]
    last = found[-1]
    assert (last["subtotal"], last["tax"]) == ("50.00", "10.00")
    assert [(x["module"], x["kind"], x["amount"]) for x in last["lines"]] == [
        (None, "plan", "49.00"), ("emailing", "adjustment", "1.00")]
    line, = adjustments(last)
    assert line_period(line) == "2026-04-01..2026-05-01"
    assert (line["unit_price"], Decimal(line["quantity"])) == ("0.002", Decimal(500))
    assert line["source"]["late_event_ids"] == [f"late-{unique}"]
    # Written like every other line's quantity ("500"), not with the store's nine decimals.
    assert lines(last) == [(None, "plan", "1", "49.00"),
                           ("emailing", "adjustment", "500", "1.00")]
