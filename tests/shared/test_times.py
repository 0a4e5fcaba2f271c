"""The time domain and its parsers (shared/times.py): every instant, day, month and zone a
caller sends is read into an aware value inside [2000-01-01, 2100-01-01), or refused with a
`ValidationFailed` naming the caller's field.

Expected values are worked out by hand in the docstrings and comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ValidationFailed
from shared.times import (
    EARLIEST,
    LATEST,
    as_utc,
    from_micros,
    from_utc_text,
    micros,
    month_window,
    next_month,
    parse_day,
    parse_instant,
    parse_month,
    parse_zone,
    utc_text,
    within_domain,
)

pytestmark = pytest.mark.unit

# Loaded while the module is imported (file reads are refused inside a unit test); ZoneInfo
# keeps one instance per key while it is referenced, so later look-ups reuse it.
PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")
parse_zone("Europe/Paris", "tz")  # the list of known zone names, read once and cached

ONE_MICRO = timedelta(microseconds=1)
# 2000-01-01T00:00Z: 30 years after the epoch with 7 leap days (1972 ... 1996):
# (30 × 365 + 7) days × 86 400 s = 10 957 × 86 400 = 946 684 800 s.
EARLIEST_MICROS = 946_684_800_000_000
# 2100-01-01T00:00Z: 130 years with 32 leap days (1972 ... 2096; 2000 is one, 2100 is not):
# (130 × 365 + 32) × 86 400 = 47 482 × 86 400 = 4 102 444 800 s.
LATEST_MICROS = 4_102_444_800_000_000


def refused(call: object, *args: object, **kwargs: object) -> ValidationFailed:
    assert callable(call)
    with pytest.raises(ValidationFailed) as error:
        call(*args, **kwargs)
    return error.value


# --- parse_instant -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "2026-01-15T10:00:00Z",
    "2026-01-15T10:00:00+00:00",
    "2026-01-15T11:00:00+01:00",  # Paris in winter: 11:00 − 1 h
    "2026-01-15T04:30:00-05:30",  # 04:30 + 5 h 30
    "2026-01-16T00:00:00+14:00",  # Kiribati: next local day, 00:00 − 14 h = 10:00 the 15th
])
def test_an_instant_with_any_offset_is_read_as_utc(text: str) -> None:
    """Each text names 2026-01-15T10:00:00Z, written with another offset."""
    instant = parse_instant(text, "from")
    assert instant == datetime(2026, 1, 15, 10, tzinfo=UTC)
    assert instant.utcoffset() == timedelta(0)


def test_microseconds_are_kept() -> None:
    assert parse_instant("2026-01-15T10:00:00.000001Z", "from") == (
        datetime(2026, 1, 15, 10, tzinfo=UTC) + ONE_MICRO)


def test_a_naive_instant_is_refused_naming_the_field() -> None:
    """Without an offset the instant is ambiguous: 10:00 in Paris or in Tokyo?"""
    error = refused(parse_instant, "2026-01-15T10:00:00", "from")
    assert error.field == "from"
    assert "offset" in error.message


@pytest.mark.parametrize("value", [
    None, 1_768_471_200, "yesterday", "2026-13-01T00:00:00Z", "2026-02-29T10:00:00Z",
    "", "2" * 65,
])
def test_what_is_no_date_time_is_refused_naming_the_field(value: object) -> None:
    """Not text, not a date-time, 29 Feb of a common year (2026), or over 64 characters."""
    error = refused(parse_instant, value, "time")
    assert error.field == "time"
    assert error.message.startswith("time: ")


@pytest.mark.parametrize(("text", "accepted"), [
    ("2000-01-01T00:00:00Z", True),  # the domain's first instant
    ("1999-12-31T23:59:59.999999Z", False),  # one microsecond before it
    ("2000-01-01T00:30:00+01:00", False),  # = 1999-12-31T23:30Z
    ("2099-12-31T23:59:59Z", True),
    ("2099-12-31T23:59:59.999999Z", True),  # the last instant
    ("2100-01-01T00:00:00Z", False),  # the end is excluded
    ("2100-01-01T00:30:00+01:00", True),  # = 2099-12-31T23:30Z
    ("2024-02-29T12:00:00Z", True),  # 2024 is a leap year
])
def test_an_instant_lies_from_2000_to_before_2100(text: str, accepted: bool) -> None:
    if accepted:
        assert EARLIEST <= parse_instant(text, "to") < LATEST
        return
    error = refused(parse_instant, text, "to")
    assert error.field == "to"
    assert error.message == "to: must lie from 2000-01-01 to before 2100-01-01"


@pytest.mark.parametrize("text", [
    "0001-01-01T00:00:00+01:00",  # 0000-12-31T23:00Z: before year 1
    "9999-12-31T23:30:00-01:00",  # 10000-01-01T00:30Z: after year 9999
])
def test_an_instant_python_cannot_hold_in_utc_is_refused_not_crashed(text: str) -> None:
    """Converting to UTC would overflow `datetime`: the caller still gets a field error."""
    assert refused(parse_instant, text, "time").field == "time"


def test_a_range_may_end_at_the_domains_end_itself() -> None:
    """[from, to) with to = 2100-01-01T00:00Z covers the last instant; written with an
    offset, 2100-01-01T01:00+01:00 is the same instant."""
    assert parse_instant("2100-01-01T00:00:00Z", "to", range_end=True) == LATEST
    assert parse_instant("2100-01-01T01:00:00+01:00", "to", range_end=True) == LATEST
    assert refused(parse_instant, "2100-01-01T00:00:00.000001Z", "to", range_end=True)
    assert refused(parse_instant, "1999-12-31T23:59:59Z", "to", range_end=True)


@pytest.mark.parametrize("text", ["20260115T100000Z", "2026-W03-4T10:00:00Z"])
def test_only_rfc_3339_is_read(text: str) -> None:
    """docs/events.md and docs/api.md ask for RFC 3339: the basic format and a week date
    (both 2026-01-15T10:00Z in ISO 8601) are not that."""
    assert refused(parse_instant, text, "time").field == "time"


# --- within_domain -------------------------------------------------------------------------

def test_within_domain_includes_its_start_and_excludes_its_end() -> None:
    assert within_domain(EARLIEST, "at") == EARLIEST
    assert within_domain(LATEST - ONE_MICRO, "at") == LATEST - ONE_MICRO
    assert refused(within_domain, EARLIEST - ONE_MICRO, "at").field == "at"
    assert refused(within_domain, LATEST, "at").field == "at"


# --- parse_day, parse_month, utc_month, next_month -----------------------------------------

@pytest.mark.parametrize(("text", "day"), [
    ("2026-01-15", date(2026, 1, 15)),
    ("2024-02-29", date(2024, 2, 29)),  # leap year
    ("2000-02-29", date(2000, 2, 29)),  # divisible by 400: leap
    ("2000-01-01", date(2000, 1, 1)),  # first day
    ("2099-12-30", date(2099, 12, 30)),  # last day: 2100-01-01 − 2 days
])
def test_a_day_is_read(text: str, day: date) -> None:
    assert parse_day(text, "date") == day


@pytest.mark.parametrize(("value", "says"), [
    ("2026-02-29", "is not a calendar date"),  # 2026 is a common year
    ("2026-04-31", "is not a calendar date"),  # April has 30 days
    ("2026-1-5", "expected YYYY-MM-DD"),
    ("20260105", "expected YYYY-MM-DD"),
    ("2026-01-05T00:00:00Z", "expected YYYY-MM-DD"),
    (20260105, "expected YYYY-MM-DD"),
    ("1999-12-31", "must lie from 2000-01-01 to 2099-12-30"),
    ("2099-12-31", "must lie from 2000-01-01 to 2099-12-30"),
])
def test_a_day_that_is_not_one_or_outside_the_domain_is_refused(value: object,
                                                                 says: str) -> None:
    """The last day is 2099-12-30: the module keeps two days' margin below 2100-01-01 so a
    local day's midnight and the next one stay inside the domain in every zone."""
    error = refused(parse_day, value, "date")
    assert error.field == "date"
    assert says in error.message


