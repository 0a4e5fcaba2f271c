"""Support plans in entitlements (R8.2–R8.5): contracts, renewals, lifecycle, checks.

Pure functions of (document, catalog, dates); the service wires them into `_mutate`,
`advance` and the checks. A support lot is a one-year contract [contract_start,
contract_end) in the tenant's local days, charged in full when bought (its own year, not the
subscription's cycle: support plans are priced per year only, R8.4).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from services.entitlements import support_renewals as ren
from services.entitlements.models import Charge, PeriodOut
from shared.billing import support as sb
from shared.billing.money import line_amount
from shared.billing.periods import add_months, add_years, local_midnight
from shared.catalog import Catalog, Pack, SupportTerms
from shared.coverage import support_contracts, support_terms
from shared.errors import Conflict, ValidationFailed
from shared.subscription import Actor, Lot, TenantState

Record = Callable[[str, datetime, dict[str, Any]], str]


def annual_price(pack: Pack, cycle: str) -> Decimal:
    """A contract year's price, for the tenant's cycle: support plans are priced for annual
    cycles only, so a monthly tenant cannot buy one (422 naming the cycle, docs/api.md)."""
    for key, price in pack.price.items():
        if key == cycle:
            return price
    raise ValidationFailed(f"item: '{pack.id}' has no price for the cycle {cycle}",
                           field="item", code="no_price_for_cycle")


def contracts(state: TenantState, item: str) -> list[Lot]:
    lots = [lot for lot in state.lots if lot.item == item and lot.contract_end is not None]
    lots.sort(key=lambda lot: (lot.contract_end or date.min, lot.bought_at))
    return lots


@dataclass(frozen=True, slots=True)
class SupportPurchase:
    lot: Lot
    charge: Charge
    next_cycle: Decimal | None


@dataclass(frozen=True, slots=True)
class _Terms:
    """What a contract bought or renewed now covers and costs."""

    users: int
    start: date
    end: date
    amount: Decimal
    renews: str | None
    carry_over: bool
    kind: str
    description: str
    charged_from: date


def new_contract(state: TenantState, pack: Pack, action: str, quantity: int | None,
                 today: date, now: datetime, zone: ZoneInfo, actor: Actor) -> SupportPurchase:
    """`buy` (R8.2: one contract of each plan per contract year) or `renew` (R8.4)."""
    terms = pack.support
    assert terms is not None
    price = annual_price(pack, state.cycle)
    if action == "renew":
        bought = _renewal(state, pack, terms, price, quantity, today)
    else:
        bought = _first_contract(state, pack, price, quantity, today)
    lot = Lot(id=f"lot-{secrets.token_hex(8)}", item=pack.id, kind="support",
              quantity=bought.users, units=pack.units, state="active", bought_at=now,
              ends_at=None if terms.auto_renew else local_midnight(bought.end, zone),
              unit_price=price, actor=actor, contract_start=bought.start,
              contract_end=bought.end, renews=bought.renews, carry_over=bought.carry_over,
              since=bought.start, auto_renew=terms.auto_renew,
              renewal_discount=terms.renewal_discount)
    users, amount = bought.users, bought.amount
    charge = Charge(kind=bought.kind, item=pack.id, quantity=users,
                    unit_price=amount / users if users else amount,
                    description=bought.description, amount=amount,
                    period=PeriodOut.model_validate({"from": bought.charged_from,
                                                     "to": bought.end}))
    next_cycle = sb.renewal_terms(price * users, bought.end, bought.start, state.currency,
                                  terms.renewal_discount).amount
    return SupportPurchase(lot, charge, next_cycle)


def _first_contract(state: TenantState, pack: Pack, price: Decimal, quantity: int | None,
                    today: date) -> _Terms:
    for lot in contracts(state, pack.id):
        if lot.live and lot.contract_end is not None and lot.contract_end > today:
            raise Conflict(
                f"one '{pack.id}' plan per contract year: lot {lot.id} runs until "
                f"{lot.contract_end}; renew it instead (R8.2)", field="item",
                code="support_plan_per_year")
    users = quantity if quantity is not None else 1
    start, end = today, add_years(today)
    return _Terms(users, start, end, line_amount(Decimal(users), price, state.currency), None,
                  False, "support_contract",
                  f"{users} × {pack.id} contract {start} – {end} (R8.2, R8.3)", start)


def _renewal(state: TenantState, pack: Pack, terms: SupportTerms, price: Decimal,
             quantity: int | None, today: date) -> _Terms:
    existing = contracts(state, pack.id)
    if not existing:
        raise Conflict(f"no '{pack.id}' contract to renew; buy it (R8.4)", field="item",
                       code="nothing_to_renew")
    previous = existing[-1]
    assert previous.contract_end is not None
    if any(lot.renews == previous.id for lot in state.lots):
        raise Conflict(f"contract {previous.id} is already renewed (R8.4)", field="item",
                       code="already_renewed")
    if terms.auto_renew and previous.state == "active" and previous.contract_end > today:
        raise Conflict(f"'{pack.id}' renews automatically on {previous.contract_end}; "
                       "nothing to do (R8.4)", field="item", code="renews_automatically")
    users = quantity if quantity is not None else previous.quantity
    renewal = sb.renewal_terms(price * users, previous.contract_end, today, state.currency,
                               terms.renewal_discount, terms.late_renewal_grace_days)
    late_days = (today - previous.contract_end).days
    text = {"on_time": f"on time: −{terms.renewal_discount * 100:.0f} %, unused time "
                       "carried over",
            "late": f"{late_days} day(s) late: prorated {(renewal.end - today).days}/"
                    f"{(renewal.end - renewal.start).days} days at full rate",
            "new": f"{late_days} days late: a new one-year contract at full rate"
            }[renewal.kind]
    return _Terms(
        users, renewal.start, renewal.end, renewal.amount,
        previous.id if renewal.kind != "new" else None,
        renewal.carry_over and terms.type == "bank",
        "support_renewal" if renewal.kind != "new" else "support_contract",
        f"{users} × {pack.id} renewal {renewal.start} – {renewal.end} ({text}) (R8.4)",
        today if renewal.kind == "late" else renewal.start)


# --- lifecycle (R8.4) ----------------------------------------------------------------------


def due_instants(state: TenantState, zone: ZoneInfo) -> list[datetime]:
    """Support steps that fall due by themselves: a bank contract's end (`ends_at`, active
    lots), a daily plan's renewal invoice (one month before its end) and its roll-over,
    a bank contract's renewal notices (R8.6)."""
    instants = ren.notice_instants(state, zone)
    for lot in state.lots:
        if lot.kind != "support" or lot.state != "active":
            continue
        if lot.ends_at is not None:
            instants.append(lot.ends_at)
            continue
        if not lot.auto_renew or lot.contract_end is None:
            continue
        if lot.renewal_invoiced == lot.contract_end:
            instants.append(local_midnight(lot.contract_end, zone))
        else:
            instants.append(local_midnight(add_months(lot.contract_end, -1), zone))
    return instants


