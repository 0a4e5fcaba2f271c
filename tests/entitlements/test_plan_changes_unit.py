"""Which lots a plan makes moot (services/entitlements/plan_changes.py, R4.10): seat packs
of a module the plan lacks (for a suite's seats, when it lacks every module of the suite),
and single-instance feature packs whose feature the plan includes. The prices of plan
changes themselves are worked out in test_purchases_unit.py."""

from __future__ import annotations

from typing import Any

import pytest

from services.entitlements.plan_changes import is_moot, moot_lots
from shared.catalog import Catalog
from shared.subscription import Lot
from tests.builders import people_catalog, tenant_document

pytestmark = pytest.mark.unit

CATALOG = Catalog.model_validate(people_catalog())
ESSENTIALS, BUSINESS = CATALOG.plan("essentials"), CATALOG.plan("business")


def _lot(item: str, kind: str = "seats", **fields: Any) -> dict[str, Any]:
    lot = {"id": f"lot-{item}", "item": item, "kind": kind, "quantity": 1, "units": 1,
           "state": "active", "bought_at": "2026-03-05T09:00:00Z"}
    lot.update(fields)
    return lot


@pytest.mark.parametrize(("item", "kind", "essentials", "business"), [
    ("seats-crm", "seats", False, False),  # crm is in both plans
    ("seats-hr", "seats", True, False),  # hr only in business
    ("seats-people", "seats", True, False),  # business holds hr, one module of the suite
    ("analytics", "feature", False, True),  # business includes the feature itself
    ("exports", "feature", False, False),  # not single-instance: kept beside the feature
    ("retired-pack", "feature", False, False),  # no longer in the catalog: left alone
])
def test_what_each_plan_makes_moot(item: str, kind: str, essentials: bool,
                                   business: bool) -> None:
    lot = Lot.model_validate(_lot(item, kind))
    assert is_moot(lot, CATALOG, ESSENTIALS) is essentials
    assert is_moot(lot, CATALOG, BUSINESS) is business


def test_only_active_bought_lots_are_cancelled_by_a_change() -> None:
    """A trial ends on its own, and a lot already cancelled or expired is not cancelled
    again: of four seat packs on hr, only the active bought one is moot under essentials."""
    state = tenant_document(
        _lot("seats-hr"),
        _lot("seats-hr", id="lot-trial", state="trialing", trial=True,
             ends_at="2026-03-19T23:00:00Z"),
        _lot("seats-hr", id="lot-cancelled", state="cancelled",
             ends_at="2026-03-31T22:00:00Z"),
        _lot("seats-hr", id="lot-expired", state="expired", ends_at="2026-03-10T23:00:00Z"),
        _lot("seats-crm"), plan="business")
    assert [lot.id for lot in moot_lots(state, CATALOG, ESSENTIALS)] == ["lot-seats-hr"]
