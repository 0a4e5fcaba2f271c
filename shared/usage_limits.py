"""Metered limits and thresholds (R10.4): which meters are counted live, how one event moves
their counters, how a check reads them back, and which thresholds a figure has reached.

A limit is answered from live counters, so it can only sit on a meter whose value a counter
holds exactly whatever the order and the copies of its events: COUNT (one per event) and SUM
(the event's value) add up, and the claim of each event (metering's dedupe) makes every copy
count once. MAX, LATEST, UNIQUE_COUNT and SEATS need the events themselves; a limit or a
threshold on such a meter stops the start, naming the field.

A SUM meter's values are decimals (up to 9 places, as ClickHouse aggregates them). Valkey
adds integers only, so a value is kept as whole units and billionths in two counters, each
an exact integer; their sum is the figure. Counters are per local day of the tenant, like
e-mails (R7.2): a check adds up the days of the current period.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

from shared import keys
from shared.catalog import CHECKED_NAMES, Catalog, CatalogError, Plan, UsageCharge
from shared.catalog_versions import CatalogVersions, check_versions_meters, for_each_version
from shared.events import UsageEvent
from shared.meters import Aggregation, Meter, MeterRegistry, lookup

LIVE_AGGREGATIONS: Final = frozenset({Aggregation.COUNT, Aggregation.SUM})
NANOS: Final = 10**9
_NANO: Final = Decimal(1).scaleb(-9)

LiveOp = list[str | int]


def check_usage_limits(catalog: Catalog, meters: Mapping[str, Meter]) -> None:
    """A limit or thresholds only on a meter a live counter holds exactly (see above); a
    meter the check answers (`feature=<meter>`) under a name of its own."""
    taken = CHECKED_NAMES | {r.id for r in catalog.resources} | {
        f for p in catalog.plans for f in p.features} | {
        p.feature for p in catalog.packs if p.feature is not None}
    problems: list[tuple[str, str]] = []
    for i, plan in enumerate(catalog.plans):
        for j, charge in enumerate(plan.usage):
            meter = meters.get(charge.meter)
            if meter is None:
                continue
            if meter.aggregation in LIVE_AGGREGATIONS:
                if meter.slug in taken:
                    problems.append((f"plans.{i}.usage.{j}.meter", f"'{meter.slug}' is "
                                     "already a check of its own (feature="
                                     f"{meter.slug}); a priced meter needs a name of its own"))
                continue
            if charge.limit is not None or charge.thresholds:
                name = "limit" if charge.limit is not None else "thresholds"
                problems.append((
                    f"plans.{i}.usage.{j}.{name}",
                    f"meter '{meter.slug}' aggregates {meter.aggregation.value}, which no live "
                    "counter holds exactly; limits and thresholds need a COUNT or SUM meter "
                    "(R10.4)"))
    if problems:
        (field, message), *more = problems
        raise CatalogError(field, message, more=tuple(more))


def check_versions_limits(catalogs: CatalogVersions, meters: Mapping[str, Meter]) -> None:
    """`check_usage_limits` on every catalog version."""
    for_each_version(catalogs, lambda catalog: check_usage_limits(catalog, meters))


class LiveMeters:
    """The priced meters counted live, by the event type that moves them, and the hash their
    events touch (`EntitlementsKeys.meter_touched`). Building it checks the catalog's meters
    and limits against the meters known: a bad one stops the start, naming the field."""

    def __init__(self, catalogs: CatalogVersions, registry: MeterRegistry, touched: str
                 ) -> None:
        self.touched = touched
        known = {m.slug: m for m in registry.all()}
        check_versions_meters(catalogs, set(known))
        check_versions_limits(catalogs, known)
        # Every version's: tenants stay on the version they bought under (R10.5).
        priced = {charge.meter for catalog in catalogs.versions for plan in catalog.plans
                  for charge in plan.usage}
        self.meters: Mapping[str, Meter] = {
            slug: known[slug] for slug in sorted(priced)
            if known[slug].aggregation in LIVE_AGGREGATIONS}
        by_type: dict[str, list[Meter]] = {}
        for meter in self.meters.values():
            by_type.setdefault(meter.event_type, []).append(meter)
        self.by_type: Mapping[str, tuple[Meter, ...]] = {
            kind: tuple(found) for kind, found in by_type.items()}


def event_value(event: UsageEvent, meter: Meter) -> Decimal | None:
    """What one event adds to a live meter; None when it carries no usable value (ClickHouse
    skips such a row in a sum too)."""
    if meter.aggregation is Aggregation.COUNT:
        return Decimal(1)
    assert meter.value_property is not None  # checked when the meter was loaded
    raw = lookup(event.data, meter.value_property)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        return Decimal(str(raw))
    except ArithmeticError:
        return None


def split(value: Decimal) -> tuple[int, int]:
    """(whole units, billionths in [0, 10^9)) of a value cut to 9 places as ClickHouse
    cuts it."""
    nanos = int(value.quantize(_NANO, rounding=ROUND_DOWN).scaleb(9))
    return divmod(nanos, NANOS)


def meter_ops(tenant: str, meter: Meter, day: date, value: Decimal,
              touched: str) -> list[LiveOp]:
    """The counter updates of `value` on a live meter's local `day`, and a touch of the
    (tenant, meter) in `touched`, which tells entitlements to look at its thresholds."""
    units, nanos = split(value)
    ops: list[LiveOp] = [["incr", keys.meter_key(tenant, meter.slug, day), units]]
    if nanos:
        ops.append(["incr", keys.meter_nanos_key(tenant, meter.slug, day), nanos])
    ops.append(["touch", touched, touched_member(tenant, meter.slug)])
    return ops


def touched_member(tenant: str, meter: str) -> str:
    # A unit separator: neither a tenant id nor a meter slug can hold it.
    return f"{tenant}\x1f{meter}"


def touched_parts(member: str) -> tuple[str, str]:
    tenant, _, meter = member.partition("\x1f")
    return tenant, meter


def meter_reads(tenant: str, meter: str, days: Sequence[date]) -> list[tuple[str, ...]]:
    """The reads of a live meter over `days`: its units, then its billionths."""
    if not days:
        return []
    return [("MGET", *(keys.meter_key(tenant, meter, d) for d in days)),
            ("MGET", *(keys.meter_nanos_key(tenant, meter, d) for d in days))]


def meter_used(values: Sequence[Any]) -> Decimal:
    """The figure `meter_reads` read back."""
    if not values:
        return Decimal(0)
    units = sum(int(v) for v in values[0] if v is not None)
    nanos = sum(int(v) for v in values[1] if v is not None)
    return Decimal(units) + Decimal(nanos).scaleb(-9)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A threshold of a charge: `fraction` of the limit or of the included quantity (`of`),
    reached at `level` units."""

    fraction: Decimal
    of: str
    level: Decimal


