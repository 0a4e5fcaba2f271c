"""The catalog as a pure model (shared/catalog.py, R1): lookups by id, the seat packs that
cover a module (R6.2), and cross-field problems named by their field, from already-parsed
data (`parse_catalog`; reading files is tested in test_catalog.py)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from shared.catalog import Catalog, CatalogError, UnknownCatalogItem, parse_catalog
from tests.builders import people_catalog

pytestmark = pytest.mark.unit

RAW = people_catalog()
CATALOG = parse_catalog(RAW)


def _changed(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(raw)
    return [field for field, _ in refused.value.problems]


def test_lookups_by_id() -> None:
    assert CATALOG.plan("business").price["P1Y"] == Decimal("990.00")
    assert CATALOG.pack("seats-hr").price["P1M"] == Decimal("12.00")
    assert CATALOG.module("payroll").id == "payroll"
    assert CATALOG.suite_modules("people") == {"hr", "payroll"}
    assert CATALOG.modules_of_plan("business") == {"crm", "hr"}
    assert CATALOG.item("business").id == "business"  # a plan
    assert CATALOG.item("analytics").id == "analytics"  # or a pack


@pytest.mark.parametrize(("lookup", "kind"), [
    (Catalog.plan, "plan"), (Catalog.pack, "pack"), (Catalog.module, "module"),
    (Catalog.suite, "suite"), (Catalog.item, "item"), (Catalog.modules_of_plan, "plan"),
    (Catalog.suite_modules, "suite"),
])
def test_an_unknown_id_is_named_with_its_kind(lookup: Any, kind: str) -> None:
    with pytest.raises(UnknownCatalogItem) as unknown:
        lookup(CATALOG, "nothing")
    assert f"{kind} 'nothing'" in str(unknown.value)


def test_a_modules_seats_come_from_its_own_packs_and_its_suites() -> None:
    """R6.2: hr is covered by seats-hr and by the people suite's seats; crm only by its
    own; an unknown module by none."""
    assert CATALOG.seat_packs("hr") == {"seats-hr", "seats-people"}
    assert CATALOG.seat_packs("payroll") == {"seats-people"}
    assert CATALOG.seat_packs("crm") == {"seats-crm"}
    assert CATALOG.seat_packs("nothing") == frozenset()


def test_cross_references_are_checked_and_named_by_field() -> None:
    raw = _changed(lambda r: (r["plans"][0]["modules"].append("billing"),
                              r["packs"][1].update(module="accounting")))
    assert _problems(raw) == ["plans.0.modules.1", "packs.1.module"]  # every problem


def test_two_plans_may_not_share_a_rank() -> None:
    """R4.2: the rank orders upgrades and downgrades, so it is unique."""
    assert _problems(_changed(lambda r: r["plans"][1].update(rank=1))) == ["plans.1.rank"]


def test_a_pack_may_not_take_a_plans_id() -> None:
    assert _problems(_changed(lambda r: r["packs"][3].update(id="business"))) == ["packs.3.id"]