@pytest.mark.parametrize(("text", "first"), [
    ("2026-02", date(2026, 2, 1)), ("2000-01", date(2000, 1, 1)),
    ("2099-12", date(2099, 12, 1)),
])
def test_a_month_is_read_as_its_first_day(text: str, first: date) -> None:
    assert parse_month(text, "month") == first


@pytest.mark.parametrize(("value", "says"), [
    ("2026-13", "expected YYYY-MM"), ("2026-00", "expected YYYY-MM"),
    ("2026-2", "expected YYYY-MM"), ("2026-02-01", "expected YYYY-MM"),
    (202602, "expected YYYY-MM"), ("1999-12", "must lie from 2000-01 to 2099-12"),
    ("2100-01", "must lie from 2000-01 to 2099-12"),
])
def test_a_month_that_is_not_one_or_outside_the_domain_is_refused(value: object,
                                                                   says: str) -> None:
    error = refused(parse_month, value, "month")
    assert error.field == "month"
    assert says in error.message


def test_a_month_followed_by_a_newline_is_refused() -> None:
    """`?month=2026-01%0A` is not `YYYY-MM`."""
    assert refused(parse_month, "2026-01\n", "month").field == "month"


def test_a_utc_month_runs_from_its_first_midnight_to_the_next_months() -> None:
    """February 2024 has 29 days; December 2099 ends exactly at the domain's end."""
    start, end = month_window("2024-02", "month", UTC_ZONE)
    assert (start, end) == (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    assert end - start == timedelta(days=29)
    assert month_window("2099-12", "month", UTC_ZONE) == (datetime(2099, 12, 1, tzinfo=UTC),
                                                           LATEST)
    assert refused(month_window, "2100-01", "month", UTC_ZONE).field == "month"


def test_a_month_in_paris_runs_between_its_local_midnights() -> None:
    """January 2027 in Paris (UTC+1 in winter): from 2026-12-31T23:00Z to 2027-01-31T23:00Z.
    March 2027 loses an hour on the 28th (summer time): it ends at 2027-03-31T22:00Z, so it
    lasts 31 days minus one hour."""
    start, end = month_window("2027-01", "month", PARIS)
    assert (start, end) == (datetime(2026, 12, 31, 23, tzinfo=UTC),
                            datetime(2027, 1, 31, 23, tzinfo=UTC))
    start, end = month_window("2027-03", "month", PARIS)
    assert end.astimezone(UTC) == datetime(2027, 3, 31, 22, tzinfo=UTC)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(days=31, hours=-1)


@pytest.mark.parametrize(("first", "following"), [
    (date(2026, 1, 1), date(2026, 2, 1)),
    (date(2026, 11, 1), date(2026, 12, 1)),  # 11 // 12 = 0: same year, 11 % 12 + 1 = 12
    (date(2026, 12, 1), date(2027, 1, 1)),  # 12 // 12 = 1: next year, 12 % 12 + 1 = 1
    (date(2099, 12, 1), date(2100, 1, 1)),
])
def test_next_month_turns_the_year_after_december(first: date, following: date) -> None:
    assert next_month(first) == following


# --- parse_zone ----------------------------------------------------------------------------

def test_an_iana_zone_is_read() -> None:
    assert parse_zone("Europe/Paris", "time_zone") is PARIS
    assert parse_zone("UTC", "time_zone") is UTC_ZONE


@pytest.mark.parametrize("value", [
    "localtime",  # the machine's own setting, no place's civil time
    "Factory",  # tzdata's placeholder, abbreviation "-00"
    "Mars/Olympus_Mons", "europe/paris", "Europe/Paris ", "../../etc/passwd", "", 42, None,
])
def test_what_is_no_civil_zone_is_refused_citing_r2_1(value: object) -> None:
    error = refused(parse_zone, value, "time_zone")
    assert error.field == "time_zone"
    assert "(R2.1)" in error.message


def test_an_over_long_zone_name_is_refused_and_echoed_cut_at_64() -> None:
    """'Europe/' (7) + 58 × 'x' = 65 characters: one over the limit of 64; the message
    repeats only the first 64 of them."""
    name = "Europe/" + "x" * 58
    error = refused(parse_zone, name, "time_zone")
    assert error.field == "time_zone"
    assert f"'{name[:64]}' is not an IANA" in error.message
    assert name not in error.message


# --- micros, as_utc, utc_text --------------------------------------------------------------

@pytest.mark.parametrize(("instant", "count"), [
    (datetime(1970, 1, 1, tzinfo=UTC), 0),
    (datetime(1970, 1, 1, tzinfo=UTC) - ONE_MICRO, -1),
    (EARLIEST, EARLIEST_MICROS),
    (LATEST - ONE_MICRO, LATEST_MICROS - 1),  # 16 digits, exact (a float would round it)
    (datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), EARLIEST_MICROS),
])
def test_micros_counts_exact_microseconds_since_the_epoch(instant: datetime,
                                                          count: int) -> None:
    assert micros(instant) == count
    assert from_micros(count) == instant


