"""Late usage (R9.4): usage stored after the invoice of its period was composed is billed as
adjustment lines naming the period they correct, however old that period:
(the quantity recomputed for the period − the quantity billed for it) × unit price.

Which periods a late event can change depends on its meter: an e-mail only its own period;
an access grant or revocation every billed period from then on (access carries over); a
support session every billed period from then on (it drew on a bank later sessions drew on
too, R8.2); an event of a meter a usage charge prices (R10.1) only its own period, whose
usage lines and minimum commitment are recomputed (usage_charges.usage_adjustment_lines).

The cost does not grow with the number of periods corrected times the usage read: for all the
tenants of a run, the late events, the quantities already billed (of the meters and modules
touched only), the access history (unless the billing run's arrears already read it) and the
support sessions are each read once, and every affected period is recomputed from them in
memory; only e-mails and priced meters, which change one period each, are read per distinct
period window. A tenant's extra users are counted for all its affected periods at once
(`extra_users.billable_by_period`: anew only where something the count reads changed), and
its lines priced by one `adjustments.Adjuster` (a line worked out once); a period alike the
one before it joins that period's runs of lines (`_Alike`, `models.LineRun`), so an old
access grant makes one run of dozens of periods, not dozens of lines.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.invoicing import compose, schedule
from services.invoicing.adjustments import MAX_IDS_PER_LINE, Adjuster, Quantities
from services.invoicing.extra_users import billable_by_period
from services.invoicing.models import Line, LineRun
from services.invoicing.store import InvoiceStore, LateEvent
from services.invoicing.usage_charges import (
    USAGE_METER,
    plan_in_force,
    usage_adjustment_lines,
)
from shared import events as ev
from shared.billing.periods import Period, local_date, midnight_utc
from shared.billing.seats import Intervals, access_intervals
from shared.catalog import Catalog
from shared.catalog_versions import CatalogVersions
from shared.meters import Aggregation, Meter, MeterRegistry
from shared.subscription import TenantState
from shared.times import from_micros

# Meter ("extra_users:{module}" for access) -> period -> late event ids.
Touched = dict[str, dict[Period, list[str]]]


@dataclass(frozen=True, slots=True)
class LateWork:
    """A tenant whose periods up to `before` (a billing date) are invoiced, and the instant
    (µs, ClickHouse time) up to which its last invoice read usage."""

    view: TenantState
    before: date
    cutoff_us: int


# (tenant, period start, period end) -> (meter, module) -> quantity billed so far
Billed = dict[tuple[str, date, date], dict[tuple[str, str | None], Decimal]]


@dataclass(slots=True)
class LateLines:
    """A tenant's adjustment lines: those of usage charges, one per period (`lines`), and the
    corrections of the built-in meters, each dated over the periods it corrects alike
    (`runs`)."""

    lines: list[Line]
    runs: list[LineRun]


@dataclass(slots=True)
class LateReads:
    """What recomputing a run's corrected periods reads, for all its tenants, but the
    quantities billed (`Billed`)."""

    intervals: Mapping[str, Intervals]
    sessions: dict[str, list[tuple[str, datetime, int, int]]]
    emails: dict[tuple[str, Period], int]
    # (tenant, period) -> priced meter -> its value over the period now (R10.1)
    metered: dict[tuple[str, Period], dict[str, Decimal]]


class LateUsage:
    def __init__(self, store: InvoiceStore, catalogs: CatalogVersions, meters: MeterRegistry
                 ) -> None:
        self.store = store
        self.catalogs = catalogs
        # The priced meters a late event may change, by event type, of every version (SEATS
        # ones are counted from the access history: not corrected here).
        self.priced: dict[str, list[Meter]] = defaultdict(list)
        for slug in sorted({c.meter for catalog in catalogs.versions for plan in catalog.plans
                            for c in plan.usage}):
            meter = meters.get(slug)
            if meter is not None and meter.aggregation is not Aggregation.SEATS:
                self.priced[meter.event_type].append(meter)

    async def adjustments(self, work: Sequence[LateWork],
                          intervals: Mapping[str, Intervals] | None = None
                          ) -> dict[str, LateLines]:
        """Per tenant, the adjustment lines of its late usage (none: no entry). `intervals`:
        the tenants' access spans from their rows up to their billing dates or later, when
        the caller has read them (rows after a period change none of its counts): not read
        again."""
        touched = await self._touched(work)
        if not touched:
            return {}
        views = {w.view.id: w.view for w in work if w.view.id in touched}
        bounds = {t: _bounds(meters) for t, meters in touched.items()}
        # The quantities billed are read while everything else is counted: ClickHouse
        # works on its own thread, and only the lines need them.
        async with asyncio.TaskGroup() as group:
            billed = group.create_task(self._billed(
                views, touched, min(start for start, _ in bounds.values())))
            reads = await self._read(views, touched, bounds, intervals)
            await asyncio.sleep(0)  # the read is under way before counting holds the loop
            counted = {tenant: count_periods(self.catalogs, views[tenant], meters, reads)
                       for tenant, meters in touched.items()}
        quantities = billed.result()
        found = {tenant: correction_lines(views[tenant], counts, reads, quantities)
                 for tenant, counts in counted.items()}
        return {tenant: late for tenant, late in found.items() if late.lines or late.runs}

    async def _touched(self, work: Sequence[LateWork]) -> dict[str, Touched]:
        """Per tenant, the billed periods each meter's late events may change."""
        if not work:
            return {}
        since = from_micros(min(w.cutoff_us for w in work))
        until = max(schedule.billing_instant(w.view, w.before) for w in work)
        rows = await self.store.late_events([w.view.id for w in work], since, until,
                                            sorted(self.priced))
        by_tenant = {w.view.id: w for w in work}
        touched: dict[str, Touched] = {}
        for row in rows:
            item = by_tenant[row.tenant]
            view = item.view
            if row.stored_at <= from_micros(item.cutoff_us) \
                    or not schedule.billing_instant(view, view.anchor) <= row.time \
                    < schedule.billing_instant(view, item.before):
                continue  # seen by the last invoice, or in no billed period
            periods = schedule.periods_between(view, local_date(row.time, view.zone),
                                               item.before)
            for meter, changed in self._changes(row, view, periods):
                by_period = touched.setdefault(row.tenant, {}).setdefault(meter, {})
                for period in changed:
                    by_period.setdefault(period, []).append(row.id)
        return touched

    def _changes(self, row: LateEvent, view: TenantState, periods: list[Period]
                 ) -> list[tuple[str, list[Period]]]:
        """The meters a late event changes, each with the billed periods it changes."""
        changes: list[tuple[str, list[Period]]] = []
        if row.type in BUILT_IN_TYPES:
            meter = _meter_of(row)
            changes.append((meter, periods[:1] if meter == compose.EMAILS_METER else periods))
        if periods and row.type in self.priced:
            own = periods[0]
            catalog = self.catalogs.of(view, own.start_instant(view.zone))  # R10.5
            plan = plan_in_force(view, catalog, own.end_instant(view.zone))
            priced = {c.meter for c in plan.usage} if plan is not None else set()
            changes.extend((USAGE_METER + m.slug, [own]) for m in self.priced[row.type]
                           if m.slug in priced)
        return changes

    async def _billed(self, views: dict[str, TenantState], touched: dict[str, Touched],
                      first: date) -> Billed:
        """The quantities billed so far for the periods and meters late events touched, of
        the periods from the day `first`."""
        names = {meter for meters in touched.values() for meter in meters}
        return await self.store.billed_quantities_since(
            sorted(views), first,
            sorted(m for m in names if not m.startswith(compose.EXTRA_USERS_METER)),
            sorted(_pair(m) for m in names if m.startswith(compose.EXTRA_USERS_METER)))

    async def _read(self, views: dict[str, TenantState], touched: dict[str, Touched],
                    bounds: Mapping[str, tuple[date, date]],
                    intervals: Mapping[str, Intervals] | None) -> LateReads:
        """Everything the affected periods (`bounds`: each tenant's first day and last end)
        need but the quantities billed, in a few queries for all tenants."""
        end = max(midnight_utc(last, views[t].zone) for t, (_, last) in bounds.items())
        with_access = sorted(t for t, m in touched.items()
                             if any(x.startswith(compose.EXTRA_USERS_METER) for x in m))
        if intervals is None:
            access = await self.store.access(with_access, end) if with_access else {}
            intervals = {t: access_intervals(access.get(t, [])) for t in with_access}
        with_support = sorted(t for t, m in touched.items() if compose.SUPPORT_METER in m)
        sessions = {}
        if with_support:
            start = min(schedule.billing_instant(views[t], compose.support_since(views[t], p))
                        for t in with_support for ps in touched[t].values() for p in ps)
            sessions = await self.store.support_sessions(with_support, start, end)
        return LateReads(intervals, sessions, await self._emails(views, touched),
                         await self._metered(views, touched))

    async def _metered(self, views: dict[str, TenantState], touched: dict[str, Touched]
                       ) -> dict[tuple[str, Period], dict[str, Decimal]]:
        """Each touched priced meter's value over each period it changed: one query per
        meter and period window, for all its tenants."""
        meters = {m.slug: m for found in self.priced.values() for m in found}
        windows: dict[tuple[str, datetime, datetime], list[tuple[str, Period]]] = \
            defaultdict(list)
        for tenant, names in touched.items():
            zone = views[tenant].zone
            for name, periods in names.items():
                if name.startswith(USAGE_METER):
                    for period in periods:
                        windows[(name.removeprefix(USAGE_METER), period.start_instant(zone),
                                 period.end_instant(zone))].append((tenant, period))
        values: dict[tuple[str, Period], dict[str, Decimal]] = defaultdict(dict)
        for (slug, start, end), members in windows.items():
            found, _ = await self.store.meter_values(meters[slug], [t for t, _ in members],
                                                     start, end)
            for tenant, period in members:
                values[(tenant, period)][slug] = found.get(tenant, Decimal(0))
        return values

    async def _emails(self, views: dict[str, TenantState], touched: dict[str, Touched]
                      ) -> dict[tuple[str, Period], int]:
        windows: dict[tuple[datetime, datetime], list[tuple[str, Period]]] = defaultdict(list)
        for tenant, meters in touched.items():
            zone = views[tenant].zone
            for period in meters.get(compose.EMAILS_METER, {}):
                windows[(period.start_instant(zone), period.end_instant(zone))].append(
                    (tenant, period))
        counted: dict[tuple[str, Period], int] = {}
        for (start, end), members in windows.items():
            sent = await self.store.emails([t for t, _ in members], start, end)
            counted.update({(t, p): sent.get(t, 0) for t, p in members})
        return counted