def thresholds(charge: UsageCharge) -> list[Threshold]:
    base, of = ((charge.limit.per_period, "limit") if charge.limit is not None
                else (charge.included, "included"))
    return [Threshold(f, of, f * base) for f in charge.thresholds]


def reached(charge: UsageCharge, used: Decimal) -> list[Threshold]:
    return [t for t in thresholds(charge) if used >= t.level]


class MeteredLimits:
    """The checks' view of usage charges: a plan's charge on a meter, and the plan that
    would lift a hard limit."""

    def __init__(self, catalog: Catalog, live: Mapping[str, Meter]) -> None:
        self._plans = {p.id: p for p in catalog.plans}
        self.meters = frozenset(live)

    def charge(self, plan_id: str, meter: str) -> UsageCharge | None:
        plan = self._plans.get(plan_id)
        return None if plan is None else charge_on(plan, meter)

    def raise_with(self, plan_id: str, cycle: str, meter: str, wanted: Decimal) -> str | None:
        """The lowest-ranked higher plan sold in `cycle` that allows `wanted` (no hard limit
        below it), else None. No pack raises a usage limit today."""
        plan = self._plans[plan_id]
        for candidate in sorted(self._plans.values(), key=lambda p: p.rank):
            if candidate.rank <= plan.rank or cycle not in candidate.price:
                continue
            charge = charge_on(candidate, meter)
            if charge is None or charge.limit is None or charge.limit.mode == "soft" \
                    or charge.limit.per_period >= wanted:
                return candidate.id
        return None


def charge_on(plan: Plan, meter: str) -> UsageCharge | None:
    return next((c for c in plan.usage if c.meter == meter), None)