def advance_support(state: TenantState, zone: ZoneInfo, due: datetime, record: Record
                    ) -> None:
    """Apply the support steps due at `due` (R8.4): contracts end, daily plans are invoiced
    one month before their renewal date (10 % off: renewed before expiry) and roll over;
    bank contracts announce their renewal first (R8.6: notices fall before the end)."""
    ren.send_notices(state, zone, due, record)
    for lot in state.lots:
        if lot.kind != "support" or lot.state != "active":
            continue
        if lot.ends_at is not None:
            if lot.ends_at <= due:
                lot.state = "expired"
                record("lot.expired", lot.ends_at, {"lot": lot.id, "item": lot.item,
                                                    "quantity": lot.quantity,
                                                    "reason": "contract_ended"})
            continue
        if not lot.auto_renew or lot.contract_end is None or lot.unit_price is None:
            continue
        end = lot.contract_end
        discount = lot.renewal_discount if lot.renewal_discount is not None \
            else Decimal("0.10")
        if lot.renewal_invoiced != end and local_midnight(add_months(end, -1), zone) <= due:
            renewal = sb.renewal_terms(lot.unit_price * lot.quantity, end, add_months(end, -1),
                                       state.currency, discount)
            at = local_midnight(add_months(end, -1), zone)
            charge = Charge(
                kind="support_renewal", item=lot.item, quantity=lot.quantity,
                unit_price=renewal.amount / lot.quantity, amount=renewal.amount,
                description=f"{lot.quantity} × {lot.item} automatic renewal {end} – "
                            f"{renewal.end}, invoiced one month ahead, −"
                            f"{discount * 100:.0f} % (R8.4)",
                period=PeriodOut.model_validate({"from": end, "to": renewal.end}))
            lot.renewal_invoiced = end
            # Kept so that declining this renewal names the invoice to credit (R8.6).
            lot.renewal_event = record("purchase.confirmed", at, {
                "item": lot.item, "kind": "support", "quantity": lot.quantity, "lot": lot.id,
                "currency": state.currency, "renewal": "automatic",
                "charges": [charge.model_dump(mode="json", by_alias=True)],
                "next_cycle_amount": format(renewal.amount, "f"),
                "period": {"from": end.isoformat(), "to": renewal.end.isoformat()}})
        if lot.renewal_invoiced == end and local_midnight(end, zone) <= due:
            lot.contract_start, lot.contract_end = end, add_years(end)
            record("support.renewed", local_midnight(end, zone), {
                "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                "contract": {"from": end.isoformat(),
                             "to": lot.contract_end.isoformat()}})


