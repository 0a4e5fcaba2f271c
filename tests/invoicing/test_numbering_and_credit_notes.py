"""Gapless, chronological numbers per accounting year (R9.3) and credit notes as documents of
their own (R9.7), each worked by hand in its docstring.

Demo catalog (deploy/catalog/2026-11.yaml): essentials 49.00/month, seats-crm 10.00/month,
web-training 150.00 once. VAT 20 %. Every test runs on a private platform (its own Redis
database, topics and invoice database), so its sequences start at 000001.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from shared.stack import Endpoints
from tests.conftest import (
    ADMIN,
    RunningApp,
    create_tenant,
    eventually,
    produce,
    set_clock,
)
from tests.invoicing.inv_support import buy, invoices_of, late_purchase_event, private_platform

LATE_DB, RUSH_DB, YEAR_DB, CREDIT_DB = 10, 11, 12, 13
Document = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------------


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return parsed


async def _documents(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                     **params: str) -> list[Document]:
    """Every document `GET /v1/invoices` lists with `params`, all pages."""
    found: list[Document] = []
    cursor: str | None = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/invoices", params=query, headers=headers or ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def _at_least(client: httpx.AsyncClient, count: int) -> list[Document]:
    """The platform's documents once there are `count` of them (immediate invoices are issued
    by the subscription-events consumer, a little after the purchase)."""
    async def enough() -> list[Document] | None:
        docs = await _documents(client)
        return docs if len(docs) >= count else None

    found: list[Document] = await eventually(enough, within=30)
    return found


def _sequence(docs: list[Document], prefix: str) -> list[tuple[int, int, datetime]]:
    """(year, n, issued_at) of every `{prefix}-YYYY-NNNNNN` document, in number order."""
    pattern = re.compile(rf"{prefix}-(\d{{4}})-(\d{{6}})")
    found = []
    for doc in docs:
        match = pattern.fullmatch(doc["number"])
        assert match is not None, doc["number"]
        found.append((int(match[1]), int(match[2]), _instant(doc["issued_at"])))
    return sorted(found)


def _gapless_and_chronological(docs: list[Document], prefix: str) -> dict[int, int]:
    """R9.3: per year, numbers 1..N without a gap; in number order, issue instants never go
    back. Answers how many numbers each year has."""
    sequence = _sequence(docs, prefix)
    per_year = Counter(year for year, _, _ in sequence)
    for year, count in per_year.items():
        assert [n for y, n, _ in sequence if y == year] == list(range(1, count + 1)), \
            (prefix, year, sorted(d["number"] for d in docs))
    instants = [at for _, _, at in sequence]
    assert instants == sorted(instants), [(f"{prefix}-{y}-{n:06d}", at.isoformat())
                                          for y, n, at in sequence]
    return dict(per_year)


def _invoices(docs: list[Document]) -> list[Document]:
    return [d for d in docs if d["kind"] != "credit_note"]


def _notes(docs: list[Document]) -> list[Document]:
    return [d for d in docs if d["kind"] == "credit_note"]


async def _credit(client: httpx.AsyncClient, number: str, amount: str) -> Document:
    response = await client.post(f"/v1/invoices/{number}/credit-notes",
                                 json={"amount": amount, "reason": "goodwill"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    answer: Document = response.json()
    return answer


async def _first_invoice(client: httpx.AsyncClient, tenant: str) -> str:
    """The number of the tenant's first-period invoice, once it is issued."""
    async def issued() -> list[Document]:
        return await invoices_of(client, tenant)

    found: list[Document] = await eventually(issued, within=30)
    return str(found[0]["number"])


