"""When a tenant is billed (R2, R4.1, R9.1): billing dates are period boundaries from the
original anchor, due at local midnight in the tenant's zone, the last one at the end of a
subscription whose renewal is off. Pure functions of the tenant document.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise

from shared.billing.periods import (
    Cycle,
    Period,
    billing_dates_between,
    local_date,
    midnight_utc,
    period_boundary,
    period_containing,
    period_index,
)
from shared.subscription import TenantState


def last_billing_date(view: TenantState) -> date | None:
    """When renewal is off, the period end is the last billing date (R4.1, R9.1)."""
    end = view.end_instant()
    return None if end is None else local_date(end, view.zone)


def next_billing_date(view: TenantState, last_billed: date | None) -> date | None:
    """The first billing date after `last_billed` (the anchor when nothing was billed)."""
    cycle = Cycle(view.cycle)
    after = last_billed if last_billed is not None else view.anchor - timedelta(days=1)
    # Billing dates are period boundaries from the original anchor (R2.3).
    candidates = billing_dates_between(view.anchor, cycle, after, _far(after, cycle))
    if not candidates:
        return None
    first = candidates[0]
    last = last_billing_date(view)
    if last is not None and first > last:
        return None
    return first


def _far(after: date, cycle: Cycle) -> date:
    return after + timedelta(days=400 if cycle in (Cycle.P1Y, Cycle.P365D) else 40)


def is_billing_date(view: TenantState, day: date) -> bool:
    """Does a period of the tenant start on `day`, within its subscription?"""
    if day < view.anchor:
        return False
    last = last_billing_date(view)
    if last is not None and day > last:
        return False
    return period_containing(view.anchor, Cycle(view.cycle), day).start == day


def billing_instant(view: TenantState, day: date) -> datetime:
    """A billing date falls due at local midnight in the tenant's zone (R2.1), in UTC."""
    return midnight_utc(day, view.zone)


def ended_period(view: TenantState, day: date) -> Period | None:
    """The period that ends on billing date `day` (None on the anchor)."""
    if day <= view.anchor:
        return None
    return period_containing(view.anchor, Cycle(view.cycle), day - timedelta(days=1))


def renews_at(view: TenantState, day: date) -> bool:
    """Does a period start on `day` (renewal on, or the end still ahead)? (R4.1)"""
    end = view.end_instant()
    return end is None or end > billing_instant(view, day)


def periods_between(view: TenantState, first: date, before: date) -> list[Period]:
    """The periods from the one containing local day `first` up to the one ending at or
    before `before` (the billed ones a late event may change)."""
    return list(_periods_between(view.anchor, Cycle(view.cycle), max(first, view.anchor),
                                 before))


@lru_cache(maxsize=4096)
def _periods_between(anchor: date, cycle: Cycle, day: date, before: date
                     ) -> tuple[Period, ...]:
    """Remembered: a billing run's late events ask for the same few (many tenants share an
    anchor, many events a day), each dozens of periods long for an old event (R9.4)."""
    if day >= before:
        return ()
    n = period_index(anchor, cycle, day)
    boundaries = [period_boundary(anchor, cycle, n)]
    while (end := period_boundary(anchor, cycle, n + len(boundaries))) <= before:
        boundaries.append(end)
    return tuple(Period(a, b) for a, b in pairwise(boundaries))
