"""Late usage counts the extra users of dozens of periods of a tenant at once
(`extra_users.billable_by_period`, R9.4), counting a period anew only where something
its count reads changed since the period before and reusing the previous count otherwise.
The property: for any access history, seat lots, plan history, periods and catalog
versions hypothesis draws, every period gets exactly what counting it alone gives
(`extra_users_over`, R6.1, R6.2, R6.4).

Instants are drawn among the periods' boundaries, their last days' midnights, a
microsecond either side of those, and whole hours in between, so changes falling on the
edges the rule compares against are drawn often. Paris, monthly from 1 January 2026.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoicing.extra_users import billable_by_period, extra_users_over
from shared.billing.periods import Period, midnight_utc
from shared.billing.seats import access_intervals
from shared.catalog import Catalog, parse_catalog
from shared.events import USER_ACCESS_GRANTED, USER_ACCESS_REVOKED
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

PARIS = ZoneInfo("Europe/Paris")
MONTHS = [Period(date(2026, m, 1), date(2026, m + 1, 1)) for m in range(1, 9)]
MODULES = ("sales", "crm", "accounting")
USERS = ("u-admin", "u-1", "u-2", "u-3")
_MICRO = timedelta(microseconds=1)


def _catalog(crm_bills: bool) -> Catalog:
    """Two plans (accounting in professional only, so a plan change brings or takes it),
    seat packs of crm (1 seat) and of the business suite (sales, crm, accounting; 2 seats);
    the second version denies extra users on crm."""
    bill = {"extra_users": "bill", "extra_user_price": {"P1M": "9.00"}}
    return parse_catalog({
        "version": "v-bills" if crm_bills else "v-denies", "currency": "EUR",
        "modules": [{"id": "sales", **bill},
                    {"id": "crm", **(bill if crm_bills else {"extra_users": "deny"})},
                    {"id": "accounting", **bill}],
        "suites": [{"id": "business", "modules": list(MODULES)}],
        "plans": [
            {"id": "essentials", "rank": 1, "modules": ["sales", "crm"],
             "price": {"P1M": "49.00"}, "companies": 1, "contacts": 10},
            {"id": "professional", "rank": 2, "modules": list(MODULES),
             "price": {"P1M": "99.00"}, "companies": 1, "contacts": 10}],
        "packs": [
            {"id": "seats-crm", "kind": "seats", "module": "crm", "price": {"P1M": "10.00"}},
            {"id": "seats-business", "kind": "seats", "suite": "business", "units": 2,
             "price": {"P1M": "25.00"}}]})


CATALOGS = (_catalog(True), _catalog(False))


def _edges() -> list[datetime]:
    edges: list[datetime] = []
    for period in MONTHS:
        for instant in (period.start_instant(PARIS),
                        midnight_utc(period.end - timedelta(days=1), PARIS)):
            edges.extend((instant - _MICRO, instant, instant + _MICRO))
    return edges


_START = MONTHS[0].start_instant(PARIS)
instants = st.one_of(
    st.sampled_from(_edges()),
    st.integers(0, 24 * 250).map(lambda h: _START + timedelta(hours=h)))
access_rows = st.lists(st.tuples(st.sampled_from(MODULES), st.sampled_from(USERS), instants,
                                 st.sampled_from([USER_ACCESS_GRANTED, USER_ACCESS_GRANTED,
                                                  USER_ACCESS_REVOKED])), max_size=5)
lots = st.lists(st.tuples(st.sampled_from(["seats-crm", "seats-business"]),
                          st.integers(1, 3), instants, st.none() | instants), max_size=2)
plan_changes = st.lists(instants, max_size=2, unique=True)


def _lot(k: int, item: str, quantity: int, bought: datetime, ends: datetime | None
         ) -> dict[str, Any]:
    return {"id": f"l-{k}", "item": item, "kind": "seats", "quantity": quantity,
            "units": 2 if item == "seats-business" else 1, "state": "active",
            # a lot written with the offset it was bought at (Paris)
            "bought_at": bought.astimezone(PARIS).isoformat(),
            "ends_at": None if ends is None or ends <= bought else ends.isoformat()}


@settings(max_examples=500, deadline=None)
@given(rows=access_rows, bought=lots, changes=plan_changes,
       chosen=st.lists(st.booleans(), min_size=len(MONTHS), max_size=len(MONTHS)),
       versions=st.lists(st.sampled_from([0, 1]), min_size=len(MONTHS), max_size=len(MONTHS)),
       pending=st.none() | instants, modules=st.sets(st.sampled_from(MODULES), min_size=1))
def test_r9_4_periods_counted_together_count_what_each_counts_alone(
        rows: list[tuple[str, str, datetime, str]],
        bought: list[tuple[str, int, datetime, datetime | None]], changes: list[datetime],
        chosen: list[bool], versions: list[int], pending: datetime | None,
        modules: set[str]) -> None:
    """Plans alternate essentials / professional at the changes drawn (the current one
    last), perhaps with a pending change to the other plan; periods are any of eight months
    (consecutive or apart), each by either catalog version."""
    plans = ["essentials", "professional"]
    history = [{"at": at.isoformat(), "previous": plans[k % 2]}
               for k, at in enumerate(sorted(changes))]
    current = plans[len(history) % 2]
    fields: dict[str, Any] = {"anchor": "2026-01-01", "created_at": "2025-12-20T10:00:00Z",
                              "plan": current, "plan_changes": history}
    if pending is not None:
        fields.update(pending_plan=plans[(len(history) + 1) % 2],
                      pending_plan_at=pending.isoformat())
    view = tenant_document(*(_lot(k, *lot) for k, lot in enumerate(bought)), **fields)
    periods = [p for p, keep in zip(MONTHS, chosen, strict=True) if keep] or MONTHS[:1]
    catalogs = [CATALOGS[versions[MONTHS.index(p)]] for p in periods]
    intervals = access_intervals(rows)
    together = billable_by_period(view, catalogs, periods, intervals, modules)
    alone = [extra_users_over(view, catalog, period, intervals, modules)
             for catalog, period in zip(catalogs, periods, strict=True)]
    assert together == [{module: c.billable for module, c in counted.items()}
                        for counted in alone]


def test_r9_4_a_lot_ending_on_a_last_day_counts_from_that_period() -> None:
    """crm, one user u-1 granted in December and kept. A crm seat bought in December ends
    as 31 March begins (Paris, UTC+2: 2026-03-30T22:00Z), March's last day: it covers u-1
    on the last days of January and February (0 billable), not on March's (1 billable);
    April, where nothing changes, is March's count again (1)."""
    view = tenant_document(_lot(0, "seats-crm", 1, datetime(2025, 12, 1, tzinfo=UTC),
                                datetime(2026, 3, 30, 22, tzinfo=UTC)),
                           anchor="2026-01-01", created_at="2025-12-20T10:00:00Z")
    intervals = access_intervals([("crm", "u-1", datetime(2025, 12, 5, tzinfo=UTC),
                                   USER_ACCESS_GRANTED)])
    counted = billable_by_period(view, [CATALOGS[0]] * 4, MONTHS[:4], intervals, {"crm"})
    assert [c["crm"] for c in counted] == [0, 0, 1, 1]
    # Counted anew: January (the first), March and April (the lot's end falls after the
    # start of the period before them), each a count of its own; February shares January's.
    january, february, march, april = counted
    assert february is january
    assert march is not february
    assert april is not march
