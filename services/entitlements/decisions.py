"""Pure check logic: no I/O, no clock. The service reads the live counters and the tenant
document, then asks these functions for a decision (R6.3, R7.2, R7.3, R7.4, R10.4,
features).

Every decision names its reason, the covering lot (or null) and the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final

from services.entitlements.models import DecisionKind
from shared.catalog import Catalog
from shared.coverage import email_allowance, granted
from shared.meters import Meter
from shared.resources import COMPANIES, CountedResources
from shared.subscription import Lot, TenantState
from shared.usage_limits import MeteredLimits

LIMIT_REACHED: Final = "limit_reached"


@dataclass(frozen=True, slots=True)
class Decision:
    decision: DecisionKind
    reason: str
    covered_by: str | None = None
    # Counts, or a priced meter's figure (R10.4), a Decimal that may have decimals.
    limit: int | Decimal | None = None
    used: int | Decimal | None = None
    remaining: int | Decimal | None = None
    support: dict[str, Any] | None = None  # R8: the pools behind a support decision
    raise_with: str | None = None  # R7.4: the item that would raise a reached limit

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "decision": self.decision, "reason": self.reason, "covered_by": self.covered_by,
            "limit": _figure(self.limit), "used": _figure(self.used),
            "remaining": _figure(self.remaining)}
        if self.support is not None:
            body["support"] = self.support
        if self.reason == LIMIT_REACHED:  # null when nothing sold would raise it
            body["raise_with"] = self.raise_with
        return body


def _figure(value: int | Decimal | None) -> int | float | None:
    """A JSON number: integral figures as integers (as the usage API answers them)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class CatalogIndex:
    """Lookups the checks need, computed once per catalog (kept in memory); `live` are the
    priced meters counted live (R10.4)."""

    def __init__(self, catalog: Catalog, live: Mapping[str, Meter] | None = None) -> None:
        self.catalog = catalog
        self.metered = MeteredLimits(catalog, live or {})
        self.modules = frozenset(m.id for m in catalog.modules)
        self.deny_extra_users = frozenset(m.id for m in catalog.modules
                                          if m.extra_users == "deny")
        self.plan_modules = {p.id: frozenset(p.modules) for p in catalog.plans}
        self.plan_features = {p.id: frozenset(p.features) for p in catalog.plans}
        self.plan_companies = {p.id: p.companies for p in catalog.plans}
        self.seat_packs = {module: catalog.seat_packs(module) for module in self.modules}
        self.feature_of_pack = {p.id: p.feature for p in catalog.packs
                                if p.kind == "feature" and p.feature is not None}
        self.features = frozenset(self.feature_of_pack.values()) | frozenset(
            f for p in catalog.plans for f in p.features)
        self.kind_of_pack = {p.id: p.kind for p in catalog.packs}
        self.email_overage = catalog.email_overage_price is not None
        self.counted = CountedResources(catalog)  # companies and declared resources (R7.4)
        self.resources = self.counted.declared


def _live_lots(state: TenantState, kinds: Iterable[str], index: CatalogIndex) -> list[Lot]:
    wanted = set(kinds)
    lots = [lot for lot in state.lots if lot.live and index.kind_of_pack.get(lot.item) in wanted]
    lots.sort(key=lambda lot: lot.bought_at)  # stable: purchase order at equal instants
    return lots


def subscription_denial(state: TenantState, today: date) -> Decision | None:
    """A tenant whose subscription ended or has not started yet is covered for nothing."""
    if state.status == "ended":
        return Decision("denied", "subscription_ended")
    if today < state.anchor:
        return Decision("denied", "subscription_not_started")
    return None


def module_decision(state: TenantState, index: CatalogIndex, module: str) -> Decision:
    """Is module M active for the tenant (its plan includes it)?"""
    if module not in index.plan_modules[state.plan]:
        return Decision("denied", "module_inactive")
    return Decision("covered", "plan")


def seat_lots(state: TenantState, index: CatalogIndex, module: str) -> list[tuple[Lot, int]]:
    """(lot, seats) covering module M, in the order seats are handed out (bought first)."""
    packs = index.seat_packs.get(module, frozenset())
    return [(lot, lot.quantity * lot.units) for lot in state.lots
            if lot.live and lot.item in packs] if packs else []


