"""R2 time and cycles: anchored boundaries, month-end clamping, tiling, local midnight.

Expected dates and instants are worked out by hand in the comments.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.billing.periods import (
    Cycle,
    Period,
    billing_dates_between,
    local_date,
    period_boundary,
    period_containing,
    period_index,
)

pytestmark = pytest.mark.unit

ONE_DAY = timedelta(days=1)


# --- R2.2 / R2.3 boundaries -------------------------------------------------------------------


def test_r2_2_cycles() -> None:
    assert [c.value for c in Cycle] == ["P1M", "P1Y", "P30D", "P365D"]
    assert Cycle("P30D") is Cycle.P30D


def test_r2_3_month_end_anchor_31_january() -> None:
    # R2.3: 31 Jan → 28 Feb (2026 not leap) → 31 Mar → 30 Apr → 31 May; a year later 28 Feb.
    a = date(2026, 1, 31)
    got = [period_boundary(a, Cycle.P1M, n) for n in range(6)]
    assert got == [a, date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30),
                   date(2026, 5, 31), date(2026, 6, 30)]  # fmt: skip
    assert period_boundary(a, Cycle.P1M, 13) == date(2027, 2, 28)  # 2027 not leap


def test_r2_3_month_end_anchor_31_january_leap_year() -> None:
    # 2024 is a leap year: 31 Jan → 29 Feb → 31 Mar
    a = date(2024, 1, 31)
    assert period_boundary(a, Cycle.P1M, 1) == date(2024, 2, 29)
    assert period_boundary(a, Cycle.P1M, 2) == date(2024, 3, 31)


def test_r2_3_month_end_anchor_30_and_29() -> None:
    # 30 Jan → 28 Feb → 30 Mar (computed from the anchor, not from 28 Feb)
    assert period_boundary(date(2026, 1, 30), Cycle.P1M, 1) == date(2026, 2, 28)
    assert period_boundary(date(2026, 1, 30), Cycle.P1M, 2) == date(2026, 3, 30)
    # 29 Jan 2026 → 28 Feb → 29 Mar
    assert period_boundary(date(2026, 1, 29), Cycle.P1M, 2) == date(2026, 3, 29)
    # 15 Nov 2026 → 15 Dec 2026 → 15 Jan 2027 (year roll-over)
    assert period_boundary(date(2026, 11, 15), Cycle.P1M, 2) == date(2027, 1, 15)


def test_r2_3_annual_leap_day_anchor() -> None:
    # R2.3: 29 Feb 2024 → 28 Feb 2025, 2026, 2027 → 29 Feb 2028 (leap, from the anchor)
    a = date(2024, 2, 29)
    got = [period_boundary(a, Cycle.P1Y, n) for n in range(5)]
    assert got == [a, date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28), date(2028, 2, 29)]
    # 2100 is not a leap year (divisible by 100, not 400): 2024 + 76 → 28 Feb 2100
    assert period_boundary(a, Cycle.P1Y, 76) == date(2100, 2, 28)


def test_r2_2_fixed_day_cycles() -> None:
    # P30D from 1 Jan 2026: +30 → 31 Jan; +60 → 31 Jan + 30 = 2 Mar (Feb has 28 days)
    assert period_boundary(date(2026, 1, 1), Cycle.P30D, 1) == date(2026, 1, 31)
    assert period_boundary(date(2026, 1, 1), Cycle.P30D, 2) == date(2026, 3, 2)
    # P365D from 1 Jan 2024 (366-day year): → 31 Dec 2024; → 31 Dec 2025 (365-day year)
    assert period_boundary(date(2024, 1, 1), Cycle.P365D, 1) == date(2024, 12, 31)
    assert period_boundary(date(2024, 1, 1), Cycle.P365D, 2) == date(2025, 12, 31)


def test_r2_3_negative_period_number_rejected() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        period_boundary(date(2026, 1, 1), Cycle.P1M, -1)


# --- period_containing / period_index ---------------------------------------------------------


def test_r2_1_period_half_open() -> None:
    p = Period(date(2026, 3, 1), date(2026, 4, 1))
    assert p.days == 31
    assert p.contains(date(2026, 3, 1))
    assert p.contains(date(2026, 3, 31))
    assert not p.contains(date(2026, 4, 1))
    assert not p.contains(date(2026, 2, 28))
    with pytest.raises(ValueError, match="empty period"):
        Period(date(2026, 3, 1), date(2026, 3, 1))


def test_r2_3_period_containing_month_end_anchor() -> None:
    a = date(2026, 1, 31)
    # 15 Mar 2026 lies in [28 Feb, 31 Mar): 1 day of Feb + 30 days of Mar = 31 days
    p = period_containing(a, Cycle.P1M, date(2026, 3, 15))
    assert p == Period(date(2026, 2, 28), date(2026, 3, 31))
    assert p.days == 31
    # 27 Feb lies in [31 Jan, 28 Feb): 1 + 27 = 28 days
    p0 = period_containing(a, Cycle.P1M, date(2026, 2, 27))
    assert p0 == Period(a, date(2026, 2, 28))
    assert p0.days == 28
    assert period_index(a, Cycle.P1M, date(2026, 2, 27)) == 0
    assert period_index(a, Cycle.P1M, date(2026, 2, 28)) == 1
    assert period_containing(a, Cycle.P1M, a) == p0


def test_r2_3_period_containing_r4_2_example() -> None:
    # R4.2: monthly from 1 Mar 2026, 20 Mar lies in [1 Mar, 1 Apr), 31 days
    p = period_containing(date(2026, 3, 1), Cycle.P1M, date(2026, 3, 20))
    assert p == Period(date(2026, 3, 1), date(2026, 4, 1))
    assert p.days == 31


def test_r2_3_period_containing_annual_leap_anchor() -> None:
    a = date(2024, 2, 29)
    # 27 Feb 2026 lies in [28 Feb 2025, 28 Feb 2026) (365 days)
    p = period_containing(a, Cycle.P1Y, date(2026, 2, 27))
    assert p == Period(date(2025, 2, 28), date(2026, 2, 28))
    assert p.days == 365
    # 28 Feb 2028 lies in [28 Feb 2027, 29 Feb 2028) (366 days: includes 29 Feb 2028)
    assert period_containing(a, Cycle.P1Y, date(2028, 2, 28)) == Period(
        date(2027, 2, 28), date(2028, 2, 29)
    )


def test_r2_3_period_containing_far_from_anchor() -> None:
    a = date(2000, 1, 31)
    # Dec 2399 is 399 × 12 + 11 = 4799 months after Jan 2000; Dec has 31 days so the
    # boundary is 31 Dec 2399 and the period runs to 31 Jan 2400.
    assert period_index(a, Cycle.P1M, date(2399, 12, 31)) == 4799
    assert period_containing(a, Cycle.P1M, date(2399, 12, 31)) == Period(
        date(2399, 12, 31), date(2400, 1, 31)
    )
    # 30 Dec 2399 is before that boundary: period 4798 = [30 Nov 2399 (clamped), 31 Dec 2399)
    assert period_index(a, Cycle.P1M, date(2399, 12, 30)) == 4798
    assert period_containing(a, Cycle.P1M, date(2399, 12, 30)) == Period(
        date(2399, 11, 30), date(2399, 12, 31)
    )
    # Near date.max: (9999 - 1900) × 12 + 11 = 97199 months; 1 Dec 9999 < 31 Dec 9999 so
    # it is period 97198 = [30 Nov 9999, 31 Dec 9999)
    assert period_containing(date(1900, 1, 31), Cycle.P1M, date(9999, 12, 1)) == Period(
        date(9999, 11, 30), date(9999, 12, 31)
    )
    # P30D: 10000 periods of 30 days + 5 days
    a30 = date(2000, 1, 1)
    assert period_index(a30, Cycle.P30D, a30 + timedelta(days=300_005)) == 10_000


def test_r2_3_day_before_anchor_rejected() -> None:
    with pytest.raises(ValueError, match="before the anchor"):
        period_containing(date(2026, 1, 31), Cycle.P1M, date(2026, 1, 30))
    with pytest.raises(ValueError, match="before the anchor"):
        period_index(date(2026, 1, 31), Cycle.P30D, date(2025, 1, 30))


# --- billing_dates_between --------------------------------------------------------------------


def test_r2_3_billing_dates_between() -> None:
    a = date(2026, 1, 31)
    assert billing_dates_between(a, Cycle.P1M, a, date(2026, 5, 31)) == [
        date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31),
    ]  # fmt: skip
    # `after` excluded, `up_to` included; the anchor is boundary 0
    assert billing_dates_between(a, Cycle.P1M, date(2026, 1, 1), date(2026, 2, 28)) == [
        a, date(2026, 2, 28),
    ]  # fmt: skip
    assert billing_dates_between(a, Cycle.P1M, date(2026, 2, 27), date(2026, 2, 28)) == [
        date(2026, 2, 28)
    ]
    assert billing_dates_between(a, Cycle.P1M, date(2026, 2, 28), date(2026, 3, 30)) == []
    assert billing_dates_between(a, Cycle.P1M, date(2026, 5, 1), date(2026, 4, 1)) == []
    assert billing_dates_between(a, Cycle.P1M, date(2025, 1, 1), date(2025, 12, 1)) == []


# --- local_date -------------------------------------------------------------------------------


def test_r2_1_local_date() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 23:30 UTC on 28 Mar 2026 is 00:30 CET (+01:00) on 29 Mar
    assert local_date(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), paris) == date(2026, 3, 29)
    # 03:00 UTC on 1 Jan 2026 is 22:00 EST (-05:00) on 31 Dec 2025
    ny = ZoneInfo("America/New_York")
    assert local_date(datetime(2026, 1, 1, 3, 0, tzinfo=UTC), ny) == date(2025, 12, 31)


def test_r2_1_local_date_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_date(datetime(2026, 1, 1), ZoneInfo("Europe/Paris"))  # noqa: DTZ001


# --- R2.1 period instants at local midnight, across DST ---------------------------------------


def _utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        # Paris, DST starts 29 Mar 2026 at 02:00: midnight exists, CET +01:00 → 23:00Z on the 28th
        ("Europe/Paris", date(2026, 3, 29), _utc(2026, 3, 28, 23)),
        # Paris, DST ends 25 Oct 2026 at 03:00: midnight is still CEST +02:00 → 22:00Z
        ("Europe/Paris", date(2026, 10, 25), _utc(2026, 10, 24, 22)),
        # Lord Howe, DST (+11:00) ends 5 Apr 2026 at 02:00: midnight +11:00 → 13:00Z on 4 Apr
        ("Australia/Lord_Howe", date(2026, 4, 5), _utc(2026, 4, 4, 13)),
        # Lord Howe, DST starts 4 Oct 2026 at 02:00: midnight +10:30 → 13:30Z on 3 Oct
        ("Australia/Lord_Howe", date(2026, 10, 4), _utc(2026, 10, 3, 13, 30)),
        # Sao Paulo, DST started 4 Nov 2018 at 00:00 → 01:00: midnight does not exist; first
        # valid instant 01:00 -02:00 = 03:00Z
        ("America/Sao_Paulo", date(2018, 11, 4), _utc(2018, 11, 4, 3)),
        # Sao Paulo, DST ended 17 Feb 2019 at 00:00 -02:00 → 23:00 -03:00 on the 16th: midnight
        # of the 17th exists once, at -03:00 → 03:00Z
        ("America/Sao_Paulo", date(2019, 2, 17), _utc(2019, 2, 17, 3)),
        # Havana, DST starts 8 Mar 2026 at 00:00 → 01:00 CDT (-04:00): first instant 05:00Z
        ("America/Havana", date(2026, 3, 8), _utc(2026, 3, 8, 5)),
        # Havana, DST ends 1 Nov 2026 at 01:00 CDT → 00:00 CST: midnight happens twice; the
        # first one is 00:00 -04:00 = 04:00Z (the second would be 05:00Z)
        ("America/Havana", date(2026, 11, 1), _utc(2026, 11, 1, 4)),
        # Cairo, DST starts on the last Friday of April 2024 (26th) at 00:00 → 01:00 +03:00:
        # first instant 22:00Z on the 25th
        ("Africa/Cairo", date(2024, 4, 26), _utc(2024, 4, 25, 22)),
        # Apia skipped 30 Dec 2011 entirely (-10:00 → +14:00 at the end of 29 Dec, 10:00Z):
        # the first instant at or after that midnight is 31 Dec 00:00 +14:00 = 10:00Z on 30 Dec
        ("Pacific/Apia", date(2011, 12, 30), _utc(2011, 12, 30, 10)),
    ],
)
def test_r2_1_start_instant_local_midnight_dst(
    zone: str, day: date, expected_utc: datetime
) -> None:
    tz = ZoneInfo(zone)
    start = Period(day, day + ONE_DAY).start_instant(tz)
    assert start.tzinfo is UTC  # in UTC: exact arithmetic even around a DST change
    assert start.astimezone(UTC) == expected_utc
    assert Period(day - ONE_DAY, day).end_instant(tz).astimezone(UTC) == expected_utc


def test_r2_1_period_length_in_hours_across_dst() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 29 Mar 2026 is 23 h long (22:00Z − 23:00Z the day before), 25 Oct 2026 is 25 h long
    spring = Period(date(2026, 3, 29), date(2026, 3, 30))
    autumn = Period(date(2026, 10, 25), date(2026, 10, 26))
    assert spring.end_instant(paris).astimezone(UTC) - spring.start_instant(paris).astimezone(
        UTC
    ) == timedelta(hours=23)
    assert autumn.end_instant(paris).astimezone(UTC) - autumn.start_instant(paris).astimezone(
        UTC
    ) == timedelta(hours=25)


ZONES = [
    "Europe/Paris", "America/Sao_Paulo", "Australia/Lord_Howe", "America/Havana",
    "Africa/Cairo", "Asia/Beirut", "America/Santiago", "America/Asuncion", "Pacific/Apia",
    "America/St_Johns", "Asia/Tehran", "Pacific/Chatham", "America/New_York", "Asia/Kolkata",
    "UTC",
]  # fmt: skip


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(UTC).astimezone(tz).replace(tzinfo=None)


@given(
    day=st.dates(min_value=date(1970, 1, 2), max_value=date(2037, 12, 31)),
    zone=st.sampled_from(ZONES),
)
def test_r2_1_property_start_instant_is_first_instant_of_local_day(day: date, zone: str) -> None:
    tz = ZoneInfo(zone)
    midnight = datetime.combine(day, time(0))
    start = Period(day, day + ONE_DAY).start_instant(tz)
    start_utc = start.astimezone(UTC)
    # Independent check of whether local midnight exists: try both folds.
    candidates = [midnight.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
    valid = [u for u in candidates if _wall(u, tz) == midnight]
    if valid:
        assert _wall(start, tz) == midnight
        assert start_utc == min(valid)  # the earlier of two ambiguous midnights
    else:
        # In a gap: the first instant whose wall time is at or after midnight.
        assert _wall(start, tz) > midnight
        assert _wall(start_utc - timedelta(seconds=1), tz) < midnight
    # Nothing earlier belongs to the local day (checked one second before).
    assert _wall(start_utc - timedelta(seconds=1), tz) < midnight
    assert start.tzinfo is UTC
    end = Period(day, day + ONE_DAY).end_instant(tz)
    assert end.astimezone(UTC) > start_utc


# --- properties: periods tile the timeline ----------------------------------------------------

plain_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
month_ends = st.builds(
    lambda y, m, d: date(y, m, min(d, calendar.monthrange(y, m)[1])),
    st.integers(1900, 2200),
    st.integers(1, 12),
    st.sampled_from([28, 29, 30, 31]),
)
leap_days = st.integers(1900, 2200).filter(calendar.isleap).map(lambda y: date(y, 2, 29))
anchors = st.one_of(plain_dates, month_ends, leap_days)
cycles = st.sampled_from(list(Cycle))


@given(anchor=anchors, cycle=cycles, n=st.integers(min_value=0, max_value=3000))
def test_r2_3_property_periods_tile(anchor: date, cycle: Cycle, n: int) -> None:
    b0 = period_boundary(anchor, cycle, n)
    b1 = period_boundary(anchor, cycle, n + 1)
    assert b0 < b1
    period = Period(b0, b1)
    # period n's end is period n+1's start, and period_containing agrees with period_boundary
    assert period_containing(anchor, cycle, b0) == period
    assert period_containing(anchor, cycle, b1 - ONE_DAY) == period
    assert period_containing(anchor, cycle, b1).start == b1
    assert period_index(anchor, cycle, b0) == n
    assert period_index(anchor, cycle, b1 - ONE_DAY) == n
    assert period_index(anchor, cycle, b1) == n + 1
    # R2.3: the anchor's day, clamped to the month's length; fixed cycles have fixed lengths
    if cycle in (Cycle.P1M, Cycle.P1Y):
        months = n if cycle is Cycle.P1M else 12 * n
        assert (b0.year * 12 + b0.month) - (anchor.year * 12 + anchor.month) == months
        assert b0.day == min(anchor.day, calendar.monthrange(b0.year, b0.month)[1])
    else:
        assert period.days == {Cycle.P30D: 30, Cycle.P365D: 365}[cycle]


@settings(deadline=None)
@given(anchor=anchors, cycle=cycles, offset=st.integers(min_value=0, max_value=100_000))
def test_r2_1_property_every_day_in_exactly_one_period(
    anchor: date, cycle: Cycle, offset: int
) -> None:
    first = anchor + timedelta(days=offset)
    previous = period_containing(anchor, cycle, first)
    assert previous.contains(first)
    for i in range(1, 200):
        day = first + timedelta(days=i)
        current = period_containing(anchor, cycle, day)
        assert current.contains(day)
        if previous.contains(day):
            assert current == previous
        else:
            # a new period starts exactly where the previous one ends: no gap, no overlap
            assert current.start == previous.end == day
        previous = current


@given(anchor=anchors, cycle=cycles, offset=st.integers(min_value=0, max_value=3000))
def test_r2_3_property_period_containing_matches_linear_scan(
    anchor: date, cycle: Cycle, offset: int
) -> None:
    day = anchor + timedelta(days=offset)
    n = 0
    while period_boundary(anchor, cycle, n + 1) <= day:  # oracle: walk the boundaries
        n += 1
    assert period_index(anchor, cycle, day) == n
    assert period_containing(anchor, cycle, day) == Period(
        period_boundary(anchor, cycle, n), period_boundary(anchor, cycle, n + 1)
    )


@given(
    anchor=anchors,
    cycle=cycles,
    after_offset=st.integers(min_value=-400, max_value=3000),
    span=st.integers(min_value=-10, max_value=1500),
)
def test_r2_3_property_billing_dates_between(
    anchor: date, cycle: Cycle, after_offset: int, span: int
) -> None:
    after = anchor + timedelta(days=after_offset)
    up_to = after + timedelta(days=span)
    expected = []
    n = 0
    while (b := period_boundary(anchor, cycle, n)) <= up_to:  # oracle: walk the boundaries
        if b > after:
            expected.append(b)
        n += 1
    assert billing_dates_between(anchor, cycle, after, up_to) == expected
