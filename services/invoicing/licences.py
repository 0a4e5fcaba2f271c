"""Packs priced per licence renewed in advance (R4.12): a pure rule, no I/O.

Such a pack costs price × the account's licences, counted again at each renewal: the
distinct users holding access to a module of the plan in force at the period's first instant,
the administrator included (R6.1: the plan includes them on every module). They are counted
from the access history invoicing reads anyway for extra users (R6.4), as known when the
invoice is composed.
"""

from __future__ import annotations

from decimal import Decimal

from services.invoicing.models import Line
from shared.billing.periods import Period
from shared.billing.seats import Intervals, holders_at, licence_holders
from shared.catalog import Catalog, Pack, UnknownCatalogItem
from shared.subscription import Lot, TenantState
from shared.times import utc_text

# Users named on a line's provenance (R9.6), at most.
MAX_USERS_PER_LINE = 1000


def licence_line(view: TenantState, catalog: Catalog, period: Period, lot: Lot, pack: Pack,
                 unit_price: Decimal, access: Intervals | None) -> Line:
    """The advance line of one lot: price × the licences at the period start."""
    start = period.start_instant(view.zone)
    try:
        modules = catalog.modules_of_plan(view.plan_at(start))
    except UnknownCatalogItem:
        modules = frozenset()
    users = licence_holders(holders_at(access or {}, start), modules, view.admin_user)
    count = len(users)
    return Line.priced(
        module=pack.module, kind="pack",
        description=f"{lot.item} for {count} licence(s) (users with access at the period "
                    "start, administrator included)",
        quantity=Decimal(count * lot.quantity), unit_price=unit_price,
        currency=view.currency, period=period,
        source={"meter": None, "module": pack.module, "period": period.public(),
                "item": lot.item, "lot": lot.id, "licences": count, "at": utc_text(start),
                "users": sorted(users)[:MAX_USERS_PER_LINE], "admin_user": view.admin_user,
                "basis": "licences at the period start (R4.12), from the access history"})
