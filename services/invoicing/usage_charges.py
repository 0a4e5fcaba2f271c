"""Usage charges on any meter (R10.1–R10.3): a period's `usage` lines and its
`minimum_commitment` line.

`UsageCharges.read` measures, for all the tenants billed for one period window, every meter
their plans price: one query per meter for the window, never one per tenant, computed as
`GET /v1/usage` computes it. A SEATS meter (`users_with_access`) is counted from the access
history the billing date reads anyway for extra users, so it costs no query.
`usage_lines` (pure) prices what was read with the charge's model (shared.billing.pricing).

Choices made here (docs/invoicing.md):
- the charges billed are those of the plan in force at the period's last instant, as for
  extra users, in the tenant's catalog version of the period (R10.5); so is the minimum;
- a charge's `module` groups its line under that module; the quantity is the tenant's whole
  value of the meter (a plan prices a meter once, so nothing is counted twice);
- a meter the tenant did not use in the period gets no line; one used within its included
  quantity gets a line of 0.00, so the invoice shows what was consumed;
- the minimum compares the period's usage lines, each already rounded, with the plan's
  minimum for the tenant's cycle, even when no usage line was billed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from services.invoicing.models import Line
from services.invoicing.store import InvoiceStore
from shared.billing.money import round_fraction
from shared.billing.periods import Period
from shared.billing.pricing import Pricing, graduated_uses, packages, volume_tier
from shared.billing.seats import Intervals, users_with_access
from shared.catalog import Catalog, Plan, UnknownCatalogItem, UsageCharge, price_for
from shared.catalog_usage import pricing
from shared.catalog_versions import CatalogVersions
from shared.meters import Aggregation, MeterRegistry
from shared.subscription import TenantState
from shared.times import utc_text

# Fractional digits of a line's unit price when it is an average (tiers, packages).
AVERAGE_DIGITS = Decimal("0.000001")
# A usage line's meter column: `usage:api_calls`, apart from the built-in lines' meters
# (`emails_sent` is both a built-in line and a meter a plan may price). Late usage reads the
# quantity billed per period under it (R9.4).
USAGE_METER = "usage:"


@dataclass(slots=True)
class MeterReads:
    """Meter values of one period window: meter -> tenant -> value, and each meter's query."""

    values: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    seats: frozenset[str] = frozenset()  # the SEATS meters, counted from the access history


def plan_in_force(view: TenantState, catalog: Catalog, end: datetime) -> Plan | None:
    """The plan of the period's last instant, whose usage charges the period bills."""
    try:
        return catalog.plan(view.plan_at(end - timedelta(microseconds=1)))
    except UnknownCatalogItem:
        return None


class UsageCharges:
    def __init__(self, store: InvoiceStore, catalogs: CatalogVersions, meters: MeterRegistry
                 ) -> None:
        self.store = store
        self.catalogs = catalogs
        self.meters = meters
        self.priced = catalogs.priced_meters

    async def read(self, views: Sequence[TenantState], start: datetime, end: datetime
                   ) -> MeterReads:
        """Every meter the tenants' plans price over [start, end): one query per meter."""
        reads = MeterReads()
        if not self.priced:
            return reads
        wanted: dict[str, list[str]] = {}
        for view in views:
            plan = plan_in_force(view, self.catalogs.of(view, start), end)
            for charge in plan.usage if plan is not None else ():
                wanted.setdefault(charge.meter, []).append(view.id)
        seats: set[str] = set()
        for slug, tenants in sorted(wanted.items()):
            meter = self.meters.get(slug)
            if meter is None:  # checked at start (check_usage_meters); never billed blind
                continue
            if meter.aggregation is Aggregation.SEATS:
                seats.add(slug)
                continue
            values, query = await self.store.meter_values(meter, sorted(set(tenants)),
                                                          start, end)
            reads.values[slug], reads.queries[slug] = values, query
        reads.seats = frozenset(seats)
        return reads


