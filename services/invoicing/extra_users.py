"""Extra users (R6.1, R6.2, R6.4): per billed module, the distinct users who held access at
some moment of a period, administrator excluded, beyond the seats covering the module on the
period's last day. Pure functions, no I/O: the arrears of a period (compose.py) and the
periods late usage recomputes (R9.4, dozens per tenant, counted in one pass) both count here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.billing.periods import Period, midnight_utc
from shared.billing.seats import (
    Intervals,
    access_intervals,
    users_by_window,
    users_with_access,
)
from shared.catalog import Catalog, UnknownCatalogItem
from shared.coverage import granted
from shared.subscription import Lot, TenantState
from shared.times import as_utc

_DAY = timedelta(days=1)
_INSTANT = timedelta(microseconds=1)  # the last instant of a period is its end less this


def seat_capacity(view: TenantState, catalog: Catalog, module: str, period: Period) -> int:
    """Seats covering the module on the period's last day, a lot cancelled during the
    period included (R6.2, R6.4)."""
    return _Seats(view).capacity(catalog, module, period)


class _Seats:
    """What counting a tenant's extra users looks up in its catalog and lots, remembered
    for every period one count covers (late usage counts dozens, R9.4): the modules a plan
    bills extra users on, and the lots of the packs whose seats cover a module. Keyed by the
    catalog's identity: this lives for one count, the catalog versions for the process."""

    def __init__(self, view: TenantState, many: bool = False) -> None:
        self.view = view
        # Counting many periods, the seat lots are kept with their instants in UTC, like the
        # periods': the same instants, compared ten times faster than across zones (a lot
        # keeps the offset it was bought at). For one period the copy costs more than it saves.
        self._in_utc = many
        self._billed: dict[tuple[int, str], list[str]] = {}
        self._lots: dict[tuple[int, str], list[Lot]] = {}

    def billed_modules(self, catalog: Catalog, plan_id: str) -> list[str]:
        """The plan's modules whose extra users are billed (R6.1), in order."""
        key = (id(catalog), plan_id)
        if (found := self._billed.get(key)) is None:
            try:
                modules = catalog.modules_of_plan(plan_id)
            except UnknownCatalogItem:
                modules = frozenset()
            found = self._billed[key] = [m for m in sorted(modules)
                                         if _bills_extra_users(catalog, m)]
        return found

    def capacity(self, catalog: Catalog, module: str, period: Period) -> int:
        """Seats covering the module on the period's last day (R6.2, R6.4)."""
        zone = self.view.zone
        last_day = midnight_utc(period.end - _DAY, zone)
        end = period.end_instant(zone)
        key = (id(catalog), module)
        if (lots := self._lots.get(key)) is None:
            packs = catalog.seat_packs(module)
            lots = self._lots[key] = [_in_utc(lot) if self._in_utc else lot
                                      for lot in self.view.lots if lot.item in packs]
        return granted(lot for lot in lots if lot.active_during(last_day, end))


def _in_utc(lot: Lot) -> Lot:
    return lot.model_copy(update={
        "bought_at": as_utc(lot.bought_at),
        "ends_at": None if lot.ends_at is None else as_utc(lot.ends_at)})


def _bills_extra_users(catalog: Catalog, module_id: str) -> bool:
    try:
        return catalog.module(module_id).extra_users == "bill"
    except UnknownCatalogItem:
        return False


@dataclass(frozen=True, slots=True)
class ExtraUsers:
    """One module's extra users over a period (R6.1, R6.4)."""

    billable: int
    users: list[str]  # with access at some moment of [since, end), administrator excluded
    capacity: int
    since: datetime  # the period start, or when an upgrade brought the module


def extra_users(view: TenantState, catalog: Catalog, period: Period,
                access: Iterable[tuple[str, str, datetime, str]]) -> dict[str, ExtraUsers]:
    """Per billed module, its extra users (R6.1, R6.4), from the grants and revocations.

    A module the plan gained during the period (an upgrade, R4.2) counts the users who had
    access from then on: before, it was not the tenant's (R6.3 denied it)."""
    return extra_users_over(view, catalog, period, access_intervals(access))