@dataclass(frozen=True, slots=True)
class Counted:
    """A tenant's corrected periods, in order, each with the late events touching it (meter
    → ids), its catalog version and its extra users billable."""

    touched: list[tuple[Period, dict[str, list[str]]]]
    catalogs: list[Catalog]
    # Per period, per module: a period counted as the one before it shares its dict.
    users: list[dict[str, int]]


def count_periods(versions: CatalogVersions, view: TenantState, meters: Touched,
                  reads: LateReads) -> Counted:
    """A tenant's corrected periods, in order, each with the late events that touch it,
    its catalog version (R10.5) and its extra users (R6.4): all but the quantities billed."""
    # Per period, the meters its late events changed, with those events' ids (R9.6).
    if len(meters) == 1:  # most often: one kind of late event
        ((meter, changed),) = meters.items()
        by_period = {period: {meter: ids} for period, ids in changed.items()}
    else:
        by_period = defaultdict(dict)
        for meter, changed in meters.items():
            for period, ids in changed.items():
                by_period[period][meter] = ids
    touched = sorted(by_period.items(), key=_starting)
    periods = [period for period, _ in touched]
    # R10.5: corrected at the prices the period was billed at, before any migration
    catalogs = versions.of_periods(view, periods)
    return Counted(touched, catalogs, _extra_users(view, meters, periods, catalogs, reads))