def cancel_end(lot: Lot, zone: ZoneInfo) -> datetime:
    """A support contract declined (cancelled) ends at its contract end, not the
    subscription's period end, even once its renewal is invoiced: that invoice is then
    credited (R8.6, `support_renewals.declined_renewal`)."""
    assert lot.contract_end is not None
    return local_midnight(lot.contract_end, zone)


# --- checks (R8.2, R8.3) ---------------------------------------------------------------


def active_contracts(state: TenantState, catalog: Catalog, day: date
                     ) -> list[tuple[Lot, SupportTerms]]:
    found = []
    for lot in state.lots:
        if lot.kind != "support" or not lot.live or lot.contract_start is None \
                or lot.contract_end is None:
            continue
        terms = support_terms(catalog, lot.item)
        if terms is not None and lot.contract_start <= day < lot.contract_end:
            found.append((lot, terms))
    return found


def check_days(state: TenantState, catalog: Catalog, today: date) -> list[date]:
    """The local days whose minutes a support check reads: each active bank contract's days
    so far (its use), today (the daily allowance), and a carried-over predecessor's."""
    first = today
    for lot, terms in active_contracts(state, catalog, today):
        if terms.type == "bank" and lot.contract_start is not None:
            first = min(first, lot.contract_start)
            if lot.renews is not None:
                previous = next((x for x in state.lots if x.id == lot.renews), None)
                if previous is not None and previous.contract_start is not None:
                    first = min(first, previous.contract_start)
    return [first + timedelta(days=i) for i in range((today - first).days + 1)]


# --- the check's decision (pure) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupportView:
    """What a support check knows: today's allowance and every active bank, in minutes."""

    daily: tuple[str, int, int] | None  # (lot, allowance today, used today)
    banks: list[dict[str, Any]]
    rate: Decimal | None


def support_view(state: TenantState, catalog: Catalog, zone: ZoneInfo, today: date,
                 minutes: Mapping[date, tuple[int, int]]) -> SupportView:
    """From metering's per-day counters: minutes of levels 1-2 and of level 3, each session
    already rounded up (R8.1). A day's sessions of one level group are allocated together,
    levels 1-2 first; the invoice allocates session by session, in time order, which differs
    only in which of one day's sessions a bank running dry leaves to overage."""
    contracts = support_contracts(state, catalog)
    dailies, banks = contracts.dailies, contracts.banks
    sessions = [sb.Session(f"day-{d.isoformat()}-{level}", d, m, level, order=str(level))
                for d, pair in sorted(minutes.items())
                for level, m in ((1, pair[0]), (3, pair[1])) if m > 0]
    allocations, left = sb.allocate(sessions, dailies, banks)
    daily = next((x for x in dailies if x.start <= today < x.end), None)
    daily_view = None
    if daily is not None:
        used = minutes.get(today, (0, 0))[0]
        daily_view = (daily.key, daily.minutes_per_day, used)
    active = {lot.id: (lot, terms) for lot, terms in active_contracts(state, catalog, today)}
    bank_views = []
    for bank in sorted(banks, key=lambda b: (b.covers_level_3, b.end, b.key)):
        if bank.key not in active:
            continue
        lot, _ = active[bank.key]
        limit = sum(a.banks.get(bank.key, 0) for a in allocations) + left[bank.key]
        used = sum(a.banks.get(bank.key, 0) for a in allocations)
        bank_views.append({"lot": lot.id, "item": lot.item, "limit": limit, "used": used,
                           "remaining": left[bank.key], "covers_level_3": bank.covers_level_3,
                           "contract": {"from": bank.start.isoformat(),
                                        "to": bank.end.isoformat()}})
    return SupportView(daily_view, bank_views, contracts.overage_rate(today, catalog))
