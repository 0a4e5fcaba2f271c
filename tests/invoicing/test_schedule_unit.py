"""When a tenant is billed (services/invoicing/schedule.py): billing dates are period
boundaries from the original anchor (R2.3), due at local midnight in the tenant's zone
(R2.1), the last one at the end of a subscription whose renewal is off (R4.1, R9.1).

Every expected date and instant is worked out by hand in the test's docstring. Europe/Paris
is UTC+1 in winter and UTC+2 from 2026-03-29 01:00Z to 2026-10-25 01:00Z.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.invoicing.schedule import (
    billing_instant,
    ended_period,
    is_billing_date,
    last_billing_date,
    next_billing_date,
    periods_between,
    renews_at,
)
from shared.billing.periods import Cycle, Period, period_containing
from shared.subscription import TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

# Zones read once, at import (a unit test opens no file; the zone cache keeps these).
ZONES = {name: ZoneInfo(name) for name in
         ("Europe/Paris", "America/Los_Angeles", "America/Sao_Paulo", "UTC")}


def _tenant(**fields: Any) -> TenantState:
    return tenant_document(**{"anchor": "2026-01-31", "admin_user": "u-admin",
                              "created_at": "2026-01-20T10:00:00Z", **fields})


def _renewal_off(ends_at: str, **fields: Any) -> TenantState:
    return _tenant(renewal=False, ends_at=ends_at, **fields)


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


# --- next_billing_date -------------------------------------------------------------------


def test_nothing_billed_yet_the_first_billing_date_is_the_anchor() -> None:
    """R9.1: the first period is invoiced in advance as it starts, on the anchor."""
    assert next_billing_date(_tenant(), None) == date(2026, 1, 31)


def test_monthly_dates_from_31_january_clamp_to_each_months_last_day() -> None:
    """R2.3, anchor 2026-01-31: 28 Feb (2026 is not a leap year), then 31 Mar (from the
    anchor, not 28 Mar from the previous date), then 30 Apr."""
    view = _tenant()
    assert next_billing_date(view, date(2026, 1, 31)) == date(2026, 2, 28)
    assert next_billing_date(view, date(2026, 2, 28)) == date(2026, 3, 31)
    assert next_billing_date(view, date(2026, 3, 31)) == date(2026, 4, 30)


def test_in_a_leap_year_february_ends_on_the_29th() -> None:
    """Anchor 2028-01-31 (2028 is a leap year): the next date is 29 Feb 2028."""
    view = _tenant(anchor="2028-01-31")
    assert next_billing_date(view, date(2028, 1, 31)) == date(2028, 2, 29)


def test_a_last_billed_day_between_two_dates_gives_the_next_boundary() -> None:
    """Anchor 2026-01-31; any day of the period [28 Feb, 31 Mar) is followed by 31 Mar."""
    view = _tenant()
    assert next_billing_date(view, date(2026, 3, 10)) == date(2026, 3, 31)
    assert next_billing_date(view, date(2026, 3, 30)) == date(2026, 3, 31)


@pytest.mark.parametrize(("cycle", "anchor", "after", "expected"), [
    # 30 days after 2026-01-01 is 2026-01-31.
    ("P30D", "2026-01-01", date(2026, 1, 1), date(2026, 1, 31)),
    # 365 days from 2028-01-01 (leap year, 366 days) lands on 2028-12-31.
    ("P365D", "2028-01-01", date(2028, 1, 1), date(2028, 12, 31)),
    # Annual from 29 Feb 2024: 28 Feb 2025 ... and 29 Feb again in 2028 (R2.3).
    ("P1Y", "2024-02-29", date(2024, 2, 29), date(2025, 2, 28)),
    ("P1Y", "2024-02-29", date(2027, 2, 28), date(2028, 2, 29)),
])
def test_each_cycle_steps_from_the_anchor(cycle: str, anchor: str, after: date,
                                          expected: date) -> None:
    """R2.2, R2.3: fixed 30/365-day cycles count days; annual keeps the anchor's date."""
    assert next_billing_date(_tenant(cycle=cycle, anchor=anchor), after) == expected


def test_renewal_off_the_period_end_is_the_last_billing_date() -> None:
    """R4.1, R9.1. Anchor 2026-01-31 in Paris, renewal switched off during [31 Mar, 30 Apr):
    the subscription ends at local midnight of 30 Apr = 2026-04-29T22:00Z (UTC+2). Its local
    date, 30 Apr, still carries the arrears; nothing comes after it."""
    view = _renewal_off("2026-04-29T22:00:00Z")
    assert last_billing_date(view) == date(2026, 4, 30)
    assert next_billing_date(view, date(2026, 3, 31)) == date(2026, 4, 30)
    assert next_billing_date(view, date(2026, 4, 30)) is None


