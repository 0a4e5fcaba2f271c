"""Late-usage adjustment lines (R9.4): (quantity recomputed for a period − quantity billed
for it) × unit price, one line per meter and module whose quantity changed, naming the period
it corrects. Pure functions, no I/O.

A late access grant corrects every billed period since its time, dozens for an old one, most
often by the same difference at the same price. A tenant's corrected periods are priced by
one `Adjuster`, which looks a (catalog, meter, module)'s unit price up and rounds a
(difference, unit price)'s amount once, not once per period: the lines are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from services.invoicing.compose import (
    EMAILS_METER,
    EXTRA_USERS_METER,
    SUPPORT_METER,
    unit_price,
)
from services.invoicing.models import Line
from shared.billing.money import line_amount
from shared.billing.periods import Period
from shared.catalog import Catalog
from shared.subscription import TenantState

# Late event ids kept on an adjustment line's provenance (R9.6), at most.
MAX_IDS_PER_LINE = 1000

# The kind of line each built-in meter's adjustment corrects.
CORRECTS = {EXTRA_USERS_METER: "extra_users", EMAILS_METER: "email_overage",
            SUPPORT_METER: "support_overage"}
_NONE = Decimal(0)

Quantities = Mapping[tuple[str, str | None], Decimal]


def _meter_then_module(key: tuple[str, str | None]) -> tuple[str, str]:
    return key[0], key[1] or ""


class Adjuster:
    """The adjustment lines of one tenant's corrected periods."""

    def __init__(self, view: TenantState) -> None:
        self.view = view
        # Keyed by the catalog's identity: an Adjuster lives for one tenant's lines, the
        # catalog versions for the whole process.
        self._prices: dict[tuple[int, str, str | None], Decimal | None] = {}
        # line_amount depends on the values only (its result has the currency's digits).
        self._amounts: dict[tuple[Decimal, Decimal], Decimal] = {}

    def lines(self, catalog: Catalog, period: Period, recomputed: Quantities,
              billed: Quantities, late_ids: Mapping[str, list[str]]) -> list[Line]:
        """(quantity recomputed for `period` − quantity billed for it) × unit price, rounded
        once (R3.2), one line per meter and module whose quantity changed (R9.4)."""
        lines: list[Line] = []
        keys = recomputed.keys() | billed.keys()
        for key in sorted(keys, key=_meter_then_module) if len(keys) > 1 else keys:
            meter, module = key
            now, was = recomputed.get(key, _NONE), billed.get(key, _NONE)
            price = self._price(catalog, meter, module)
            if now == was or price is None:
                continue
            base = meter.partition("@")[0]
            quantity = now - was
            shown = period.public()  # the dates as `str(date)` writes them too
            lines.append(Line(
                module=module, kind="adjustment",
                description=f"late usage: {meter} for {shown['from']} – {shown['to']} "
                            f"recomputed {now:f}, billed {was:f}",
                quantity=quantity, unit_price=price, amount=self._amount(quantity, price),
                period=period, meter=meter,
                source={"meter": meter, "corrects": CORRECTS[base],
                        "late_event_ids": late_ids.get(base, [])[:MAX_IDS_PER_LINE],
                        "module": module, "period": shown}))
        return lines

    def _price(self, catalog: Catalog, meter: str, module: str | None) -> Decimal | None:
        key = (id(catalog), meter, module)
        if key not in self._prices:
            self._prices[key] = unit_price(catalog, self.view, meter, module)
        return self._prices[key]

    def _amount(self, quantity: Decimal, price: Decimal) -> Decimal:
        amount = self._amounts.get((quantity, price))
        if amount is None:
            amount = self._amounts[(quantity, price)] = line_amount(
                quantity, price, self.view.currency)
        return amount


def adjustment_lines(view: TenantState, catalog: Catalog, period: Period,
                     recomputed: Quantities, billed: Quantities,
                     late_ids: Mapping[str, list[str]]) -> list[Line]:
    """The adjustment lines of one corrected period (`Adjuster.lines`)."""
    return Adjuster(view).lines(catalog, period, recomputed, billed, late_ids)