def _export_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _per_document(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """One export row per document (its totals repeat on each of its lines)."""
    return {row["invoice"]: row for row in rows}


# --- R9.3: chronological numbers -------------------------------------------------------------


async def test_an_invoice_read_late_is_never_issued_before_a_lower_number(
        endpoints: Endpoints, unique: str) -> None:
    """Tenants A and B, Europe/Paris, created 2026-03-01T10:00Z (anchor 03-01, period
    [03-01, 04-01), 31 days).

    - 03-01T10:00Z: first periods, 49.00 + 9.80 = 58.80 each → INV-2026-000001, 000002.
    - 03-10T10:00Z: A buys seats-crm × 1: 10.00 × 22/31 = 7.096… → 7.10, tax 1.42, 8.52
      → 000003, issued 03-10T10:00:00Z.
    - clock to 04-01T12:00Z: the billing date 04-01 falls due at Paris midnight, 2026-03-31T
      22:00Z (summer time since 03-29). A: 49.00 + seats-crm 10.00 = 59.00, tax 11.80, 70.80;
      B: 58.80 → 000004, 000005, issued 2026-03-31T22:00:00Z.
    - then invoicing reads a purchase.confirmed of B dated 03-20T09:00Z (10.00 × 12/31 =
      3.870… → 3.87, tax 0.774 → 0.77, total 4.64). It takes 000006; dated 03-20 it would be
      issued before 000004 and 000005, so it is issued at 2026-03-31T22:00:00Z, the latest
      instant of the sequence.
    In number order the issue instants never go back; numbers 1..6 without a gap.
    """
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=LATE_DB) as app:
        c = app.client
        a, b = f"late-a-{unique}", f"late-b-{unique}"
        await create_tenant(c, a)
        await create_tenant(c, b)
        await set_clock(c, "2026-03-10T10:00:00Z")
        assert (await buy(c, a, "seats-crm", 1))["charges"][0]["amount"] == "7.10"
        await set_clock(c, "2026-04-01T12:00:00Z")
        await produce(endpoints.kafka_bootstrap, f"subscriptions-inv-{unique}",
                      [(b.encode(), orjson.dumps(late_purchase_event(b, f"late-{unique}")))])
        docs = await _at_least(c, 6)

        assert sorted((d["issued_at"], d["tenant"], d["kind"], d["total"]) for d in docs) == [
            ("2026-03-01T10:00:00Z", a, "immediate", "58.80"),
            ("2026-03-01T10:00:00Z", b, "immediate", "58.80"),
            ("2026-03-10T10:00:00Z", a, "immediate", "8.52"),
            ("2026-03-31T22:00:00Z", a, "period", "70.80"),
            ("2026-03-31T22:00:00Z", b, "immediate", "4.64"),
            ("2026-03-31T22:00:00Z", b, "period", "58.80"),
        ]
        late, = (d for d in docs if d["total"] == "4.64")
        assert late["number"] == "INV-2026-000006"
        assert [line["amount"] for line in late["lines"]] == ["3.87"]
        assert _gapless_and_chronological(docs, "INV") == {2026: 6}


async def _tick(client: httpx.AsyncClient, minutes: int) -> None:
    """Move the clock a minute at a time from 08:00Z, while purchases and credits run."""
    for minute in range(1, minutes + 1):
        await asyncio.sleep(0.05)
        await set_clock(client, f"2026-06-01T08:{minute:02d}:00Z")


async def test_concurrent_purchases_and_credit_notes_keep_both_sequences_chronological(
        endpoints: Endpoints, unique: str) -> None:
    """Four tenants, Europe/Paris, created 2026-06-01T08:00Z (period [06-01, 07-01), 30 days):
    first periods 58.80 each → INV-2026-000001..4.

    Then, all at once: 40 purchases of seats-crm × 1 (10 per tenant; bought on the period's
    first day: 10.00 × 30/30 = 10.00, tax 2.00, total 12.00 each), two credit notes of 5.00
    on each first-period invoice (8 in all), and the clock moved a minute at a time to
    08:04Z, so documents are numbered in whatever order the purchases' events are read.
    Expected: INV-2026-000001..44 and CN-2026-000001..8, each without a gap, and in number
    order the issue instants never go back; 40 invoices of 12.00 (480.00), each first
    invoice credited 10.00 of its 58.80.
    """
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=RUSH_DB) as app:
        c = app.client
        tenants = [f"rush{i}-{unique}" for i in range(4)]
        for tenant in tenants:
            await create_tenant(c, tenant)
        firsts = [await _first_invoice(c, tenant) for tenant in tenants]
        purchases = [buy(c, tenants[i % 4], "seats-crm", 1) for i in range(40)]
        credits = [_credit(c, number, "5.00") for number in firsts for _ in range(2)]
        answers = await asyncio.gather(*purchases, *credits, _tick(c, 4))
        notes = {str(a["number"]) for a in answers[40:48] if isinstance(a, dict)}
        assert len(notes) == 8
        await set_clock(c, "2026-06-01T08:10:00Z")
        docs = await _at_least(c, 52)

        invoices, credit_notes = _invoices(docs), _notes(docs)
        assert _gapless_and_chronological(invoices, "INV") == {2026: 44}
        assert _gapless_and_chronological(credit_notes, "CN") == {2026: 8}
        assert {d["number"] for d in credit_notes} == notes
        assert Counter(d["total"] for d in invoices) == Counter({"58.80": 4, "12.00": 40})
        assert sum(Decimal(d["total"]) for d in invoices if d["total"] == "12.00") \
            == Decimal("480.00")
        assert Counter(d["credits"] for d in credit_notes) == Counter({n: 2 for n in firsts})
        for doc in docs:
            at = _instant(doc["issued_at"])
            assert start <= at <= datetime(2026, 6, 1, 8, 4, tzinfo=UTC), doc["issued_at"]
        for number in firsts:
            first = (await c.get(f"/v1/invoices/{number}", headers=ADMIN)).json()
            assert [n["amount"] for n in first["credit_notes"]] == ["5.00", "5.00"]
            assert first["status"] == "partially_credited"