@given(st.integers(min_value=EARLIEST_MICROS, max_value=LATEST_MICROS - 1))
def test_micros_and_from_micros_round_trip(count: int) -> None:
    instant = from_micros(count)
    assert instant.tzinfo is UTC
    assert micros(instant) == count


def test_as_utc_tags_a_naive_value_and_converts_an_aware_one() -> None:
    """ClickHouse hands back 2026-01-15 10:00 naive, meaning UTC; 11:00+01:00 is 10:00Z."""
    ten_utc = datetime(2026, 1, 15, 10, tzinfo=UTC)
    assert as_utc(ten_utc.replace(tzinfo=None)) == ten_utc
    assert as_utc(ten_utc.replace(tzinfo=None)).tzinfo is UTC
    paris = datetime(2026, 1, 15, 11, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(paris) == ten_utc
    assert as_utc(paris).utcoffset() == timedelta(0)


def test_utc_text_writes_z() -> None:
    """11:00:00.000001 at +01:00 is 10:00:00.000001 in UTC, written with a `Z`."""
    paris = datetime(2026, 1, 15, 11, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    assert utc_text(paris) == "2026-01-15T10:00:00.000001Z"
    assert utc_text(EARLIEST) == "2000-01-01T00:00:00Z"
    assert from_utc_text("2099-12-31T23:59:59Z") == LATEST - timedelta(seconds=1)


OFFSETS = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                            max_value=timedelta(hours=23, minutes=59)))


@given(st.datetimes(min_value=EARLIEST.replace(tzinfo=None),
                    max_value=(LATEST - ONE_MICRO).replace(tzinfo=None), timezones=OFFSETS))
def test_utc_text_and_from_utc_text_round_trip(instant: datetime) -> None:
    text = utc_text(instant)
    assert text.endswith("Z")
    assert "+" not in text
    back = from_utc_text(text)
    assert back == instant
    assert back.utcoffset() == timedelta(0)
