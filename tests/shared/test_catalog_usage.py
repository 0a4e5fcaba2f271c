"""R10.1–R10.3 in the catalog: a plan's usage charges and minimum parse, render back as they
were given, and every mistake is refused at load naming its field; an unknown meter at the
start of invoicing, where the declared meters are known."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.invoicing.part import InvoicingPart
from shared.catalog import CatalogError, parse_catalog
from shared.catalog_usage import check_usage_meters, pricing
from shared.meters import MeterRegistry

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "catalog" / "2026-11.yaml"
DEMO_RAW: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))  # read once
GRADUATED: dict[str, Any] = {
    "meter": "api_calls", "module": None, "included": "10000", "model": "graduated",
    "tiers": [{"up_to": "100000", "unit_price": "0.002", "flat": "0"},
              {"up_to": None, "unit_price": {"P1M": "0.001", "P1Y": "0.0009"}, "flat": "0"}],
    "limit": {"per_period": "1000000", "mode": "hard"}, "thresholds": ["0.8", "1.0"]}


def with_usage(usage: list[dict[str, Any]], minimum: Any = None) -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(DEMO_RAW)
    plan = raw["plans"][0]
    plan["usage"] = usage
    if minimum is not None:
        plan["minimum"] = minimum
    return raw


def refused(usage: list[dict[str, Any]], minimum: Any = None) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(with_usage(usage, minimum))
    return [field for field, _ in info.value.problems]


@pytest.mark.unit
def test_usage_charges_and_minimum_parse_and_render_back() -> None:
    catalog = parse_catalog(with_usage([GRADUATED], {"P1M": "50.00", "P1Y": "500.00"}))
    plan = catalog.plans[0]
    assert plan.minimum == {"P1M": Decimal("50.00"), "P1Y": Decimal("500.00")}
    public = catalog.to_public()["plans"][0]
    assert public["usage"][0]["tiers"][1]["unit_price"] == {"P1M": "0.001", "P1Y": "0.0009"}
    assert public["minimum"] == {"P1M": "50.00", "P1Y": "500.00"}
    yearly = pricing(plan.usage[0], "P1Y")
    assert yearly is not None
    assert [t.unit_price for t in yearly.tiers] == [Decimal("0.002"), Decimal("0.0009")]
    assert pricing(plan.usage[0], "P30D") is None  # the open tier is not priced for P30D


def tiers(*bounds: str | None) -> dict[str, Any]:
    return {"meter": "api_calls", "model": "volume",
            "tiers": [{"up_to": b, "unit_price": "0.01"} for b in bounds]}


@pytest.mark.unit
@pytest.mark.parametrize(("charge", "field"), [
    (tiers("100", "50", None), "plans.0.usage.0.tiers.1.up_to"),
    (tiers("100", "100", None), "plans.0.usage.0.tiers.1.up_to"),
    (tiers(None, "100"), "plans.0.usage.0.tiers.1"),
    (tiers("100"), "plans.0.usage.0.tiers.0.up_to"),
    ({"meter": "x", "model": "per_unit", "unit_price": "-0.01"}, "plans.0.usage.0.unit_price"),
    ({"meter": "x", "model": "per_unit", "unit_price": {"P1M": "-1"}},
     "plans.0.usage.0.unit_price"),
    ({"meter": "x", "model": "package", "package_size": "0", "package_price": "1"},
     "plans.0.usage.0.package_size"),
    ({"meter": "x", "model": "package", "package_size": "10"},
     "plans.0.usage.0.package_price"),
    ({"meter": "x", "model": "per_unit"}, "plans.0.usage.0.unit_price"),
    ({"meter": "x", "model": "per_unit", "unit_price": "1", "tiers": []},
     "plans.0.usage.0.tiers"),
    ({"meter": "x", "model": "stairs", "unit_price": "1"}, "plans.0.usage.0.model"),
    ({"meter": "x", "module": "nope", "model": "per_unit", "unit_price": "1"},
     "plans.0.usage.0.module"),
    ({"meter": "x", "model": "per_unit", "unit_price": "1",
      "limit": {"per_period": "10", "mode": "maybe"}}, "plans.0.usage.0.limit.mode"),
    ({"meter": "x", "model": "per_unit", "unit_price": "1",
      "limit": {"per_period": "0", "mode": "hard"}}, "plans.0.usage.0.limit.per_period"),
    ({"meter": "x", "model": "per_unit", "unit_price": "1", "thresholds": ["0.5"]},
     "plans.0.usage.0.thresholds"),
    ({"meter": "x", "model": "per_unit", "unit_price": "1", "included": "10",
      "thresholds": ["0.9", "0.5"]}, "plans.0.usage.0.thresholds.1"),
])
def test_a_bad_usage_charge_is_refused_naming_the_field(charge: dict[str, Any],
                                                       field: str) -> None:
    assert field in refused([charge])


@pytest.mark.unit
def test_a_meter_priced_twice_and_a_minimum_without_charges_are_refused() -> None:
    charge = {"meter": "x", "model": "per_unit", "unit_price": "1"}
    assert refused([charge, charge]) == ["plans.0.usage.1.meter"]
    assert refused([], {"P1M": "10.00"}) == ["plans.0.minimum"]
    assert "plans.0.minimum" in refused([charge], {"P1M": "-1"})


def test_an_unknown_meter_is_refused_where_the_declared_meters_are_known(
        tmp_path: Path) -> None:
    catalog = parse_catalog(with_usage([GRADUATED]))
    builtin = {m.slug for m in MeterRegistry.load(None).all()}
    with pytest.raises(CatalogError) as info:
        check_usage_meters(catalog, builtin)
    assert info.value.field == "plans.0.usage.0.meter"
    check_usage_meters(catalog, builtin | {"api_calls"})
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(with_usage([{**GRADUATED, "meter": "api_cals"}])))
    with pytest.raises(CatalogError) as started:
        InvoicingPart({"catalog": path})
    assert "plans.0.usage.0.meter" in str(started.value)