# --- R9.3: the accounting time zone ----------------------------------------------------------


@pytest.mark.parametrize(("settings", "numbers", "months"), [
    pytest.param({"accounting_tz": "Europe/Paris"}, ["INV-2026-000001", "INV-2027-000001"],
                 {"2026-12": ["INV-2026-000001"], "2027-01": ["INV-2027-000001"]},
                 id="paris"),
    pytest.param({}, ["INV-2026-000001", "INV-2026-000002"],
                 {"2026-12": ["INV-2026-000001", "INV-2026-000002"], "2027-01": []},
                 id="utc-default"),
])
async def test_the_accounting_zone_gives_the_year_and_the_month(
        endpoints: Endpoints, unique: str, settings: dict[str, Any], numbers: list[str],
        months: dict[str, list[str]]) -> None:
    """A Paris tenant created 2026-12-01T10:00Z (anchor 12-01): its first period is invoiced
    at once, 58.80, issued 2026-12-01T10:00Z: December 2026 in Paris and in UTC alike.
    Its billing date 2027-01-01 falls due at Paris midnight, 2026-12-31T23:00Z (winter time,
    UTC+1): 49.00 + 9.80 = 58.80, issued 2026-12-31T23:00:00Z.

    - ACCOUNTING_TZ=Europe/Paris: that instant is 2027-01-01 00:00 in Paris, so the invoice
      is the first of 2027, INV-2027-000001, listed by month=2027-01 and exported with it.
    - default (UTC): it is still 2026-12-31, so INV-2026-000002, listed by month=2026-12.
    """
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=YEAR_DB, **settings) as app:
        c = app.client
        tenant = f"newyear-{unique}"
        await create_tenant(c, tenant)
        await set_clock(c, "2026-12-31T23:30:00Z")
        docs = sorted(await _at_least(c, 2), key=lambda d: d["issued_at"])

        assert [(d["number"], d["kind"], d["issued_at"], d["total"]) for d in docs] == [
            (numbers[0], "immediate", "2026-12-01T10:00:00Z", "58.80"),
            (numbers[1], "period", "2026-12-31T23:00:00Z", "58.80")]
        for month, expected in months.items():
            listed = await _documents(c, month=month)
            assert sorted(d["number"] for d in listed) == expected, month
            export = await c.get("/v1/invoices/export", params={"month": month},
                                 headers=ADMIN)
            assert export.status_code == 200, export.text
            assert sorted(_per_document(_export_rows(export.text))) == expected, month
        _gapless_and_chronological(docs, "INV")


# --- R9.7: credit notes as documents ---------------------------------------------------------


@dataclass(frozen=True)
class Credited:
    """Tenants `tenant` and `other`, their first-period invoices `first` and `second`, the
    web training of `tenant` (`training`); `note` credits 12.00 of `first`, `other_note`
    30.00 of `second`."""

    app: RunningApp
    tenant: str
    other: str
    first: str
    second: str
    training: str
    note: str
    other_note: str