def billable_by_period(view: TenantState, catalogs: Sequence[Catalog],
                       periods: Sequence[Period], intervals: Intervals,
                       modules: Collection[str]) -> list[dict[str, int]]:
    """The extra users billable on `modules` (R6.4) in each of `periods` (in order, never
    overlapping), each priced by its catalog of `catalogs`, per module. Late usage recomputes
    dozens of periods of a tenant (R9.4), most of them alike: a period is counted only when
    its catalog differs from the previous period's or something its count reads changes
    between them (`_counted_anew`), the users with access over those found in one pass over
    the access spans; any other period shares the previous one's count (the same dict,
    never changed)."""
    zone = view.zone
    modules = frozenset(modules)
    starts = [midnight_utc(p.start, zone) for p in periods]
    # most periods end where the next starts
    ends = [starts[k + 1] if k + 1 < len(periods) and periods[k + 1].start == p.end
            else midnight_utc(p.end, zone) for k, p in enumerate(periods)]
    anew = _counted_anew(_changes(view, intervals, modules), catalogs, starts, ends)
    counted = sorted(anew)
    over = dict(zip(counted, users_by_window(
        intervals, [(starts[k], ends[k]) for k in counted], modules), strict=True))
    seats = _Seats(view, many=True)
    billable: list[dict[str, int]] = []
    for k, (catalog, period) in enumerate(zip(catalogs, periods, strict=True)):
        if (users := over.get(k)) is None:
            billable.append(billable[-1])
            continue
        billable.append({module: c.billable for module, c in extra_users_over(
            view, catalog, period, intervals, modules, users, seats).items()})
    return billable


def _counted_anew(changes: list[datetime], catalogs: Sequence[Catalog],
                  starts: list[datetime], ends: list[datetime]) -> set[int]:
    """The periods (by index) whose count may differ from the one before theirs: the first,
    those whose catalog is another, and those with a change in (the previous period's
    start, their end], where counting could see something new. Without one, the same
    spans meet both (a span meets [s, e) when it opens before e and closes after s), the
    same lots grant on both last days (a lot grants on [d, e) when bought before e and
    ending after d), the same plan is in force at both ends, and none changes within
    either period. Found from each change (a few), not each period (dozens)."""
    anew = {0} if starts else set()
    anew.update(k for k in range(1, len(catalogs)) if catalogs[k] is not catalogs[k - 1])
    last = len(starts) - 1
    for change in changes:
        # k with ends[k] >= change and starts[k - 1] < change, i.e. k - 1 < bisect_left
        first = max(1, bisect_left(ends, change))
        anew.update(range(first, min(bisect_left(starts, change), last) + 1))
    return anew


def _changes(view: TenantState, intervals: Intervals, modules: frozenset[str]
             ) -> list[datetime]:
    """The instants, in order and in UTC, where what counting `modules`' extra users reads
    may change: a span of access to one of them opens or closes, a seat lot starts or stops
    granting, the plan changes (R6.1, R6.2, R6.4)."""
    instants = [instant for (module, _), spans in intervals.items() if module in modules
                for span in spans for instant in span if instant is not None]
    instants.extend(as_utc(instant) for lot in view.lots
                    for instant in (lot.bought_at, lot.ends_at) if instant is not None)
    instants.extend(as_utc(change.at) for change in view.plan_changes)
    if view.pending_plan_at is not None:
        instants.append(as_utc(view.pending_plan_at))
    return sorted(instants)


def extra_users_over(view: TenantState, catalog: Catalog, period: Period, intervals: Intervals,
                 only: Collection[str] | None = None,
                 over_period: dict[str, set[str]] | None = None,
                 seats: _Seats | None = None) -> dict[str, ExtraUsers]:
    """`over_period`: the users with access over the whole period, when already known;
    `seats`: the lookups of the periods counted before this one, when there are some."""
    zone = view.zone
    start, end = period.start_instant(zone), period.end_instant(zone)
    if over_period is None:
        over_period = users_with_access(intervals, start, end)
    seats = seats or _Seats(view)
    result: dict[str, ExtraUsers] = {}
    for module_id in seats.billed_modules(catalog,
                                          view.plan_at(end - _INSTANT)):
        if only is not None and module_id not in only:
            continue
        since = _module_since(view, catalog, module_id, start, end)
        users = (over_period if since == start else users_with_access(intervals, since, end)
                 ).get(module_id, set())
        extras = sorted(u for u in users if u != view.admin_user)
        capacity = seats.capacity(catalog, module_id, period)
        result[module_id] = ExtraUsers(max(0, len(extras) - capacity), extras, capacity, since)
    return result


def _module_since(view: TenantState, catalog: Catalog, module: str, start: datetime,
                  end: datetime) -> datetime:
    """From when in [start, end) the plan has included `module` without a break."""
    since = start
    for changed in view.plan_changes_within(start, end):
        before = changed - _INSTANT
        if module not in _plan_modules(view, catalog, before):
            since = changed
    return since


def _plan_modules(view: TenantState, catalog: Catalog, instant: datetime) -> frozenset[str]:
    try:
        return catalog.modules_of_plan(view.plan_at(instant))
    except UnknownCatalogItem:
        return frozenset()