def extra_user_rank(user_rank: int | None, admin_rank: int | None,
                    members: int) -> tuple[int, int]:
    """(rank of U among extra users, number of extra users) from the module's sorted set.

    The set is ordered by grant instant, ties by user id (Redis orders equal scores by
    member), so ZRANK is R6.3's order; the administrator is not an extra user (R6.1) and is
    taken out. A user not yet granted ranks as if granted now: after everyone else.
    """
    extra = members - (1 if admin_rank is not None else 0)
    if user_rank is None:
        return extra + 1, extra
    rank = user_rank + 1
    if admin_rank is not None and admin_rank < user_rank:
        rank -= 1
    return rank, extra


def user_decision(state: TenantState, index: CatalogIndex, module: str, user: str,
                  rank: int, extra_users: int) -> Decision:
    """R6.3: admin covered; rank ≤ capacity covered by a seat pack; else billable or denied."""
    if module not in index.plan_modules[state.plan]:
        return Decision("denied", "module_inactive")
    lots = seat_lots(state, index, module)
    capacity = sum(seats for _, seats in lots)
    remaining = max(0, capacity - extra_users)
    if user == state.admin_user:
        return Decision("covered", "admin", None, capacity, extra_users, remaining)
    # The lot whose seats contain this rank names the pack (R6.3).
    seen = 0
    for lot, seats in lots:  # in the order they were bought (the document keeps it)
        seen += seats
        if rank <= seen:
            return Decision("covered", "seat_pack", lot.id, capacity, extra_users, remaining)
    if module in index.deny_extra_users:
        return Decision("denied", "extra_users_denied", None, capacity, extra_users, remaining)
    return Decision("billable", "consumption", None, capacity, extra_users, remaining)


def email_lots(state: TenantState, index: CatalogIndex) -> list[Lot]:
    return _live_lots(state, ("emails",), index)


def email_decision(state: TenantState, index: CatalogIndex, used: int,
                   quantity: int) -> Decision:
    """R7.2: no e-mail pack → denied; within the period's allowance → covered; beyond it
    billable when the catalog prices overage, else denied. Allowances are never prorated:
    every lot live in the period counts in full (R7.1)."""
    lots = email_lots(state, index)
    if not lots:
        return Decision("denied", "no_email_pack", None, 0, used, 0)
    allowance = email_allowance(lots)
    remaining = max(0, allowance - used)
    wanted = used + quantity
    if wanted <= allowance:
        seen = 0
        for lot in lots:
            seen += lot.quantity * lot.units
            if wanted <= seen:
                return Decision("covered", "email_pack", lot.id, allowance, used, remaining)
    if index.email_overage:
        return Decision("billable", "overage", None, allowance, used, remaining)
    return Decision("denied", "allowance_exceeded", None, allowance, used, remaining)


def company_decision(state: TenantState, index: CatalogIndex, used: int,
                     quantity: int) -> Decision:
    """R7.3: limit = plan allowance + company packs; allowed while below it; never billed."""
    return resource_decision(state, index, COMPANIES, used, quantity)


def resource_decision(state: TenantState, index: CatalogIndex, resource: str, used: int,
                      quantity: int) -> Decision:
    """R7.3, R7.4: may N more be created? Limit = the plan's allowance + the units of the live
    packs of the resource; covered while used + N fits it (by the plan, else by the lot that
    holds the last one: packs count in the order bought), else denied naming the item that
    would raise it. Never billed, never an upgrade by itself."""
    included = index.counted.allowance(state.plan, resource)
    lots = [lot for lot in state.lots
            if lot.live and index.counted.resource_of(lot.item) == resource]
    lots.sort(key=lambda lot: lot.bought_at)  # stable: purchase order at equal instants
    limit = included + granted(lots)
    remaining = max(0, limit - used)
    wanted = used + quantity
    if wanted > limit:
        raise_with = index.counted.raise_with(state.plan, state.cycle, resource, wanted - limit)
        return Decision("denied", LIMIT_REACHED, None, limit, used, remaining,
                        raise_with=raise_with)
    if wanted <= included:
        return Decision("covered", "plan", None, limit, used, remaining)
    seen = included
    covering = lots[-1].id if lots else None
    for lot in lots:
        seen += lot.quantity * lot.units
        if wanted <= seen:
            covering = lot.id
            break
    reason = "company_pack" if resource == COMPANIES else "resource_pack"
    return Decision("covered", reason, covering, limit, used, remaining)