@pytest.fixture(scope="module")
async def credited(endpoints: Endpoints) -> AsyncIterator[Credited]:
    """Europe/Paris tenants created 2026-05-04T10:00Z (anchor 05-04): first periods 58.80
    each; `tenant` buys web-training, 150.00 + 30.00 = 180.00 on an immediate invoice. On
    2026-05-05T09:00Z, 12.00 of `tenant`'s first invoice is credited (CN-2026-000001), then
    30.00 of `other`'s (CN-2026-000002)."""
    unique = os.urandom(4).hex()
    start = datetime(2026, 5, 4, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=CREDIT_DB) as app:
        c = app.client
        tenant, other = f"cn-{unique}", f"cn-other-{unique}"
        await create_tenant(c, tenant)
        await create_tenant(c, other)
        first, second = await _first_invoice(c, tenant), await _first_invoice(c, other)
        await buy(c, tenant, "web-training")
        docs = await _at_least(c, 3)
        training, = (d["number"] for d in docs
                     if [line["kind"] for line in d["lines"]] == ["one_time"])
        await set_clock(c, "2026-05-05T09:00:00Z")
        note = (await _credit(c, first, "12.00"))["number"]
        other_note = (await _credit(c, second, "30.00"))["number"]
        yield Credited(app, tenant, other, first, second, training, note, other_note)


