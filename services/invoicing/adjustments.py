"""Late-usage adjustment lines (R9.4): (quantity recomputed for a period − quantity billed
for it) × unit price, one line per meter and module whose quantity changed, naming the period
it corrects. Pure functions, no I/O.

A late access grant corrects every billed period since its time, dozens for an old one, most
often by the same difference at the same price. A tenant's corrected periods are priced by
one `Adjuster`, which works out a (catalog, meter, module, recomputed, billed)'s line once
(its unit price, amount rounded, description but the dates: a `models.Correction`); the
periods it corrects alike are then only named in it (`models.LineRun`): the lines are the
same as priced one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.invoicing.compose import (
    EMAILS_METER,
    EXTRA_USERS_METER,
    SUPPORT_METER,
    unit_price,
)
from services.invoicing.models import Correction, Line, written
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
        # Keyed by the catalog's identity (an Adjuster lives for one tenant's lines, the
        # catalog versions for the whole process) and the quantities as written: Decimals
        # equal in value may differ in exponent, which the description and quantity show.
        # None: no line (no change, or no price).
        self._corrections: dict[tuple[int, str, str | None, str, str],
                                Correction | None] = {}

    def lines(self, catalog: Catalog, period: Period, recomputed: Quantities,
              billed: Quantities, late_ids: Mapping[str, list[str]]) -> list[Line]:
        """(quantity recomputed for `period` − quantity billed for it) × unit price, rounded
        once (R3.2), one line per meter and module whose quantity changed (R9.4)."""
        return [correction.line(period, source) for correction, source in self.corrections(
            catalog, recomputed, billed, late_ids)]

    def corrections(self, catalog: Catalog, recomputed: Quantities, billed: Quantities,
                    late_ids: Mapping[str, list[str]]
                    ) -> list[tuple[Correction, dict[str, Any]]]:
        """The lines of `lines` before they name a period, each with its provenance."""
        found: list[tuple[Correction, dict[str, Any]]] = []
        keys = recomputed.keys() | billed.keys()
        for key in sorted(keys, key=_meter_then_module) if len(keys) > 1 else keys:
            meter, module = key
            now, was = recomputed.get(key, _NONE), billed.get(key, _NONE)
            correction = self._correction(catalog, meter, module, now, was)
            if correction is not None:
                found.append((correction,
                              _source(correction, late_ids.get(correction.corrects, []))))
        return found

    def _correction(self, catalog: Catalog, meter: str, module: str | None, now: Decimal,
                    was: Decimal) -> Correction | None:
        """The line of (meter, module) recomputed `now` and billed `was`, but its period;
        None: nothing to correct (no change, or the meter has no price)."""
        key = (id(catalog), meter, module, str(now), str(was))
        if key in self._corrections:
            return self._corrections[key]
        price = unit_price(catalog, self.view, meter, module)
        correction = None
        if now != was and price is not None:
            quantity = now - was
            amount = line_amount(quantity, price, self.view.currency)
            correction = Correction(
                meter, module, meter.partition("@")[0], quantity, price, amount,
                written(quantity, price, amount, self.view.currency),
                f"late usage: {meter} for ", f" recomputed {now:f}, billed {was:f}")
        self._corrections[key] = correction
        return correction


def adjustment_lines(view: TenantState, catalog: Catalog, period: Period,
                     recomputed: Quantities, billed: Quantities,
                     late_ids: Mapping[str, list[str]]) -> list[Line]:
    """The adjustment lines of one corrected period (`Adjuster.lines`)."""
    return Adjuster(view).lines(catalog, period, recomputed, billed, late_ids)


def _source(correction: Correction, late_ids: list[str]) -> dict[str, Any]:
    """The provenance of a correction's lines (R9.6): the meter and the late events (each line
    itself names its module and period). One for every period it dates: never changed."""
    return {"meter": correction.meter, "corrects": CORRECTS[correction.corrects],
            "late_event_ids": late_ids[:MAX_IDS_PER_LINE]}
