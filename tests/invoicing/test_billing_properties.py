"""A property of two years of monthly billing, for any small sequence hypothesis draws of
seat-pack purchases (seats-crm), plan changes, access grants and revocations on crm (some
sent on time, some dated up to 36 periods back, never before the tenant started) and small
credit notes on issued invoices, for 1 to 3 monthly tenants in various time zones:

(a) R6.4, R9.4: for every tenant and billed period, the crm extra users billed for it (the
    arrears `extra_users` line plus every `adjustment` line naming the period) equal the
    count recomputed here from every event sent: users with access at any moment of the
    period, the administrator excluded, minus the seats bought before the period's end,
    floored at 0;
(b) R9.3, R9.7: `INV-` and `CN-` numbers run from 1 without a gap in each year, the year
    being the UTC year of issue, and sorted by number their issue instants never go back;
(c) R9.7: in each month's export, the totals of its distinct documents (credit notes
    negative) add up to the month's invoice totals less its credit-note totals, as the JSON
    documents give them.

Before (a), every access event `POST /v1/events` accepted must be among the events metering
stored (`GET /v1/usage/events`), so that a lost event is named as such, not as a bill.

Plan changes only move between essentials and professional, which both include crm: a plan
change never changes who is billed on crm, so the oracle needs no plan history. Event times
fall on whole hours plus a second of their own, so no two share an instant and none falls on
a local midnight.

Demo catalog (deploy/catalog/2026-11.yaml): crm extra users 15.00/month beyond the seats,
seats-crm 1 seat a lot. Each example runs on a private platform of its own (Redis database,
topics, invoice database), so its numbers start at 000001. Three examples, drawn the same
way on every run (derandomize), tenants and event ids numbered per example.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import count, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.stack import Endpoints
from tests.conftest import ADMIN, OWNER, create_tenant, set_clock
from tests.invoicing.inv_support import buy, private_platform, send

PROPERTY_DB = 14
ZONES = ("UTC", "Europe/Paris", "America/New_York")
ANCHOR_DAYS = (1, 12, 28)  # never past the 28th: no month-end clamping in the oracle
ADMIN_USER = "u-admin"
USERS = ("u-1", "u-2", "u-3", "u-4", ADMIN_USER)
PLANS = ("essentials", "professional")
# Tenants are created at 10:00Z on their anchor day; the clock then stops on the 28th at
# 12:00Z of each month a step happens in, past every tenant's billing instant that month.
CREATED_AT = datetime(2026, 1, 1, 10, tzinfo=UTC)
FIRST_STOP = datetime(2026, 1, 28, 12, tzinfo=UTC)
STEP_MONTHS = 26  # steps in months 0..25; the clock ends one month after the last
MAX_BACK = 36
Document = dict[str, Any]
Period = tuple[date, date]


# --- what hypothesis draws -----------------------------------------------------------------

@dataclass(frozen=True)
class TenantSpec:
    zone: str
    anchor_day: int


@dataclass(frozen=True)
class Access:
    """A grant or revocation sent at month `month`'s stop, dated `back` months and `hours`
    hours before it (no earlier than the tenant's creation)."""

    month: int
    tenant: int
    user: str
    granted: bool
    back: int
    hours: int


@dataclass(frozen=True)
class Seats:
    month: int
    tenant: int
    quantity: int


@dataclass(frozen=True)
class PlanChange:
    month: int
    tenant: int
    plan: str


@dataclass(frozen=True)
class Credit:
    """A credit note of `cents` (at most what is left) on one of the tenant's invoices."""

    month: int
    tenant: int
    pick: int
    cents: int


Step = Access | Seats | PlanChange | Credit


@dataclass(frozen=True)
class Scenario:
    tenants: tuple[TenantSpec, ...]
    steps: tuple[Step, ...]


def access_steps(tenants: int) -> st.SearchStrategy[list[Access]]:
    back = st.one_of(st.just(0), st.integers(1, 3), st.integers(0, MAX_BACK))
    access = st.builds(Access, st.integers(0, STEP_MONTHS - 1), st.integers(0, tenants - 1),
                       st.sampled_from(USERS), st.sampled_from((True, False)), back,
                       st.integers(1, 700))
    return st.lists(access, min_size=6, max_size=14)


def other_steps(tenants: int) -> st.SearchStrategy[list[Seats | PlanChange | Credit]]:
    month = st.integers(0, STEP_MONTHS - 1)
    tenant = st.integers(0, tenants - 1)
    seats = st.builds(Seats, month, tenant, st.integers(1, 2))
    plan = st.builds(PlanChange, month, tenant, st.sampled_from(PLANS))
    credit = st.builds(Credit, month, tenant, st.integers(0, 40), st.integers(1, 3000))
    return st.lists(st.one_of(seats, plan, credit), min_size=2, max_size=8)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    tenants = draw(st.lists(st.builds(TenantSpec, st.sampled_from(ZONES),
                                      st.sampled_from(ANCHOR_DAYS)), min_size=1, max_size=3))
    steps: list[Step] = [*draw(access_steps(len(tenants))),
                         *draw(other_steps(len(tenants)))]
    return Scenario(tuple(tenants), tuple(sorted(steps, key=lambda s: s.month)))


# --- time ----------------------------------------------------------------------------------

def add_months(instant: datetime, months: int) -> datetime:
    """The same day and time `months` later (or earlier): days here are never past the 28th."""
    index = instant.year * 12 + instant.month - 1 + months
    return instant.replace(year=index // 12, month=index % 12 + 1)


def local_midnight(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone))


def stop(month: int) -> datetime:
    return add_months(FIRST_STOP, month)


def instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return parsed


# --- playing a scenario --------------------------------------------------------------------

@dataclass
class Sent:
    """What the test did, per tenant index: the oracle's only input."""

    ids: list[str]
    created: list[datetime] = field(default_factory=list)
    # (user, time, granted, event id) of every access event sent, late or not.
    access: dict[int, list[tuple[str, datetime, bool, str]]] = field(
        default_factory=lambda: defaultdict(list))
    # (purchase instant, seats) of every seats-crm lot.
    seats: dict[int, list[tuple[datetime, int]]] = field(
        default_factory=lambda: defaultdict(list))
    now: datetime = CREATED_AT
    events: int = 0


class Player:
    def __init__(self, client: httpx.AsyncClient, scenario: Scenario, example: int) -> None:
        self.client = client
        self.scenario = scenario
        self.example = example
        self.sent = Sent([f"prop-{example}-{i}" for i in range(len(scenario.tenants))])

    async def move(self, to: datetime) -> None:
        if to > self.sent.now:
            await set_clock(self.client, to.isoformat())
            self.sent.now = to

    async def play(self) -> Sent:
        order = sorted(range(len(self.scenario.tenants)),
                       key=lambda i: self.scenario.tenants[i].anchor_day)
        self.sent.created = [CREATED_AT] * len(order)
        for i in order:
            spec = self.scenario.tenants[i]
            at = CREATED_AT.replace(day=spec.anchor_day)
            await self.move(at)
            await create_tenant(self.client, self.sent.ids[i], time_zone=spec.zone,
                                anchor=at.date().isoformat(), admin_user=ADMIN_USER)
            self.sent.created[i] = at
        for step in self.scenario.steps:
            await self.move(stop(step.month))
            await self.perform(step)
        await self.move(stop(STEP_MONTHS))  # a billing date after the last event, for all
        return self.sent

    async def perform(self, step: Step) -> None:
        tenant = self.sent.ids[step.tenant]
        if isinstance(step, Access):
            await self.access(step)
        elif isinstance(step, Seats):
            await buy(self.client, tenant, "seats-crm", step.quantity)
            self.sent.seats[step.tenant].append((self.sent.now, step.quantity))
        elif isinstance(step, PlanChange):
            await change_plan(self.client, tenant, step.plan)
        else:
            await credit(self.client, tenant, step.pick, step.cents)

    async def access(self, step: Access) -> None:
        self.sent.events += 1
        seq = self.sent.events  # a second of its own: no two events share an instant
        dated = add_months(self.sent.now, -step.back) - timedelta(hours=step.hours)
        time = max(dated, self.sent.created[step.tenant]) + timedelta(seconds=seq)
        await send(self.client, [{
            "specversion": "1.0", "id": f"prop-{self.example}-{seq}", "source": "tests",
            "type": "user.access.granted" if step.granted else "user.access.revoked",
            "subject": self.sent.ids[step.tenant], "time": time.isoformat(),
            "data": {"user_id": step.user, "module": "crm"}}])
        self.sent.access[step.tenant].append((step.user, time, step.granted,
                                              f"prop-{self.example}-{seq}"))


async def change_plan(client: httpx.AsyncClient, tenant: str, plan: str) -> None:
    body = {"actor": OWNER, "item": plan, "confirm": True}
    response = await client.post(f"/v1/tenants/{tenant}/purchases", json=body, headers=ADMIN)
    if response.status_code == 409:  # already on that plan, nothing scheduled
        assert response.json()["error"]["code"] == "same_plan", response.text
        return
    assert response.status_code in (201, 202), response.text


async def credit(client: httpx.AsyncClient, tenant: str, pick: int, cents: int) -> None:
    """A credit note on the `pick`-th invoice (by number) that has something left."""
    open_ = []
    for doc in await documents(client, tenant=tenant):
        credited = sum((Decimal(n["amount"]) for n in doc.get("credit_notes", [])), Decimal(0))
        if doc["kind"] != "credit_note" and Decimal(doc["total"]) > credited:
            open_.append((doc["number"], Decimal(doc["total"]) - credited))
    if not open_:
        return
    number, left = sorted(open_)[pick % len(open_)]
    amount = min(Decimal(cents) / 100, left)
    response = await client.post(f"/v1/invoices/{number}/credit-notes", headers=ADMIN,
                                 json={"amount": f"{amount:.2f}", "reason": "goodwill"})
    assert response.status_code == 201, response.text


async def documents(client: httpx.AsyncClient, **params: str) -> list[Document]:
    """Every document `GET /v1/invoices` lists with `params`, all pages."""
    found: list[Document] = []
    cursor: str | None = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/invoices", params=query, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


# --- the oracle ----------------------------------------------------------------------------

def billed_periods(spec: TenantSpec, until: datetime) -> list[Period]:
    """The tenant's monthly periods whose end (local midnight) is at or before `until`."""
    start = CREATED_AT.replace(day=spec.anchor_day)
    periods: list[Period] = []
    while local_midnight((end := add_months(start, 1)).date(), spec.zone) <= until:
        periods.append((start.date(), end.date()))
        start = end
    return periods


def had_access(events: list[tuple[datetime, bool]], start: datetime, end: datetime) -> bool:
    """Held access at some moment of [start, end): access is what the latest event says."""
    before = [granted for time, granted in sorted(events) if time <= start]
    return bool(before and before[-1]) or any(
        granted for time, granted in events if start < time < end)


def expected_extra_users(sent: Sent, index: int, spec: TenantSpec
                         ) -> dict[Period, Decimal]:
    by_user: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    for user, time, granted, _ in sent.access[index]:
        by_user[user].append((time, granted))
    expected: dict[Period, Decimal] = {}
    for period in billed_periods(spec, sent.now):
        start, end = (local_midnight(day, spec.zone) for day in period)
        users = {u for u, events in by_user.items()
                 if u != ADMIN_USER and had_access(events, start, end)}
        capacity = sum(quantity for at, quantity in sent.seats[index] if at < end)
        expected[period] = Decimal(max(0, len(users) - capacity))
    return expected


# --- what the invoices say -------------------------------------------------------------------

def period_of(line: dict[str, Any]) -> Period:
    return date.fromisoformat(line["period"]["from"]), date.fromisoformat(line["period"]["to"])


async def billed_extra_users(client: httpx.AsyncClient, tenant: str) -> dict[Period, Decimal]:
    """Per period, the crm extra users of its arrears line plus its adjustments."""
    billed: dict[Period, Decimal] = defaultdict(Decimal)
    for listed in await documents(client, tenant=tenant):
        response = await client.get(f"/v1/invoices/{listed['number']}", headers=ADMIN)
        assert response.status_code == 200, response.text
        for line in response.json()["lines"]:
            if line["module"] != "crm":
                continue
            source = line.get("source") or {}
            if line["kind"] == "extra_users" or (
                    line["kind"] == "adjustment" and source.get("meter") == "extra_users"):
                billed[period_of(line)] += Decimal(line["quantity"])
    return billed


def check_numbers(docs: list[Document], prefix: str) -> None:
    """Gapless from 1 in each UTC year of issue, issue instants in number order (R9.3)."""
    mine = sorted((d for d in docs if d["number"].startswith(f"{prefix}-")),
                  key=lambda d: d["number"])
    by_year: dict[int, list[int]] = defaultdict(list)
    for doc in mine:
        _, year, seq = doc["number"].split("-")
        assert instant(doc["issued_at"]).astimezone(UTC).year == int(year), doc["number"]
        by_year[int(year)].append(int(seq))
    for year, seqs in by_year.items():
        assert seqs == list(range(1, len(seqs) + 1)), (prefix, year, seqs)
    issued = [(d["number"], instant(d["issued_at"])) for d in mine]
    for (a, at_a), (b, at_b) in pairwise(issued):
        assert at_a <= at_b, f"{b} issued at {at_b}, before {a} at {at_a}"


async def check_exports(client: httpx.AsyncClient, docs: list[Document]) -> None:
    """Each month's export: its documents' totals add up to the month's, net of credits."""
    by_month: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for doc in docs:
        sign = -1 if doc["kind"] == "credit_note" else 1
        month = instant(doc["issued_at"]).astimezone(UTC).strftime("%Y-%m")
        by_month[month][doc["number"]] = sign * Decimal(doc["total"])
    for month, expected in sorted(by_month.items()):
        response = await client.get("/v1/invoices/export", params={"month": month},
                                    headers=ADMIN)
        assert response.status_code == 200, response.text
        exported: dict[str, Decimal] = {}
        for row in csv.DictReader(io.StringIO(response.text)):
            total = Decimal(row["invoice_total"])
            assert exported.setdefault(row["invoice"], total) == total, row["invoice"]
        assert sum(exported.values(), Decimal(0)) == sum(expected.values(), Decimal(0)), (
            month, exported, expected)
        assert exported == expected, month


# --- the property ----------------------------------------------------------------------------

EXAMPLES = count()  # tenant names and event ids numbered per example: the same on every run


async def unstored(client: httpx.AsyncClient, sent: Sent, index: int) -> set[str]:
    """Ids of the access events POST /v1/events accepted that metering has not stored."""
    response = await client.get("/v1/usage/events", headers=ADMIN, params={
        "tenant": sent.ids[index], "meter": "users_with_access",
        "from": CREATED_AT.isoformat(), "to": sent.now.isoformat(), "limit": "10000"})
    assert response.status_code == 200, response.text
    stored = {event["id"] for event in response.json()["data"]}
    return {event_id for *_, event_id in sent.access[index]} - stored


@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
async def test_billing_of_any_sequence_adds_up(endpoints: Endpoints, scenario: Scenario
                                               ) -> None:
    example = next(EXAMPLES)
    async with private_platform(endpoints, os.urandom(4).hex(), CREATED_AT,
                                db=PROPERTY_DB) as app:
        sent = await Player(app.client, scenario, example).play()
        for index, spec in enumerate(scenario.tenants):
            assert not await unstored(app.client, sent, index), "accepted, never stored"
            expected = expected_extra_users(sent, index, spec)
            billed = await billed_extra_users(app.client, sent.ids[index])
            wrong = {f"{p[0]}..{p[1]}": (str(expected.get(p, 0)), str(billed.get(p, 0)))
                     for p in expected.keys() | billed.keys()
                     if expected.get(p, 0) != billed.get(p, 0)}
            assert not wrong, f"tenant {index}: period: (expected, billed) {wrong}"
        docs = await documents(app.client)
        notes = await documents(app.client, kind="credit_note")
        assert {d["number"] for d in notes} == {
            d["number"] for d in docs if d["kind"] == "credit_note"}
        check_numbers(docs, "INV")
        check_numbers(docs, "CN")
        await check_exports(app.client, docs)