def test_renewal_on_there_is_no_last_billing_date() -> None:
    """R4.1: a renewing subscription has no end, even if an old `ends_at` lingers."""
    assert last_billing_date(_tenant()) is None
    assert last_billing_date(_tenant(ends_at="2026-04-29T22:00:00Z")) is None


def test_an_ended_subscription_has_its_end_as_last_date() -> None:
    """An ended subscription (status `ended`) stops at its `ends_at`: Paris midnight of
    28 Feb 2026 is 2026-02-27T23:00Z (UTC+1), local date 28 Feb."""
    view = _tenant(status="ended", ends_at="2026-02-27T23:00:00Z")
    assert last_billing_date(view) == date(2026, 2, 28)
    assert next_billing_date(view, date(2026, 2, 28)) is None


# --- is_billing_date ---------------------------------------------------------------------


@pytest.mark.parametrize(("day", "expected"), [
    (date(2026, 1, 30), False),  # before the anchor
    (date(2026, 1, 31), True),   # the anchor
    (date(2026, 2, 27), False),
    (date(2026, 2, 28), True),   # clamped February boundary
    (date(2026, 3, 28), False),  # the 28th is not a boundary in March
    (date(2026, 3, 31), True),
    (date(2026, 4, 30), True),   # the last billing date itself
    (date(2026, 5, 31), False),  # after the end (renewal off)
])
def test_billing_dates_are_boundaries_within_the_subscription(day: date,
                                                              expected: bool) -> None:
    """Anchor 2026-01-31, renewal off ending at local midnight of 30 Apr (R2.3, R4.1)."""
    assert is_billing_date(_renewal_off("2026-04-29T22:00:00Z"), day) is expected


# --- billing_instant ---------------------------------------------------------------------


@pytest.mark.parametrize(("zone_name", "day", "instant"), [
    # Paris, the day DST starts (29 Mar 2026, 02:00 → 03:00): midnight is still UTC+1.
    ("Europe/Paris", date(2026, 3, 29), _utc(2026, 3, 28, 23)),
    # The next midnight is UTC+2: that local day lasted 23 hours.
    ("Europe/Paris", date(2026, 3, 30), _utc(2026, 3, 29, 22)),
    # The day DST ends (25 Oct 2026, 03:00 → 02:00): midnight is still UTC+2.
    ("Europe/Paris", date(2026, 10, 25), _utc(2026, 10, 24, 22)),
    ("Europe/Paris", date(2026, 10, 26), _utc(2026, 10, 25, 23)),
    # Los Angeles: 08:00Z in winter (UTC-8), 07:00Z in summer (UTC-7).
    ("America/Los_Angeles", date(2026, 1, 1), _utc(2026, 1, 1, 8)),
    ("America/Los_Angeles", date(2026, 7, 1), _utc(2026, 7, 1, 7)),
    # São Paulo, 4 Nov 2018: DST started at midnight (00:00 → 01:00), so that day began at
    # 01:00 local, UTC-2, i.e. 03:00Z.
    ("America/Sao_Paulo", date(2018, 11, 4), _utc(2018, 11, 4, 3)),
    ("UTC", date(2026, 2, 28), _utc(2026, 2, 28)),
])
def test_a_billing_date_falls_due_at_local_midnight(zone_name: str, day: date,
                                                    instant: datetime) -> None:
    """R2.1: the instant is the first of the local day in the tenant's zone."""
    due = billing_instant(_tenant(time_zone=zone_name, anchor="2018-01-01"), day)
    assert due == instant
    assert due.utcoffset() is not None


def test_a_paris_billing_date_on_the_dst_day() -> None:
    """Anchor 2026-01-29 in Paris: dates 28 Feb (clamped), 29 Mar (the DST day), 29 Apr.
    The period [29 Mar, 29 Apr) runs from 2026-03-28T23:00Z to 2026-04-28T22:00Z: 31 local
    days but 31 × 24 − 1 = 743 hours (subtracted in UTC: the zone's wall times differ by 31
    days exactly)."""
    view = _tenant(anchor="2026-01-29")
    assert next_billing_date(view, date(2026, 2, 28)) == date(2026, 3, 29)
    start = billing_instant(view, date(2026, 3, 29))
    end = billing_instant(view, date(2026, 4, 29))
    assert (start, end) == (_utc(2026, 3, 28, 23), _utc(2026, 4, 28, 22))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=743)


# --- ended_period, renews_at ------------------------------------------------------------


def test_the_anchor_ends_no_period() -> None:
    """R9.1: on the anchor only the first period's advance is due."""
    view = _tenant()
    assert ended_period(view, date(2026, 1, 31)) is None
    assert ended_period(view, date(2026, 1, 1)) is None


