"""What a billing date puts on an invoice (R9.1, R6.4, R7.2, R9.4): pure functions, no I/O.

The service reads the tenant document and the usage, then calls these; the clock and the
stores never reach this module, so every amount here can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.invoicing.extra_users import extra_users_over
from services.invoicing.licences import licence_line
from services.invoicing.models import Line, LineKind
from shared.billing import support as sb
from shared.billing.periods import Period, local_date
from shared.billing.seats import Intervals, access_intervals
from shared.catalog import Catalog, Pack, UnknownCatalogItem
from shared.coverage import email_allowance, support_contracts
from shared.subscription import Lot, TenantState
from shared.times import as_utc, utc_text

EXTRA_USERS_METER = "extra_users"
EMAILS_METER = "emails_sent"
SUPPORT_METER = "support_minutes"
ALL_METERS = frozenset({EXTRA_USERS_METER, EMAILS_METER, SUPPORT_METER})


# --- in advance: plan and packs (R9.1) ------------------------------------------------------

def _price(prices: Mapping[Any, Decimal], cycle: str) -> Decimal | None:
    return prices.get(cycle)


def advance_lines(view: TenantState, catalog: Catalog, period: Period,
                  access: Intervals | None = None) -> list[Line]:
    """Recurring fees of the period that starts: the plan in force and every pack lot
    active at its first instant (not cancelled, not a free trial, R4.4, R5.3), less what a
    purchase made at that very instant already charged for the whole period. `access`: the
    access intervals known up to the period start, which price the packs sold per licence
    (R4.12); a first period has none to price (nothing was bought before it began)."""
    zone = view.zone
    start = period.start_instant(zone)
    lines: list[Line] = []
    plan_id = _advance_plan(view, catalog, start)
    try:
        plan = catalog.plan(plan_id)
    except UnknownCatalogItem:
        plan = None
    if plan is not None and (price := _price(plan.price, view.cycle)) is not None:
        lines.append(Line.priced(
            module=None, kind="plan", description=f"plan {plan.id} ({view.cycle})",
            quantity=Decimal(1), unit_price=price, currency=view.currency, period=period,
            source={"meter": None, "module": None, "period": period.public(),
                    "item": plan.id, "basis": "plan in force at the period start"}))
    for lot in view.lots:
        if lot.trial or not lot.active_at(start) or lot.kind == "one_time":
            continue
        if lot.bought_at >= start:
            # Bought at the period's first instant (e.g. right after a tenant created at its
            # anchor's local midnight, the clock not having moved): its purchase charged it
            # for the whole period (R4.2, d/d days) on its own immediate invoice (R9.2). The
            # lot is in the document only if the purchase committed before this invoice was
            # composed, so charging it here too would bill it twice, depending on ordering.
            continue
        pack = _pack(catalog, lot.item)
        unit_price = _lot_price(pack, lot, view.cycle)
        if unit_price is None or (pack is not None and not _renews(pack)):
            continue
        if pack is not None and pack.per == "licence":  # R4.12: counted again each renewal
            lines.append(licence_line(view, catalog, period, lot, pack, unit_price, access))
            continue
        quantity = Decimal(lot.quantity)
        lines.append(Line.priced(
            module=pack.module if pack is not None else None, kind="pack",
            description=f"{lot.quantity} × {lot.item}", quantity=quantity,
            unit_price=unit_price, currency=view.currency, period=period,
            source={"meter": None, "module": pack.module if pack is not None else None,
                    "period": period.public(), "item": lot.item, "lot": lot.id,
                    "basis": "lot active at the period start"}))
    return lines


def _advance_plan(view: TenantState, catalog: Catalog, start: datetime) -> str:
    """The plan the period's advance charges: the one in force at its first instant, unless
    an upgrade was bought at that very instant. Its purchase charged the price difference
    for the whole period (R4.2) on its own invoice, so the advance charges the plan it left,
    whatever the order in which the two were composed. A change at `start` to a lower rank is
    a scheduled downgrade taking effect (R4.5): charged nothing, it stays in force."""
    changes = view.plan_changes
    for i, change in enumerate(changes):
        if as_utc(change.at) != start:  # both in UTC: equal even in a repeated hour
            continue
        after = changes[i + 1].previous if i + 1 < len(changes) else view.plan
        if _rank(catalog, after) >= _rank(catalog, change.previous):  # bought (R4.2)
            return change.previous
    return view.plan_at(start)


def _rank(catalog: Catalog, plan_id: str) -> int:
    try:
        return catalog.plan(plan_id).rank
    except UnknownCatalogItem:
        return 0


def _pack(catalog: Catalog, item: str) -> Pack | None:
    try:
        return catalog.pack(item)
    except UnknownCatalogItem:
        return None


def _lot_price(pack: Pack | None, lot: Lot, cycle: str) -> Decimal | None:
    if pack is not None:
        price = _price(pack.price, cycle)
        if price is not None:
            return price
    return lot.unit_price


def _renews(pack: Pack) -> bool:
    # Support plans are one-year contracts of their own (R8.4): entitlements invoices them
    # when bought or renewed (daily plans one month ahead), never with the period's fees.
    return pack.kind != "support"


# --- in arrears: extra users (R6.4), e-mail overage (R7.2), support overage (R8.3) ----------

@dataclass(slots=True)
class PeriodUsage:
    """The usage of one tenant in one period, as read from `usage_events`."""

    emails: int = 0
    # (module, user_id, time, type) of every grant/revoke before the period end.
    access: list[tuple[str, str, datetime, str]] = field(default_factory=list)
    email_query: dict[str, Any] = field(default_factory=dict)
    access_query: dict[str, Any] = field(default_factory=dict)
    # (id, time, minutes, level) of every support session from the first contract's start
    # (or the period start) to the period end (R8).
    support: list[tuple[str, datetime, int, int]] = field(default_factory=list)
    support_query: dict[str, Any] = field(default_factory=dict)
    # The access intervals of `access`, when the caller already has them (late usage
    # recomputes many periods from one read).
    intervals: Intervals | None = None

    def spans(self) -> Intervals:
        if self.intervals is None:
            self.intervals = access_intervals(self.access)
        return self.intervals


def period_email_allowance(view: TenantState, period: Period) -> int:
    """The e-mail lots active at any moment of the period, each in full (R7.1)."""
    start, end = period.start_instant(view.zone), period.end_instant(view.zone)
    return email_allowance(lot for lot in view.lots if lot.active_during(start, end))


def email_module(catalog: Catalog) -> str | None:
    return next((p.module for p in catalog.packs if p.kind == "emails"), None)


def arrears_quantities(view: TenantState, catalog: Catalog, period: Period,
                       usage: PeriodUsage, meters: Collection[str] = ALL_METERS,
                       modules: Collection[str] | None = None
                       ) -> dict[tuple[str, str | None], Decimal]:
    """Billable quantities per (meter, module) of a period, of the `meters` asked for (extra
    users of the `modules` asked for, or all): the basis of arrears lines and of late-usage
    adjustments (R9.4)."""
    quantities: dict[tuple[str, str | None], Decimal] = {}
    if EXTRA_USERS_METER in meters:
        for module, counted in extra_users_over(view, catalog, period, usage.spans(),
                                            modules).items():
            quantities[(EXTRA_USERS_METER, module)] = Decimal(counted.billable)
    if EMAILS_METER in meters and catalog.email_overage_price is not None:
        overage = max(0, usage.emails - period_email_allowance(view, period))
        quantities[(EMAILS_METER, email_module(catalog))] = Decimal(overage)
    if SUPPORT_METER in meters:
        module = support_module(catalog)
        for rate, allocations in support_overage(view, catalog, period,
                                                 usage.support).items():
            minutes = sum(a.overage for a in allocations)
            quantities[(support_meter(rate), module)] = Decimal(minutes) / Decimal(60)
    return quantities


def support_meter(rate: Decimal) -> str:
    """Support overage is billed per hourly rate; the rate is part of what a line measures,
    so a late session's adjustment (R9.4) is priced like the line it corrects."""
    return f"{SUPPORT_METER}@{rate}"