def metered_decision(state: TenantState, index: CatalogIndex, meter: str, used: Decimal,
                     quantity: int) -> Decision:
    """R10.4: may N more units of a priced meter be used this period? Beyond a hard limit
    denied, naming the plan that would lift it; beyond a soft one billable; otherwise
    covered: by the included quantity, else by the plan's usage charge (billed in arrears,
    R10.1). A meter the tenant's plan does not price is neither limited nor billed."""
    charge = index.metered.charge(state.plan, meter)
    if charge is None:
        return Decision("covered", "not_priced", None, None, used, None)
    wanted = used + quantity
    limit = None if charge.limit is None else charge.limit.per_period
    remaining = None if limit is None else max(Decimal(0), limit - used)
    if limit is not None and wanted > limit:
        assert charge.limit is not None
        if charge.limit.mode == "hard":
            raise_with = index.metered.raise_with(state.plan, state.cycle, meter, wanted)
            return Decision("denied", LIMIT_REACHED, None, limit, used, remaining,
                            raise_with=raise_with)
        return Decision("billable", "soft_limit_exceeded", None, limit, used, remaining)
    reason = "included" if wanted <= charge.included else "usage_charge"
    return Decision("covered", reason, None, limit, used, remaining)


def feature_decision(state: TenantState, index: CatalogIndex, feature: str) -> Decision:
    """A capability: included in the plan, or granted by a live feature pack (or a trial)."""
    if feature in index.plan_features[state.plan]:
        return Decision("covered", "plan")
    lots = [lot for lot in state.lots
            if lot.live and index.feature_of_pack.get(lot.item) == feature]
    if not lots:
        return Decision("denied", "not_subscribed")
    lots.sort(key=lambda lot: (lot.trial, lot.bought_at))
    lot = lots[0]
    quantity = granted(lots)
    return Decision("covered", "trial" if lot.trial else "feature_pack", lot.id, quantity, None,
                    None)


def support_decision(view: Any, level: int) -> Decision:
    """R8.2, R8.3: can a support session of `level` be taken now, and from what?

    Level 1–2: today's daily allowance while it has time left (`support_daily`), else a bank
    with time left (`support_bank`); level 3 only from a bank that covers it (never the daily
    allowance). Otherwise billable at the overage rate (`overage`, or `no_support_plan` at the
    catalog's rate for a tenant without a plan), or denied when no rate is set. Numbers are
    minutes; `support` details every pool (docs/support.md)."""
    daily = view.daily
    banks: list[dict[str, Any]] = view.banks
    details = {"unit": "minutes", "level": level,
               "today": None if daily is None else {
                   "lot": daily[0], "limit": daily[1], "used": daily[2],
                   "remaining": max(0, daily[1] - daily[2])},
               "banks": banks,
               "overage_price_per_hour": None if view.rate is None else format(view.rate, "f"),
               "level_3_covered": any(b["covers_level_3"] and b["remaining"] > 0
                                      for b in banks)}
    if level != 3 and daily is not None and daily[2] < daily[1]:
        return Decision("covered", "support_daily", daily[0], daily[1], daily[2],
                        daily[1] - daily[2], details)
    for bank in banks:
        if (level != 3 or bank["covers_level_3"]) and bank["remaining"] > 0:
            return Decision("covered", "support_bank", bank["lot"], bank["limit"],
                            bank["used"], bank["remaining"], details)
    has_plan = daily is not None or bool(banks)
    if view.rate is None:
        return Decision("denied", "not_subscribed" if not has_plan else "allowance_exceeded",
                        None, 0, 0, 0, details)
    return Decision("billable", "overage" if has_plan else "no_support_plan", None,
                    None, None, None, details)
