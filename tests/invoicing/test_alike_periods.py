"""A tenant's corrected periods are priced together (`late.correction_lines`, R9.4): a
period alike the one before it (same catalog version, same late events, same quantities
billed, same extra users billable) joins that period's runs of lines. The
property: for any access history, seat lots, plan history, migration, late events and
quantities billed hypothesis draws, the lines are exactly those each period gets when it
is counted alone (`extra_users_over`) and priced alone (`adjustment_lines`). Paris,
monthly from 1 January 2026, eight months corrected.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoicing.adjustments import Quantities, adjustment_lines
from services.invoicing.compose import EXTRA_USERS_METER
from services.invoicing.extra_users import extra_users_over
from services.invoicing.late import Billed, LateReads, correction_lines, count_periods
from services.invoicing.models import Line
from shared.billing.seats import access_intervals
from shared.catalog_versions import CatalogVersions
from tests.builders import tenant_document
from tests.invoicing.test_extra_users_by_period import (
    CATALOGS,
    MONTHS,
    PARIS,
    _lot,
    access_rows,
    lots,
    plan_changes,
)

pytestmark = pytest.mark.unit

VERSIONS = CatalogVersions(CATALOGS)  # v-bills (crm extra users at 9.00), then v-denies


@settings(max_examples=300, deadline=None)
@given(rows=access_rows, bought=lots, changes=plan_changes,
       migrated=st.none() | st.integers(1, len(MONTHS) - 1),
       billed=st.lists(st.sampled_from([None, 0, 1, 2]), min_size=len(MONTHS),
                       max_size=len(MONTHS)),
       second=st.none() | st.integers(0, len(MONTHS) - 1),
       modules=st.sets(st.sampled_from(["sales", "crm"]), min_size=1))
def test_r9_4_periods_priced_together_get_what_each_gets_alone(
        rows: list[tuple[str, str, datetime, str]],
        bought: list[tuple[str, int, datetime, datetime | None]], changes: list[datetime],
        migrated: int | None, billed: list[int | None], second: int | None,
        modules: set[str]) -> None:
    """Plans alternate essentials / professional at the changes drawn; the tenant is on
    v-bills, or migrated to v-denies from month `migrated`. A late access event touches
    every month (its ids from January), a second one the months from `second`; each touched
    module's quantity billed per month is drawn (None: never billed), equal across
    neighbouring months often."""
    plans = ["essentials", "professional"]
    history = [{"at": at.isoformat(), "previous": plans[k % 2]}
               for k, at in enumerate(sorted(changes))]
    fields: dict[str, Any] = {"anchor": "2026-01-01", "created_at": "2025-12-20T10:00:00Z",
                              "plan": plans[len(history) % 2], "plan_changes": history,
                              "catalog_version": "v-bills"}
    if migrated is not None:
        fields.update(catalog_version="v-denies", catalog_changes=[
            {"at": MONTHS[migrated].start_instant(PARIS).isoformat(),
             "previous": "v-bills"}])
    view = tenant_document(*(_lot(k, *lot) for k, lot in enumerate(bought)), **fields)
    intervals = access_intervals(rows)
    ids = [["late-1"] + (["late-2"] if second is not None and k >= second else [])
           for k in range(len(MONTHS))]
    meters = {f"{EXTRA_USERS_METER}:{m}": {p: ids[k] for k, p in enumerate(MONTHS)}
              for m in sorted(modules)}
    quantities: Billed = {(view.id, p.start, p.end): {(EXTRA_USERS_METER, m): Decimal(q)
                                               for m in sorted(modules)}
                  for p, q in zip(MONTHS, billed, strict=True) if q is not None}
    reads = LateReads({view.id: intervals}, {}, {}, {})
    found = correction_lines(view, count_periods(VERSIONS, view, meters, reads), reads,
                             quantities)
    assert found.lines == []  # no usage charge: every correction is a run of periods
    together = sorted((run.correction.line(period, run.source)
                       for run in found.runs for period in run.periods), key=_in_order)

    alone: list[Line] = []
    for k, period in enumerate(MONTHS):
        catalog = VERSIONS.of(view, period.start_instant(view.zone))
        counted = extra_users_over(view, catalog, period, intervals, modules)
        recomputed: Quantities = {(EXTRA_USERS_METER, m): Decimal(c.billable)
                                  for m, c in counted.items()}
        alone.extend(adjustment_lines(
            view, catalog, period, recomputed,
            quantities.get((view.id, period.start, period.end), {}),
            {EXTRA_USERS_METER: ids[k] * len(modules)}))
    alone.sort(key=_in_order)
    assert together == alone
    assert [line.public("EUR") for line in together] == [line.public("EUR")
                                                           for line in alone]


def _in_order(line: Line) -> tuple[Any, ...]:
    assert line.period is not None
    return line.period.start, line.sort_key()