def correction_lines(view: TenantState, counted: Counted, reads: LateReads,
                     billed: Billed) -> LateLines:
    """A tenant's adjustment lines (R9.4): each corrected period's recomputed quantities
    against those `billed` for it, priced by its catalog; a period alike the one before
    is added to that period's runs (`_Alike`)."""
    tenant = view.id
    adjuster = Adjuster(view)
    found = LateLines([], [])
    alike = _Alike()
    for (period, names), catalog, users in zip(counted.touched, counted.catalogs,
                                               counted.users, strict=True):
        billed_so_far = billed.get((tenant, period.start, period.end), {})
        if alike.same(catalog, names, billed_so_far, users):
            for run in alike.runs:
                run.periods.append(period)
            continue
        if reads.metered and (metered := reads.metered.get((tenant, period))):
            found.lines.extend(usage_adjustment_lines(
                view, catalog, period, metered, billed_so_far,
                {m.removeprefix(USAGE_METER): ids[:MAX_IDS_PER_LINE]
                 for m, ids in names.items() if m.startswith(USAGE_METER)}))
            names = {m: ids for m, ids in names.items() if not m.startswith(USAGE_METER)}
        corrections = adjuster.corrections(
            catalog, _recomputed(view, catalog, period, names, users, reads),
            {key: q for key, q in billed_so_far.items() if _touches(key, names)},
            _ids_by_kind(names)) if names else []
        runs = [LineRun(correction, source, [period]) for correction, source in corrections]
        alike.remember(catalog, names, billed_so_far, users, runs)
        found.runs.extend(runs)
    return found