def support_module(catalog: Catalog) -> str:
    return next((p.module for p in catalog.packs if p.kind == "support" and p.module),
                "support")


def unit_price(catalog: Catalog, view: TenantState, meter: str, module: str | None
               ) -> Decimal | None:
    if meter == EXTRA_USERS_METER and module is not None:
        try:
            return _price(catalog.module(module).extra_user_price, view.cycle)
        except UnknownCatalogItem:
            return None
    if meter == EMAILS_METER:
        return catalog.email_overage_price
    if meter.startswith(f"{SUPPORT_METER}@"):
        return Decimal(meter.partition("@")[2])
    return None


def arrears_lines(view: TenantState, catalog: Catalog, period: Period,
                  usage: PeriodUsage) -> list[Line]:
    """Consumption of the period that ended, billed in arrears (R9.1)."""
    lines = _extra_user_lines(view, catalog, period, usage)
    lines.extend(_email_overage_lines(view, catalog, period, usage))
    lines.extend(support_overage_lines(view, catalog, period, usage))
    return lines


def _extra_user_lines(view: TenantState, catalog: Catalog, period: Period,
                      usage: PeriodUsage) -> list[Line]:
    lines: list[Line] = []
    for module, counted in extra_users_over(view, catalog, period, usage.spans()).items():
        billable, extras, capacity = counted.billable, counted.users, counted.capacity
        price = unit_price(catalog, view, EXTRA_USERS_METER, module)
        if billable == 0 or price is None:
            continue
        lines.append(_usage_line(
            view, period, module, "extra_users", EXTRA_USERS_METER, Decimal(billable), price,
            f"{billable} extra user(s) on {module} ({len(extras)} with access, {capacity} "
            "seat(s), administrator excluded)",
            {"meter": "users_with_access", "from": utc_text(counted.since),
             "to": utc_text(period.end_instant(view.zone)), "users": extras,
             "seat_capacity": capacity, "admin_user": view.admin_user,
             "query": usage.access_query}))
    return lines