async def test_a_credit_note_is_read_like_an_invoice(credited: Credited) -> None:
    """12.00 credited (tax included) on an invoice at 20 % VAT: tax 12.00 × 0.2/1.2 = 2.00,
    net 10.00; 30.00: tax 5.00, net 25.00. The note is a document of its own: kind
    `credit_note`, `credits` naming the invoice, one `credit` line of the net amount,
    subtotal + tax = total, all positive. Crediting a credit note is refused (409)."""
    c, s = credited.app.client, credited
    assert (s.note, s.other_note) == ("CN-2026-000001", "CN-2026-000002")
    expected = {s.note: (s.first, s.tenant, "10.00", "2.00", "12.00"),
                s.other_note: (s.second, s.other, "25.00", "5.00", "30.00")}
    for number, (invoice, tenant, net, tax, total) in expected.items():
        response = await c.get(f"/v1/invoices/{number}", headers=ADMIN)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert (doc["number"], doc["kind"], doc["credits"], doc["tenant"]) == (
            number, "credit_note", invoice, tenant)
        assert [(line["kind"], line["quantity"], line["amount"]) for line in doc["lines"]] \
            == [("credit", "1", net)]
        assert (doc["subtotal"], doc["tax"], doc["total"]) == (net, tax, total)
        amounts = [Decimal(doc[k]) for k in ("subtotal", "tax", "total")]
        assert amounts[0] + amounts[1] == amounts[2]
        assert all(amount > 0 for amount in amounts)
        assert _instant(doc["issued_at"]) == datetime(2026, 5, 5, 9, tzinfo=UTC)

    first = (await c.get(f"/v1/invoices/{s.first}", headers=ADMIN)).json()
    assert (first["kind"], first["total"], first["status"]) == (
        "immediate", "58.80", "partially_credited")
    assert [(n["number"], n["amount"]) for n in first["credit_notes"]] == [(s.note, "12.00")]
    for body in ({}, {"amount": "1.00"}):
        refused = await c.post(f"/v1/invoices/{s.note}/credit-notes", json=body,
                               headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "not_an_invoice"
    again = (await c.get(f"/v1/invoices/{s.note}", headers=ADMIN)).json()
    assert again["total"] == "12.00"


async def test_credit_notes_are_listed_by_kind(credited: Credited) -> None:
    """Three invoices (two first periods, one web training) and two credit notes:
    `kind=credit_note` lists the two notes only, `kind=immediate` the three invoices, no
    filter all five, `kind=period` none; `kind=bogus` is a 422 naming `kind`."""
    c, s = credited.app.client, credited
    invoices, notes = {s.first, s.second, s.training}, {s.note, s.other_note}
    listed = await _documents(c, kind="credit_note")
    assert {d["number"] for d in listed} == notes
    assert {d["kind"] for d in listed} == {"credit_note"}
    assert {d["number"] for d in await _documents(c, kind="immediate")} == invoices
    assert await _documents(c, kind="period") == []
    everything = await _documents(c)
    assert {d["number"] for d in everything} == invoices | notes
    assert _gapless_and_chronological(_invoices(everything), "INV") == {2026: 3}
    assert _gapless_and_chronological(_notes(everything), "CN") == {2026: 2}
    bogus = await c.get("/v1/invoices", params={"kind": "bogus"}, headers=ADMIN)
    assert bogus.status_code == 422, bogus.text
    assert bogus.json()["error"]["field"] == "kind"


async def test_the_month_export_is_net_of_credit_notes(credited: Credited) -> None:
    """May 2026: invoices 58.80 + 58.80 + 180.00 = 297.60; credit notes 12.00 + 30.00 =
    42.00; the export adds up to 297.60 − 42.00 = 255.60.

    A credit note's row is negative: quantity −1, amount −10.00 (net), invoice subtotal
    −10.00, tax −2.00, total −12.00. Lines: 49.00 + 49.00 + 150.00 − 10.00 − 25.00 = 213.00;
    tax of the documents: 9.80 + 9.80 + 30.00 − 2.00 − 5.00 = 42.60; 213.00 + 42.60 = 255.60.
    """
    c, s = credited.app.client, credited
    response = await c.get("/v1/invoices/export", params={"month": "2026-05"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    rows = _export_rows(response.text)
    docs = _per_document(rows)
    assert set(docs) == {s.first, s.second, s.training, s.note, s.other_note}
    note_rows = [r for r in rows if r["invoice"] == s.note]
    assert [(r["kind"], r["line_kind"], r["quantity"], r["amount"], r["invoice_subtotal"],
             r["invoice_tax"], r["invoice_total"]) for r in note_rows] == [
        ("credit_note", "credit", "-1", "-10.00", "-10.00", "-2.00", "-12.00")]
    other = docs[s.other_note]
    assert (other["amount"], other["invoice_tax"], other["invoice_total"]) == (
        "-25.00", "-5.00", "-30.00")

    invoiced = Decimal("58.80") + Decimal("58.80") + Decimal("180.00")
    credited_total = Decimal("12.00") + Decimal("30.00")
    net = sum((Decimal(r["invoice_total"]) for r in docs.values()), Decimal(0))
    assert net == invoiced - credited_total == Decimal("255.60")
    lines = sum((Decimal(r["amount"]) for r in rows), Decimal(0))
    tax = sum((Decimal(r["invoice_tax"]) for r in docs.values()), Decimal(0))
    assert (lines, tax, lines + tax) == (Decimal("213.00"), Decimal("42.60"), net)


async def test_a_tenant_key_sees_only_its_own_credit_notes(credited: Credited) -> None:
    """A finance key limited to `tenant`: its list holds its two invoices and its note only,
    `kind=credit_note` only CN-2026-000001; the other tenant's note is a 404; its export of
    May 2026 adds up to 58.80 + 180.00 − 12.00 = 226.80."""
    c, s = credited.app.client, credited
    minted = await c.post("/v1/api-keys", json={"role": "finance", "tenant": s.tenant},
                          headers=ADMIN)
    assert minted.status_code == 201, minted.text
    scoped = {"Authorization": f"Bearer {minted.json()['key']}"}

    assert [d["number"] for d in await _documents(c, scoped, kind="credit_note")] == [s.note]
    assert {d["number"] for d in await _documents(c, scoped)} == {s.first, s.training, s.note}
    assert (await c.get(f"/v1/invoices/{s.other_note}", headers=scoped)).status_code == 404
    assert (await c.get(f"/v1/invoices/{s.note}", headers=scoped)).status_code == 200
    refused = await c.get("/v1/invoices", params={"tenant": s.other, "kind": "credit_note"},
                          headers=scoped)
    assert refused.status_code == 404, refused.text

    export = await c.get("/v1/invoices/export", params={"month": "2026-05"}, headers=scoped)
    assert export.status_code == 200, export.text
    docs = _per_document(_export_rows(export.text))
    assert set(docs) == {s.first, s.training, s.note}
    assert {r["tenant"] for r in docs.values()} == {s.tenant}
    net = sum((Decimal(r["invoice_total"]) for r in docs.values()), Decimal(0))
    assert net == Decimal("58.80") + Decimal("180.00") - Decimal("12.00") == Decimal("226.80")