class _Alike:
    """The last period corrected from extra users alone, to know the next one alike: by the
    same catalog, the same late events, the same quantities billed and the same extra users
    billable, its corrections are the same. An old access grant changes dozens of periods
    so: each only joins the runs of the one before. Any other meter is recomputed per
    period."""

    def __init__(self) -> None:
        self.key: tuple[Catalog, dict[str, list[str]], Quantities, dict[str, int]] | None \
            = None
        self.runs: list[LineRun] = []

    def same(self, catalog: Catalog, names: dict[str, list[str]], billed: Quantities,
             users: dict[str, int]) -> bool:
        if self.key is None:
            return False
        last_catalog, last_names, last_billed, last_users = self.key
        # Counts and quantities alike are most often the very same dicts (shared).
        return catalog is last_catalog and (users is last_users or users == last_users) \
            and (billed is last_billed or billed == last_billed) and names == last_names

    def remember(self, catalog: Catalog, names: dict[str, list[str]], billed: Quantities,
                 users: dict[str, int], runs: list[LineRun]) -> None:
        only_users = bool(names) and all(m.startswith(compose.EXTRA_USERS_METER)
                                         for m in names)
        self.key = (catalog, names, billed, users) if only_users else None
        self.runs = runs


def _ids_by_kind(names: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The late event ids of a period's meters, per meter before any ':module' (the
    adjustment keeps the first MAX_IDS_PER_LINE of each)."""
    if len(names) == 1:
        ((meter, ids),) = names.items()
        return {meter.partition(":")[0]: ids}
    by_kind: dict[str, list[str]] = defaultdict(list)
    for meter, ids in names.items():
        by_kind[meter.partition(":")[0]].extend(ids[:MAX_IDS_PER_LINE])
    return by_kind


def _recomputed(view: TenantState, catalog: Catalog, period: Period, names: Collection[str],
                users: dict[str, int], reads: LateReads
                ) -> dict[tuple[str, str | None], Decimal]:
    """The quantities of the built-in meters `names` recomputed for `period`; the extra
    users of its touched modules are already counted (`users`)."""
    recomputed: dict[tuple[str, str | None], Decimal] = {}
    others: set[str] = set()
    for meter in names:
        name, _, module = meter.partition(":")  # extra users are counted per module
        if name != compose.EXTRA_USERS_METER:
            others.add(meter)
        elif (billable := users.get(module)) is not None:
            recomputed[(name, module)] = Decimal(billable)
    if others:
        usage = compose.PeriodUsage(emails=reads.emails.get((view.id, period), 0),
                                    support=reads.sessions.get(view.id, []))
        recomputed.update(compose.arrears_quantities(view, catalog, period, usage, others))
    return recomputed


def _extra_users(view: TenantState, meters: Touched, periods: list[Period],
                 catalogs: list[Catalog], reads: LateReads) -> list[dict[str, int]]:
    """Per period of `periods`, the extra users billable on the modules late access events
    touched (none for a period they did not touch), all periods counted in one pass (R6.4)."""
    modules = {meter.partition(":")[2] for meter in meters
               if meter.startswith(compose.EXTRA_USERS_METER)}
    if not modules:  # nothing counted: no period is alike another by its extra users
        return [{} for _ in periods]
    return billable_by_period(view, catalogs, periods, reads.intervals.get(view.id, {}),
                              modules)


def _starting(item: tuple[Period, Any]) -> date:
    return item[0].start


def _bounds(meters: Touched) -> tuple[date, date]:
    """The first day and the end (excluded) of the periods a tenant's late events change."""
    periods = [p for changed in meters.values() for p in changed]
    return min(p.start for p in periods), max(p.end for p in periods)


def _pair(meter: str) -> tuple[str, str]:
    """`extra_users:crm` → ('extra_users', 'crm'): extra users are billed per module."""
    name, _, module = meter.partition(":")
    return name, module


def _touches(key: tuple[str, str | None], names: Collection[str]) -> bool:
    """Is the billed quantity of (meter, module) one the late events may change? Support
    meters carry their rate after '@'; extra users are per module."""
    meter, module = key
    if meter == compose.EXTRA_USERS_METER:
        return f"{meter}:{module}" in names
    return meter.partition("@")[0] in names


# The built-in usage a late event may change (the arrears lines of compose.py).
BUILT_IN_TYPES = frozenset({ev.EMAIL_SENT, ev.USER_ACCESS_GRANTED, ev.USER_ACCESS_REVOKED,
                            ev.SUPPORT_SESSION_COMPLETED})


def _meter_of(event: LateEvent) -> str:
    """The meter a late event changes; extra users are counted per module, so an access
    event's meter names its module (`extra_users:crm`): only that module is recomputed."""
    if event.type == ev.EMAIL_SENT:
        return compose.EMAILS_METER
    if event.type == ev.SUPPORT_SESSION_COMPLETED:
        return compose.SUPPORT_METER
    return f"{compose.EXTRA_USERS_METER}:{event.module}"  # access granted or revoked
