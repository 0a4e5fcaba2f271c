"""Billing cycles and periods (R2).

Billing dates are local calendar dates in the tenant's IANA time zone (R2.1). A period is the
half-open range ``[start, end)`` of local dates; its boundaries are at local midnight. All
functions are pure: "now" is always passed in by the caller (R2.4).
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.times import local_date, local_midnight

__all__ = [
    "Cycle",
    "Period",
    "billing_dates_between",
    "local_date",
    "local_midnight",
    "midnight_utc",
    "period_boundary",
    "period_containing",
    "period_index",
]


class Cycle(StrEnum):
    """Billing cycles (R2.2)."""

    P1M = "P1M"  # monthly, anchored on the subscription start date (R2.3)
    P1Y = "P1Y"  # annual (R2.3)
    P30D = "P30D"  # fixed 30 days (docs/rules.md, R2.2)
    P365D = "P365D"  # fixed 365 days (docs/rules.md, R2.2)


_FIXED_DAYS: dict[Cycle, int] = {Cycle.P30D: 30, Cycle.P365D: 365}


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: local calendar dates ``[start, end)`` (R2.1)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"empty period: start {self.start} must be before end {self.end}")

    @property
    def days(self) -> int:
        """Number of local days in the period (``period_days`` of R4.2)."""
        return (self.end - self.start).days

    def contains(self, d: date) -> bool:
        """True if local day ``d`` lies in ``[start, end)``."""
        return self.start <= d < self.end

    def start_instant(self, tz: ZoneInfo) -> datetime:
        """Instant the period starts: local midnight of ``start`` (see :func:`local_midnight`),
        in UTC, so that arithmetic on it (``end − 1 µs``) and equality with instants of other
        zones are exact even where local midnight is skipped or repeated."""
        return midnight_utc(self.start, tz)

    def end_instant(self, tz: ZoneInfo) -> datetime:
        """Instant the period ends (excluded): local midnight of ``end``, in UTC."""
        return midnight_utc(self.end, tz)

    def public(self) -> dict[str, str]:
        """The period as the API shows it: ``{"from": start, "to": end}`` (end excluded)."""
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


@functools.lru_cache(maxsize=65_536)
def midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight of ``day`` in ``tz`` (:func:`local_midnight`), in UTC. Remembered: a
    billing run asks for the same few boundaries, for every tenant of a zone and many times
    per period (late usage, R9.4, recomputes dozens of periods per tenant)."""
    return local_midnight(day, tz).astimezone(UTC)


def add_months(anchor: date, months: int) -> date:
    """The same day `months` later (earlier when negative), clamped to the month's last day
    (R2.3): 31 Jan + 1 → 28/29 Feb, 31 Mar − 1 → 28/29 Feb."""
    year, month0 = divmod(anchor.year * 12 + anchor.month - 1 + months, 12)
    month = month0 + 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def add_years(day: date, years: int = 1) -> date:
    """The same date `years` later; 29 Feb → 28 Feb (R2.3)."""
    return add_months(day, 12 * years)


def period_boundary(anchor: date, cycle: Cycle, n: int) -> date:
    """Start of the ``n``-th period (``n = 0`` is the anchor itself) (R2.3).

    Always computed from the original anchor, never from the previous boundary: monthly from
    31 Jan gives 28/29 Feb, 31 Mar, 30 Apr; annual from 29 Feb gives 28 Feb, and 29 Feb again
    in the next leap year.
    """
    cycle = Cycle(cycle)
    if n < 0:
        raise ValueError(f"period number must be >= 0, got {n}")
    if cycle is Cycle.P1M:
        return add_months(anchor, n)
    if cycle is Cycle.P1Y:
        return add_months(anchor, 12 * n)
    return anchor + timedelta(days=_FIXED_DAYS[cycle] * n)


def period_index(anchor: date, cycle: Cycle, day: date) -> int:
    """Number ``n`` of the period containing local day ``day`` (R2.3).

    O(1): the index is estimated from the calendar distance, then corrected by at most one
    step. Raises ValueError if ``day`` is before the anchor.
    """
    cycle = Cycle(cycle)
    if day < anchor:
        raise ValueError(f"day {day} is before the anchor {anchor}")
    if cycle is Cycle.P1M:
        n = (day.year - anchor.year) * 12 + (day.month - anchor.month)
    elif cycle is Cycle.P1Y:
        n = day.year - anchor.year
    else:
        return (day - anchor).days // _FIXED_DAYS[cycle]
    # The estimate's boundary lies in the same month (P1M) / year (P1Y) as `day`, so the
    # true index is n or n - 1.
    while n > 0 and period_boundary(anchor, cycle, n) > day:
        n -= 1
    while period_boundary(anchor, cycle, n + 1) <= day:
        n += 1
    return n


def period_containing(anchor: date, cycle: Cycle, day: date) -> Period:
    """The period ``[start, end)`` containing local day ``day``. ValueError if before the anchor."""
    n = period_index(anchor, cycle, day)
    return Period(period_boundary(anchor, cycle, n), period_boundary(anchor, cycle, n + 1))


def billing_dates_between(anchor: date, cycle: Cycle, after: date, up_to: date) -> list[date]:
    """Period boundaries ``b`` with ``after < b <= up_to``, in increasing order (R2.3).

    The anchor itself (boundary 0, the start of the first period) is included when it lies in
    the range. Empty when ``up_to <= after``.
    """
    n = 0 if after < anchor else period_index(anchor, cycle, after) + 1
    dates: list[date] = []
    while (b := period_boundary(anchor, cycle, n)) <= up_to:
        dates.append(b)
        n += 1
    return dates
