"""The platform's time domain and the parsers every input of a time goes through.

Instants, dates and zones arrive from callers in event bodies, query strings and request
bodies. Each is read here, once, into an aware value inside the platform's domain
[2000-01-01, 2100-01-01): outside it a local day can fall in year 0 or 10000, which Python
and ClickHouse cannot represent, and no usage or billing date of a real customer lies there.
A parser raises nothing but `ValidationFailed` naming the caller's field.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

from shared.errors import ValidationFailed

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
FIRST_DAY: Final = EARLIEST.date()
# The last local day whose midnight, in any zone, still lies inside the domain.
LAST_DAY: Final = (LATEST - timedelta(days=2)).date()

_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_MONTH: Final = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
# RFC 3339's date-time (a space for the `T` allowed), which `fromisoformat` alone is not: it
# also reads ISO 8601's basic and week forms.
_INSTANT: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII)
_MAX_INSTANT_TEXT: Final = 64
_MAX_ZONE_NAME: Final = 64
# Names tzdata ships that are no place's civil time: the machine's own setting and a
# placeholder zone whose abbreviation is "-00".
_NOT_CIVIL: Final = frozenset({"localtime", "Factory"})


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def micros(instant: datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp loses the last digit)."""
    return (instant - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def as_utc(value: datetime) -> datetime:
    """In UTC; naive means UTC (ClickHouse hands DateTime64('UTC') back naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_text(instant: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as the API and the stored documents write instants."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_utc_text(text: str) -> datetime:
    """An instant the platform wrote itself (`utc_text`), read back."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def parse_instant(value: object, field: str, *, range_end: bool = False) -> datetime:
    """An RFC 3339 date-time with an offset, inside the domain, as UTC; the end of a range
    (exclusive) may be the domain's end itself."""
    if not isinstance(value, str) or len(value) > _MAX_INSTANT_TEXT:
        raise ValidationFailed(f"{field}: must be an RFC 3339 date-time string", field=field)
    try:
        if not _INSTANT.fullmatch(value):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{field}: '{value}' is not an RFC 3339 date-time",
                               field=field) from None
    if parsed.tzinfo is None:
        raise ValidationFailed(f"{field}: needs a UTC offset (RFC 3339)", field=field)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:  # year 1 at +01:00 is before year 1 in UTC
        instant = EARLIEST - timedelta(days=1)
    if range_end and instant == LATEST:
        return instant
    return within_domain(instant, field)


def within_domain(instant: datetime, field: str) -> datetime:
    if not EARLIEST <= instant < LATEST:
        raise ValidationFailed(f"{field}: must lie from {EARLIEST:%Y-%m-%d} to before "
                               f"{LATEST:%Y-%m-%d}", field=field)
    return instant


def parse_day(value: object, field: str) -> date:
    """A `YYYY-MM-DD` calendar date inside the domain."""
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise ValidationFailed(f"{field}: expected YYYY-MM-DD, got '{value}'", field=field)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{field}: '{value}' is not a calendar date", field=field) from None
    return day_within_domain(day, field)


def day_within_domain(day: date, field: str) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValidationFailed(f"{field}: must lie from {FIRST_DAY} to {LAST_DAY}", field=field)
    return day


def parse_month(value: object, field: str) -> date:
    """`YYYY-MM` inside the domain, as the month's first day."""
    match = _MONTH.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValidationFailed(f"{field}: expected YYYY-MM, got '{value}'", field=field)
    year = int(match.group(1))
    if not FIRST_DAY.year <= year <= LAST_DAY.year:
        raise ValidationFailed(f"{field}: must lie from {FIRST_DAY:%Y-%m} to {LAST_DAY:%Y-%m}",
                               field=field)
    return date(year, int(match.group(2)), 1)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def month_window(value: object, field: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """`YYYY-MM` as the instants [start, end) of that month in `tz`: from the local midnight
    of its first day to the next month's."""
    first = parse_month(value, field)
    return local_midnight(first, tz), local_midnight(next_month(first), tz)


@lru_cache(maxsize=65_536)
def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """First instant of local calendar day ``day`` in ``tz`` (R2.1), as an aware datetime in ``tz``.

    Normally this is ``00:00`` local. When local midnight does not exist because a UTC-offset
    change skips it (e.g. DST starting at 00:00 in America/Sao_Paulo until 2019, America/Havana,
    Africa/Cairo), the result is the first valid instant at or after it: the transition instant
    itself, e.g. 01:00 local. When midnight is ambiguous (DST ending at 01:00 → 00:00 as in
    America/Havana) the earlier occurrence (``fold=0``) is returned. When a whole day is
    skipped (Pacific/Apia, 2011-12-30) the result is the first instant of the next existing
    local day.

    Note: compare or subtract the returned datetimes in UTC: Python compares datetimes that
    share a ``tzinfo`` by wall time, ignoring ``fold``.
    """
    wall = datetime.combine(day, time(0))
    candidate = wall.replace(tzinfo=tz)  # fold=0
    if candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return candidate  # midnight exists (if ambiguous, fold=0 is the earlier instant)
    # Midnight falls in a gap. Per PEP 495, fold=1 maps it with the offset after the
    # transition (an instant before the gap) and fold=0 with the offset before it (an instant
    # at or after the gap). Bisect the whole seconds between them (tz data is in seconds) for
    # the first instant whose local wall time is at or after midnight.
    lo = int(wall.replace(tzinfo=tz, fold=1).timestamp())  # wall time < midnight
    hi = int(candidate.timestamp())  # wall time >= midnight
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, tz)


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    """Local calendar date of an aware ``instant`` in ``tz`` (R2.1). Naive datetimes: ValueError."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()} has no time zone (R2.1)")
    return instant.astimezone(tz).date()


def parse_zone(value: object, field: str) -> ZoneInfo:
    """An IANA zone that is some place's civil time (not `localtime`, not `Factory`)."""
    if not isinstance(value, str) or not is_zone_name(value):
        raise ValidationFailed(f"{field}: '{str(value)[:_MAX_ZONE_NAME]}' is not an IANA "
                               "time zone such as 'Europe/Paris' (R2.1)", field=field)
    return zone(value)


def is_zone_name(name: str) -> bool:
    return len(name) <= _MAX_ZONE_NAME and name in _civil_zones()


@lru_cache(maxsize=1)
def _civil_zones() -> frozenset[str]:
    return frozenset(available_timezones() - _NOT_CIVIL)


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    """A zone whose name was checked on the way in (`parse_zone`), cached."""
    return ZoneInfo(name)