def usage_lines(view: TenantState, catalog: Catalog, period: Period, reads: MeterReads,
                access: Intervals, access_query: dict[str, Any]) -> list[Line]:
    """The period's usage lines (R10.1, R10.2) and its minimum commitment line (R10.3)."""
    zone = view.zone
    start, end = period.start_instant(zone), period.end_instant(zone)
    plan = plan_in_force(view, catalog, end)
    if plan is None:
        return []
    lines: list[Line] = []
    span = (utc_text(start), utc_text(end))
    for charge in plan.usage:
        terms = pricing(charge, view.cycle)
        if terms is None:
            continue
        if charge.meter in reads.seats:
            per_module = users_with_access(access, start, end)
            quantity = Decimal(len(set().union(*per_module.values())) if per_module else 0)
            query = access_query
        else:
            quantity = reads.values.get(charge.meter, {}).get(view.id, Decimal(0))
            query = _tenant_query(reads.queries.get(charge.meter, {}), view.id)
        if quantity > 0:
            lines.append(_usage_line(view, period, span, charge, terms, quantity, query))
    minimum = price_for(plan.minimum, view.cycle)
    if minimum is not None:
        lines.extend(_minimum_line(view, period, plan, minimum, lines))
    return lines


def _tenant_query(query: dict[str, Any], tenant: str) -> dict[str, Any]:
    if not query:
        return {}
    return {"sql": query["sql"], "params": {**query["params"], "ts": [tenant]}}


def _usage_line(view: TenantState, period: Period, span: tuple[str, str],
                charge: UsageCharge, terms: Pricing, quantity: Decimal, query: dict[str, Any]
                ) -> Line:
    exact = terms.exact(quantity)
    amount = round_fraction(exact, view.currency)  # R3.2: the one rounding
    billable = max(Decimal(0), quantity - terms.included)
    if terms.unit_price is not None:
        unit_price = terms.unit_price
    else:  # the average, for information: the amount is the model's (R10.2)
        unit_price = (amount / quantity).quantize(AVERAGE_DIGITS)
    return Line(
        module=charge.module, kind="usage",
        description=f"{charge.meter}: {quantity:f} used, {terms.included:f} included, "
                    f"{billable:f} billable ({charge.model})",
        quantity=quantity, unit_price=unit_price, amount=amount, period=period,
        meter=USAGE_METER + charge.meter,
        source={"meter": charge.meter, "module": charge.module, "period": period.public(),
                "from": span[0], "to": span[1],
                "quantity": f"{quantity:f}", "included": f"{terms.included:f}",
                "billable": f"{billable:f}", "model": charge.model,
                "priced": _breakdown(terms, billable), "exact": _fraction_text(exact),
                "query": query})


def _breakdown(terms: Pricing, billable: Decimal) -> dict[str, Any]:
    """How the model priced the billable units, for provenance (R9.6)."""
    if terms.model == "graduated":
        return {"tiers": [{"tier": u.index, "units": f"{u.units:f}",
                           "unit_price": f"{u.unit_price:f}", "flat": f"{u.flat:f}"}
                          for u in graduated_uses(billable, terms.tiers)]}
    if terms.model == "volume":
        if billable <= 0:
            return {"tier": None}
        tier = terms.tiers[volume_tier(billable, terms.tiers)]
        return {"tier": volume_tier(billable, terms.tiers), "unit_price": f"{tier.unit_price:f}",
                "flat": f"{tier.flat:f}"}
    if terms.model == "package":
        assert terms.package_size is not None
        assert terms.package_price is not None
        return {"packages": packages(billable, terms.package_size),
                "package_size": f"{terms.package_size:f}",
                "package_price": f"{terms.package_price:f}"}
    return {"unit_price": f"{terms.unit_price:f}"}


def _fraction_text(value: Fraction) -> str:
    """The exact amount before rounding, as a decimal when it is one, else n/d."""
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{decimal:f}" if Fraction(decimal) == value else f"{value}"