def _email_overage_lines(view: TenantState, catalog: Catalog, period: Period,
                         usage: PeriodUsage) -> list[Line]:
    price = catalog.email_overage_price
    allowance = period_email_allowance(view, period)
    overage = max(0, usage.emails - allowance)
    if price is None or overage == 0:
        return []
    return [_usage_line(
        view, period, email_module(catalog), "email_overage", EMAILS_METER, Decimal(overage),
        price, f"{overage} e-mail(s) beyond the allowance of {allowance} ({usage.emails} sent)",
        {"meter": EMAILS_METER, "from": utc_text(period.start_instant(view.zone)),
         "to": utc_text(period.end_instant(view.zone)), "sent": usage.emails,
         "allowance": allowance, "query": usage.email_query})]


def _usage_line(view: TenantState, period: Period, module: str | None, kind: LineKind,
                meter: str, quantity: Decimal, price: Decimal, description: str,
                source: dict[str, Any]) -> Line:
    """A line of usage billed in arrears; its provenance names the module and period too."""
    return Line.priced(module=module, kind=kind, description=description, quantity=quantity,
                       unit_price=price, currency=view.currency, period=period, meter=meter,
                       source={**source, "module": module, "period": period.public()})


def support_since(view: TenantState, period: Period) -> date:
    """The first local day whose sessions matter for `period`: banks are used from their
    contract start, and a carried-over bank from its predecessor's (R8.2, R8.4)."""
    first = period.start
    for lot in view.lots:
        start = lot.since or lot.contract_start
        if lot.kind == "support" and start is not None and start < period.end:
            first = min(first, start)
    return first


def support_overage(view: TenantState, catalog: Catalog, period: Period,
                    sessions: Iterable[tuple[str, datetime, int, int]]
                    ) -> dict[Decimal, list[sb.Allocation]]:
    """Sessions of `period` with time beyond the allowances and banks, by hourly rate."""
    zone = view.zone
    contracts = support_contracts(view, catalog)
    parsed = [sb.Session(i, local_date(t, zone), m, lvl, utc_text(t)) for i, t, m, lvl in sessions
              if m > 0]
    allocations, _ = sb.allocate(parsed, contracts.dailies, contracts.banks)
    mine = [a for a in allocations if period.start <= a.session.day < period.end]
    price_of = {a.session.id: contracts.overage_rate(a.session.day, catalog) for a in mine}
    return sb.overage_by_price(mine, price_of, None)


def support_overage_lines(view: TenantState, catalog: Catalog, period: Period,
                          usage: PeriodUsage) -> list[Line]:
    """R8.1–R8.3: support time of the period beyond the daily allowances and the banks,
    in hours (each session rounded up to 15 minutes), × the hourly rate, rounded once;
    provenance: the session ids and how each one's minutes were taken (R9.6)."""
    lines: list[Line] = []
    module = support_module(catalog)
    for rate, allocations in sorted(support_overage(view, catalog, period,
                                                    usage.support).items()):
        minutes = sum(a.overage for a in allocations)
        quantity = Decimal(minutes) / Decimal(60)
        lines.append(_usage_line(
            view, period, module, "support_overage", support_meter(rate), quantity, rate,
            f"support beyond the allowances and banks: {minutes} min ({len(allocations)} "
            f"session(s), each rounded up to 15 min) at {rate}/h",
            {"meter": SUPPORT_METER, "unit": "hour",
             "event_ids": [a.session.id for a in allocations],
             "sessions": [{"id": a.session.id, "day": a.session.day.isoformat(),
                           "level": a.session.level, "minutes": a.session.minutes,
                           "rounded": a.rounded, "daily": a.daily, "banks": a.banks,
                           "billed": a.overage} for a in allocations[:1000]],
             "query": usage.support_query}))
    return lines
