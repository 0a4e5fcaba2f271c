"""What a tenant's lots grant: the rules both entitlements (to answer a check now) and
invoicing (to bill a period) apply, written once.

The callers differ only in which lots they hand in: a check takes the lots live now, a
billing run the lots active in the period it bills. What those lots grant is the same:

- seats of a module: its own seat packs and the seat packs of suites containing it (R6.2),
  indexed by the catalog (`Catalog.seat_packs`);
- the e-mail allowance: every e-mail lot in full, never prorated (R7.1);
- the support contracts, as the allocation's daily allowances and banks (R8.2–R8.4), and the
  hourly rate of time beyond them on a given day (R8.2, R8.3).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from shared.billing import support as sb
from shared.catalog import Catalog, SupportTerms, UnknownCatalogItem
from shared.subscription import Lot, TenantState


def granted(lots: Iterable[Lot]) -> int:
    """What lots grant together: each lot's quantity × the units of its pack."""
    return sum(lot.quantity * lot.units for lot in lots)


def email_allowance(lots: Iterable[Lot]) -> int:
    """The e-mails `lots` allow: every e-mail lot among them, in full (R7.1)."""
    return granted(lot for lot in lots if lot.kind == "emails")


def support_terms(catalog: Catalog, item: str) -> SupportTerms | None:
    try:
        pack = catalog.pack(item)
    except UnknownCatalogItem:
        return None
    return pack.support if pack.kind == "support" else None


@dataclass(frozen=True, slots=True)
class SupportContracts:
    """A tenant's support contracts as allocation inputs, with each one's overage rate."""

    dailies: list[sb.Daily] = field(default_factory=list)
    banks: list[sb.Bank] = field(default_factory=list)
    rates: dict[str, Decimal | None] = field(default_factory=dict)

    def overage_rate(self, day: date, catalog: Catalog) -> Decimal | None:
        """The hourly rate of support time beyond the allowances and banks on `day`: the
        active daily plan's, else an active bank's, else the catalog's rate for time without
        a plan (R8.2, R8.3)."""
        active = [d.key for d in self.dailies if d.start <= day < d.end] + \
            [b.key for b in self.banks if b.start <= day < b.end]
        for key in active:
            rate = self.rates.get(key)
            if rate is not None:
                return rate
        return catalog.support_price_per_hour()


def support_contracts(state: TenantState, catalog: Catalog) -> SupportContracts:
    """Every support contract of the tenant, in the tenant's local days (R8.2–R8.4). A daily
    plan allows minutes per user per day × its subscribed users, the lot quantity (R8.3); a
    contract ended early (R4.1) ends on the local day it did."""
    contracts = SupportContracts()
    for lot in state.lots:
        if lot.kind != "support" or lot.contract_start is None or lot.contract_end is None:
            continue
        terms = support_terms(catalog, lot.item)
        if terms is None:
            continue
        end = lot.contract_end
        if lot.state == "expired" and lot.ends_at is not None:
            end = max(lot.contract_start, min(end, lot.ends_at.astimezone(state.zone).date()))
        contracts.rates[lot.id] = terms.overage_price_per_hour
        if terms.type == "daily" and terms.minutes_per_user_per_day is not None:
            contracts.dailies.append(sb.Daily(lot.id, lot.since or lot.contract_start, end,
                                              terms.minutes_per_user_per_day * lot.quantity))
        elif terms.type == "bank" and terms.hours_per_year is not None:
            contracts.banks.append(sb.Bank(lot.id, lot.contract_start, end,
                                           int(terms.hours_per_year * 60),
                                           terms.covers_level_3,
                                           lot.renews if lot.carry_over else None))
    return contracts