def _minimum_line(view: TenantState, period: Period, plan: Plan, minimum: Decimal,
                  usage: list[Line]) -> list[Line]:
    """R10.3: the difference up to the minimum when the usage lines total less."""
    total = sum((line.amount for line in usage), Decimal(0))
    if total >= minimum:
        return []
    difference = minimum - total
    return [Line.priced(
        module=None, kind="minimum_commitment",
        description=f"minimum commitment of plan {plan.id}: {minimum:f} ({total:f} of usage)",
        quantity=Decimal(1), unit_price=difference, currency=view.currency, period=period,
        source={"meter": None, "module": None, "period": period.public(), "plan": plan.id,
                "minimum": f"{minimum:f}", "usage_total": f"{total:f}",
                "usage_lines": [line.source["meter"] for line in usage]})]


# --- late usage (R9.4) -----------------------------------------------------------------------

def usage_adjustment_lines(view: TenantState, catalog: Catalog, period: Period,
                           recomputed: Mapping[str, Decimal],
                           billed: Mapping[tuple[str, str | None], Decimal],
                           late_ids: Mapping[str, list[str]]) -> list[Line]:
    """A billed period's usage charges corrected for late usage (R9.4): per meter whose value
    changed, the amount of the value now (`recomputed`, by meter) minus the amount of the
    quantity billed so far (usage line plus earlier adjustments), each priced by the charge's
    model and rounded once, so the period's lines add up to what it would have been billed
    had nothing been late; then the minimum commitment's top-up, recomputed alike (R10.3).
    Models are not linear: the difference of two amounts, not a quantity times a price."""
    plan = plan_in_force(view, catalog, period.end_instant(view.zone))
    if plan is None:
        return []
    quantities = {meter.removeprefix(USAGE_METER): quantity
                  for (meter, _), quantity in billed.items() if meter.startswith(USAGE_METER)}
    before: list[Decimal] = []
    after: list[Decimal] = []
    lines: list[Line] = []
    for charge in plan.usage:
        terms = pricing(charge, view.cycle)
        if terms is None:
            continue
        old = quantities.get(charge.meter, Decimal(0))
        new = recomputed.get(charge.meter, old)
        before.append(_amount(terms, old, view.currency))
        after.append(_amount(terms, new, view.currency))
        if new != old:
            lines.append(_usage_adjustment(view, period, charge, old, new, after[-1] - before[-1],
                                           late_ids.get(charge.meter, [])))
    minimum = price_for(plan.minimum, view.cycle)
    if minimum is not None and lines:
        topped = max(Decimal(0), minimum - sum(before, Decimal(0)))
        tops = max(Decimal(0), minimum - sum(after, Decimal(0)))
        if tops != topped:
            lines.append(Line.priced(
                module=None, kind="adjustment",
                description=f"late usage: minimum commitment of plan {plan.id} for "
                            f"{period.start} – {period.end} recomputed {tops:f}, billed "
                            f"{topped:f}",
                quantity=Decimal(1), unit_price=tops - topped, currency=view.currency,
                period=period,
                source={"meter": None, "module": None, "period": period.public(),
                        "corrects": "minimum_commitment", "plan": plan.id,
                        "minimum": f"{minimum:f}", "billed": f"{topped:f}",
                        "recomputed": f"{tops:f}"}))
    return lines


def _amount(terms: Pricing, quantity: Decimal, currency: str) -> Decimal:
    """What a usage line bills for `quantity`: nothing when nothing was used (no line)."""
    return terms.amount(quantity, currency) if quantity > 0 else Decimal(0)


def _usage_adjustment(view: TenantState, period: Period, charge: UsageCharge, old: Decimal,
                      new: Decimal, amount: Decimal, late_ids: list[str]) -> Line:
    delta = new - old
    return Line(
        module=charge.module, kind="adjustment",
        description=f"late usage: {charge.meter} for {period.start} – {period.end} "
                    f"recomputed {new:f}, billed {old:f}",
        quantity=delta, unit_price=(amount / delta).quantize(AVERAGE_DIGITS), amount=amount,
        period=period, meter=USAGE_METER + charge.meter,
        source={"meter": charge.meter, "module": charge.module, "period": period.public(),
                "corrects": "usage", "model": charge.model, "billed": f"{old:f}",
                "recomputed": f"{new:f}", "late_event_ids": late_ids[:1000]})