def test_the_period_ended_by_a_billing_date() -> None:
    """Anchor 2026-01-31: 28 Feb ends [31 Jan, 28 Feb) (28 days, a February period);
    31 Mar ends [28 Feb, 31 Mar) (31 days)."""
    view = _tenant()
    february = ended_period(view, date(2026, 2, 28))
    assert february == Period(date(2026, 1, 31), date(2026, 2, 28))
    assert february.days == 28
    march = ended_period(view, date(2026, 3, 31))
    assert march == Period(date(2026, 2, 28), date(2026, 3, 31))
    assert march.days == 31


def test_renewal_off_the_last_date_starts_no_period() -> None:
    """R4.1, R9.1: ends at 2026-04-29T22:00Z (Paris midnight of 30 Apr). On 31 Mar a new
    period starts; on 30 Apr none does (arrears only), and the period it bills is the one
    that ended, [31 Mar, 30 Apr)."""
    view = _renewal_off("2026-04-29T22:00:00Z")
    assert renews_at(view, date(2026, 3, 31)) is True
    assert renews_at(view, date(2026, 4, 30)) is False
    assert ended_period(view, date(2026, 4, 30)) == Period(date(2026, 3, 31), date(2026, 4, 30))


def test_renewal_on_every_date_starts_a_period() -> None:
    assert renews_at(_tenant(), date(2030, 1, 31)) is True


# --- periods_between ---------------------------------------------------------------------


def test_periods_from_the_one_containing_a_day_up_to_a_boundary() -> None:
    """Anchor 2026-01-31: a late event of 10 Feb, next invoice for the period starting
    30 Apr: the billed periods it may change are [31 Jan, 28 Feb), [28 Feb, 31 Mar),
    [31 Mar, 30 Apr)."""
    assert periods_between(_tenant(), date(2026, 2, 10), date(2026, 4, 30)) == [
        Period(date(2026, 1, 31), date(2026, 2, 28)),
        Period(date(2026, 2, 28), date(2026, 3, 31)),
        Period(date(2026, 3, 31), date(2026, 4, 30)),
    ]


def test_a_period_ending_after_the_limit_is_left_out() -> None:
    """Limit 29 Apr: [31 Mar, 30 Apr) ends after it, so only the first two remain."""
    assert periods_between(_tenant(), date(2026, 2, 10), date(2026, 4, 29)) == [
        Period(date(2026, 1, 31), date(2026, 2, 28)),
        Period(date(2026, 2, 28), date(2026, 3, 31)),
    ]


def test_a_day_before_the_anchor_starts_from_the_first_period() -> None:
    assert periods_between(_tenant(), date(2025, 12, 1), date(2026, 2, 28)) == [
        Period(date(2026, 1, 31), date(2026, 2, 28))]
    assert periods_between(_tenant(), date(2026, 3, 31), date(2026, 3, 31)) == []


# --- properties --------------------------------------------------------------------------

CYCLES = st.sampled_from(["P1M", "P1Y", "P30D", "P365D"])
ANCHORS = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))


@given(anchor=ANCHORS, cycle=CYCLES, gap=st.one_of(st.none(), st.integers(0, 900)))
def test_the_next_date_is_the_first_boundary_after_the_last_billed(
        anchor: date, cycle: str, gap: int | None) -> None:
    """Strictly after `last_billed`, a billing date, and no billing date in between: the
    period it ends started on or before `last_billed` (R2.3)."""
    view = _tenant(anchor=anchor.isoformat(), cycle=cycle)
    last = None if gap is None else anchor - timedelta(days=1) + timedelta(days=gap)
    found = next_billing_date(view, last)
    assert found is not None
    after = anchor - timedelta(days=1) if last is None else last
    assert found > after
    assert is_billing_date(view, found)
    if found > anchor:
        ended = period_containing(anchor, Cycle(cycle), found - timedelta(days=1))
        assert ended.end == found
        assert ended.start <= after


@given(anchor=ANCHORS, cycle=CYCLES, offset=st.integers(-60, 900), span=st.integers(0, 900))
def test_periods_between_are_contiguous_and_complete(anchor: date, cycle: str, offset: int,
                                                     span: int) -> None:
    """Contiguous periods of the tenant, the first containing the day (or the anchor), each
    ending at or before the limit, and the next one would end after it."""
    view = _tenant(anchor=anchor.isoformat(), cycle=cycle)
    first = anchor + timedelta(days=offset)
    before = first + timedelta(days=span)
    found = periods_between(view, first, before)
    day = max(first, anchor)
    for earlier, later in pairwise(found):
        assert earlier.end == later.start
    for period in found:
        assert period.end <= before
        assert period_containing(anchor, Cycle(cycle), period.start) == period
    if found:
        assert found[0].contains(day)
        day = found[-1].end
    if day < before:
        assert period_containing(anchor, Cycle(cycle), day).end > before
