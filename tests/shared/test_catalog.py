"""Catalog loading and validation (R1, R3.1, R4.6, R4.7, R6, R7, R8).

Bad catalogs are built from a raw copy of the demo file (read with plain yaml, not through
the code under test), changed in one place, written out and loaded.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shared.catalog import (
    Catalog,
    CatalogError,
    UnknownCatalogItem,
    load_catalog,
    parse_catalog,
)

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "catalog" / "2026-11.yaml"
ALL_CYCLES = {"P1M", "P1Y", "P30D", "P365D"}

Raw = dict[str, Any]


@pytest.fixture(scope="module")
def demo() -> Catalog:
    return load_catalog(DEMO)


@pytest.fixture
def raw() -> Raw:
    with DEMO.open(encoding="utf-8") as f:
        data: Raw = yaml.safe_load(f)
    return copy.deepcopy(data)


def index_of(raw: Raw, collection: str, item_id: str) -> int:
    ids = [item["id"] for item in raw[collection]]
    return ids.index(item_id)


def item(raw: Raw, collection: str, item_id: str) -> dict[str, Any]:
    found: dict[str, Any] = raw[collection][index_of(raw, collection, item_id)]
    return found


def load_yaml(tmp_path: Path, data: Raw) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_catalog(path)


def load_json(tmp_path: Path, data: Raw) -> Catalog:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return load_catalog(path)


def rejected(tmp_path: Path, data: Raw) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        load_yaml(tmp_path, data)
    return info.value


def fields(err: CatalogError) -> list[str]:
    return [field for field, _ in err.problems]


# --- the demo catalog --------------------------------------------------------------------


def test_r1_4_demo_catalog_loads(demo: Catalog) -> None:
    assert demo.version == "2026-11"
    assert demo.currency == "EUR"
    assert [m.id for m in demo.modules] == ["sales", "crm", "accounting", "emailing", "support"]
    assert [s.id for s in demo.suites] == ["business"]
    assert [p.id for p in demo.plans] == ["essentials", "professional"]
    assert {p.id for p in demo.packs} == {
        "seats-sales",
        "seats-crm",
        "seats-accounting",
        "seats-business",
        "emails-1000",
        "emails-10000",
        "companies-1",
        "companies-5",
        "contacts-1000",
        "parallel-events",
        "analytics",
        "sub-accounts",
        "storage",
        "ai-assist",
        "account-rename",
        "web-training",
        "vip",
        "vip-diamond",
        "orangecare",
        "ai-reports",
    }
    assert demo.email_overage_price == Decimal("0.002")


def test_demo_prices_every_plan_and_recurring_pack_for_all_cycles(demo: Catalog) -> None:
    for plan in demo.plans:
        assert set(plan.price) == ALL_CYCLES, plan.id
    for pack in demo.packs:
        if pack.kind == "one_time":
            assert set(pack.price) == {"once"}, pack.id
        elif pack.kind == "support":
            assert "P1Y" in pack.price, pack.id
        else:
            assert set(pack.price) == ALL_CYCLES, pack.id
    for module in demo.modules:
        if module.extra_users == "bill":
            assert set(module.extra_user_price) == ALL_CYCLES, module.id


def test_demo_prices_are_exact_decimals(demo: Catalog) -> None:
    assert demo.plan("essentials").price["P1M"] == Decimal("49.00")
    assert demo.pack("seats-crm").price["P1Y"] == Decimal("100.00")
    assert demo.pack("web-training").price["once"] == Decimal("150.00")
    assert demo.module("crm").extra_user_price["P1M"] == Decimal("15.00")
    prices = [v for p in demo.packs for v in p.price.values()]
    assert all(type(v) is Decimal for v in prices)


def test_demo_plans_and_suites(demo: Catalog) -> None:
    essentials, professional = demo.plan("essentials"), demo.plan("professional")
    assert (essentials.rank, essentials.companies, essentials.contacts) == (1, 1, 2000)
    assert (professional.rank, professional.companies, professional.contacts) == (2, 3, 10000)
    assert professional.features == ("ai_assist",)
    assert demo.modules_of_plan("professional") == frozenset(
        {"sales", "crm", "accounting", "emailing"}
    )
    assert demo.modules_of_plan("essentials") < demo.modules_of_plan("professional")
    assert demo.suite_modules("business") == frozenset({"sales", "crm", "accounting"})
    assert demo.module("emailing").extra_users == "deny"


def test_demo_packs(demo: Catalog) -> None:
    assert demo.pack("seats-business").suite == "business"
    assert demo.pack("seats-business").module is None
    assert demo.pack("emails-1000").units == 1000
    assert demo.pack("emails-10000").units == 10000
    ai = demo.pack("ai-assist")
    assert (ai.kind, ai.feature, ai.single_instance, ai.trial_days) == (
        "feature",
        "ai_assist",
        True,
        14,
    )
    assert demo.pack("account-rename").recurring is False


def test_r8_demo_support_plans(demo: Catalog) -> None:
    vip, diamond, orange = demo.pack("vip"), demo.pack("vip-diamond"), demo.pack("orangecare")
    assert vip.support is not None
    assert diamond.support is not None
    assert orange.support is not None
    assert (vip.support.type, vip.support.hours_per_year) == ("bank", Decimal("10"))
    assert diamond.support.type == "bank"
    assert diamond.support.hours_per_year is not None
    assert diamond.support.hours_per_year > Decimal("10")
    assert diamond.eligible_plans == ("professional",)  # R8.5
    assert (orange.support.type, orange.support.minutes_per_user_per_day) == ("daily", 30)
    assert orange.support.auto_renew is True  # R8.4
    assert orange.support.covers_level_3 is False  # R8.3
    assert orange.support.increment_minutes == 15  # R8.1


def test_lookups(demo: Catalog) -> None:
    assert demo.item("essentials") is demo.plan("essentials")
    assert demo.item("seats-crm") is demo.pack("seats-crm")
    assert demo.suite("business").modules == ("sales", "crm", "accounting")
    lookups: list[Callable[[str], object]] = [
        demo.plan,
        demo.pack,
        demo.module,
        demo.suite,
        demo.item,
        demo.modules_of_plan,
        demo.suite_modules,
    ]
    for lookup in lookups:
        with pytest.raises(UnknownCatalogItem) as info:
            lookup("nope")
        assert isinstance(info.value, KeyError)
        assert "'nope'" in str(info.value)


def test_catalog_is_frozen(demo: Catalog) -> None:
    with pytest.raises(ValidationError):
        demo.version = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        demo.plan("essentials").rank = 5  # type: ignore[misc]
    assert isinstance(demo.plans, tuple)


# --- public shape ------------------------------------------------------------------------


def _walk(value: object) -> list[object]:
    if isinstance(value, dict):
        return [v for x in value.values() for v in _walk(x)]
    if isinstance(value, list):
        return [v for x in value for v in _walk(x)]
    return [value]


def test_to_public_has_api_shape_and_money_as_strings(demo: Catalog) -> None:
    public = demo.to_public()
    assert list(public) == [
        "version",
        "currency",
        "modules",
        "suites",
        "plans",
        "packs",
        "email_overage_price",
        "resources",
    ]
    assert public["email_overage_price"] == "0.002"
    plan = public["plans"][0]
    assert plan["price"] == {"P1M": "49.00", "P1Y": "490.00", "P30D": "49.00", "P365D": "490.00"}
    assert plan["modules"] == ["sales", "crm", "emailing"]
    seats = public["packs"][index_of(public, "packs", "seats-crm")]
    assert {
        "id",
        "kind",
        "module",
        "suite",
        "units",
        "price",
        "single_instance",
        "trial_days",
        "eligible_plans",
    } <= set(seats)
    assert seats["suite"] is None
    assert public["packs"][index_of(public, "packs", "account-rename")]["price"] == {
        "once": "15.00"
    }
    support = public["packs"][index_of(public, "packs", "vip")]["support"]
    assert support["hours_per_year"] == "10"
    assert support["overage_price_per_hour"] == "90.00"
    assert not any(isinstance(v, float) for v in _walk(public))
    assert '"P1M": 49' not in json.dumps(public)


def test_to_public_round_trip(demo: Catalog, tmp_path: Path) -> None:
    public = demo.to_public()
    assert Catalog.model_validate(public) == demo
    assert load_json(tmp_path, public) == demo
    assert load_json(tmp_path, public).to_public() == public
    assert load_yaml(tmp_path, public) == demo


def test_to_public_keeps_written_decimal_places(raw: Raw, tmp_path: Path) -> None:
    item(raw, "packs", "seats-crm")["price"]["P1M"] = "10.500000"
    item(raw, "packs", "seats-crm")["price"]["P1Y"] = "0.000001"
    public = load_yaml(tmp_path, raw).to_public()
    price = public["packs"][index_of(raw, "packs", "seats-crm")]["price"]
    assert (price["P1M"], price["P1Y"]) == ("10.500000", "0.000001")


def test_yaml_integer_price_is_accepted(raw: Raw, tmp_path: Path) -> None:
    item(raw, "plans", "essentials")["price"]["P1M"] = 49
    catalog = load_yaml(tmp_path, raw)
    assert catalog.plan("essentials").price["P1M"] == Decimal("49")
    assert catalog.to_public()["plans"][0]["price"]["P1M"] == "49"


# --- validation: money (R1.4, R3.1) ------------------------------------------------------


def test_r3_1_float_price_rejected_naming_field(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-crm")
    raw["packs"][i]["price"]["P1M"] = 10.5
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.price.P1M"
    assert "float" in err.message
    assert str(err).startswith(f"packs.{i}.price.P1M: ")
    assert "seats-crm" in str(err)


def test_r3_1_float_in_yaml_text_rejected(raw: Raw, tmp_path: Path) -> None:
    text = yaml.safe_dump(raw, sort_keys=False).replace("'0.002'", "0.002")
    assert "email_overage_price: 0.002" in text
    path = tmp_path / "catalog.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    # The demo's api_calls tier costs 0.002 too (R10.2): both are refused, each named.
    assert "email_overage_price" in fields(info.value)
    assert "plans.1.usage.0.tiers.0.unit_price" in fields(info.value)


def test_r3_1_json_number_price_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][1]["price"]["P1Y"] = 990
    with pytest.raises(CatalogError) as info:
        load_json(tmp_path, raw)
    assert info.value.field == "plans.1.price.P1Y"
    assert "JSON string" in info.value.message


def test_r3_1_float_extra_user_price_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["modules"][1]["extra_user_price"]["P30D"] = 15.0
    assert rejected(tmp_path, raw).field == "modules.1.extra_user_price.P30D"


def test_r1_4_seven_fractional_digits_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "emails-1000")
    raw["packs"][i]["price"]["P30D"] = "0.0000001"
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.price.P30D"
    assert "fractional digits" in err.message


def test_r1_4_six_fractional_digits_accepted(raw: Raw, tmp_path: Path) -> None:
    raw["email_overage_price"] = "0.001234"
    assert load_yaml(tmp_path, raw).email_overage_price == Decimal("0.001234")


def test_r1_4_negative_price_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][0]["price"]["P365D"] = "-1.00"
    err = rejected(tmp_path, raw)
    assert err.field == "plans.0.price.P365D"
    assert "negative" in err.message


@pytest.mark.parametrize("text", ["abc", "1e3", "NaN", " 1.00", "1,50", "Infinity", ""])
def test_r1_4_non_decimal_text_rejected(raw: Raw, tmp_path: Path, text: str) -> None:
    raw["plans"][0]["price"]["P1M"] = text
    assert rejected(tmp_path, raw).field == "plans.0.price.P1M"


def test_email_overage_price_is_optional(raw: Raw, tmp_path: Path) -> None:
    del raw["email_overage_price"]
    catalog = load_yaml(tmp_path, raw)
    assert catalog.email_overage_price is None
    assert catalog.to_public()["email_overage_price"] is None


def test_unknown_price_cycle_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][0]["price"]["P2M"] = "1.00"
    assert rejected(tmp_path, raw).field.startswith("plans.0.price.P2M")


# --- validation: references and ids (R1) -------------------------------------------------


def test_r1_3_pack_unknown_module_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-crm")
    raw["packs"][i]["module"] = "crmm"
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.module"
    assert str(err) == f"packs.{i}.module: unknown module 'crmm'"


def test_r1_2_plan_unknown_module_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][0]["modules"].append("marketing")
    j = len(raw["plans"][0]["modules"]) - 1
    err = rejected(tmp_path, raw)
    assert err.field == f"plans.0.modules.{j}"
    assert "marketing" in err.message


def test_r1_1_suite_unknown_module_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["suites"][0]["modules"][0] = "payroll"
    assert rejected(tmp_path, raw).field == "suites.0.modules.0"


def test_r6_2_pack_unknown_suite_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-business")
    raw["packs"][i]["suite"] = "enterprise"
    assert rejected(tmp_path, raw).field == f"packs.{i}.suite"


@pytest.mark.parametrize("collection", ["modules", "suites", "plans", "packs"])
def test_r1_duplicate_id_rejected(raw: Raw, tmp_path: Path, collection: str) -> None:
    raw[collection].append(copy.deepcopy(raw[collection][0]))
    dup = len(raw[collection]) - 1
    err = rejected(tmp_path, raw)
    assert f"{collection}.{dup}.id" in fields(err)
    assert "duplicate" in str(err)


def test_r1_pack_id_equal_to_plan_id_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "storage")
    raw["packs"][i]["id"] = "professional"
    assert rejected(tmp_path, raw).field == f"packs.{i}.id"


def test_r4_2_duplicate_plan_rank_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][1]["rank"] = raw["plans"][0]["rank"]
    assert rejected(tmp_path, raw).field == "plans.1.rank"


def test_r8_5_unknown_eligible_plan_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip-diamond")
    raw["packs"][i]["eligible_plans"] = ["professional", "enterprise"]
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.eligible_plans.1"
    assert "enterprise" in err.message


def test_r8_5_empty_eligible_plans_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip-diamond")
    raw["packs"][i]["eligible_plans"] = []
    assert rejected(tmp_path, raw).field == f"packs.{i}.eligible_plans"


def test_invalid_id_text_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["modules"][0]["id"] = "Sales Module"
    assert rejected(tmp_path, raw).field == "modules.0.id"


# --- validation: pack kinds (R1.3, R4.6, R4.7) -------------------------------------------


def test_r4_6_once_price_on_recurring_pack_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "analytics")
    raw["packs"][i]["price"]["once"] = "99.00"
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.price.once"


def test_r4_6_cycle_price_on_one_time_pack_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "web-training")
    raw["packs"][i]["price"]["P1M"] = "10.00"
    assert rejected(tmp_path, raw).field == f"packs.{i}.price.P1M"


def test_r4_6_one_time_pack_without_once_price_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "account-rename")
    raw["packs"][i]["price"] = {"P1M": "15.00"}
    assert f"packs.{i}.price" in fields(rejected(tmp_path, raw))


def test_r4_6_one_time_pack_with_trial_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "web-training")
    raw["packs"][i]["trial_days"] = 7
    assert rejected(tmp_path, raw).field == f"packs.{i}.trial_days"


def test_r6_2_seats_pack_with_module_and_suite_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-business")
    raw["packs"][i]["module"] = "crm"
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.module"
    assert "exactly one" in err.message


def test_r6_2_seats_pack_with_neither_module_nor_suite_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-sales")
    del raw["packs"][i]["module"]
    assert rejected(tmp_path, raw).field == f"packs.{i}.module"


def test_r1_3_suite_on_non_seats_pack_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "emails-1000")
    raw["packs"][i]["suite"] = "business"
    assert rejected(tmp_path, raw).field == f"packs.{i}.suite"


def test_r4_7_feature_pack_without_feature_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "ai-assist")
    del raw["packs"][i]["feature"]
    err = rejected(tmp_path, raw)
    assert err.field == f"packs.{i}.feature"


def test_r4_7_feature_on_non_feature_pack_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "companies-1")
    raw["packs"][i]["feature"] = "analytics"
    assert rejected(tmp_path, raw).field == f"packs.{i}.feature"


@pytest.mark.parametrize("pack_id", ["seats-crm", "emails-1000", "companies-1"])
def test_r4_7_single_instance_quantity_pack_rejected(
    raw: Raw, tmp_path: Path, pack_id: str
) -> None:
    i = index_of(raw, "packs", pack_id)
    raw["packs"][i]["single_instance"] = True
    assert rejected(tmp_path, raw).field == f"packs.{i}.single_instance"


def test_r1_3_unknown_pack_kind_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "storage")
    raw["packs"][i]["kind"] = "bundle"
    assert rejected(tmp_path, raw).field == f"packs.{i}.kind"


# --- validation: modules (R6) ------------------------------------------------------------


def test_r6_4_billing_module_without_price_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["modules"][0]["extra_user_price"] = {}
    assert rejected(tmp_path, raw).field == "modules.0.extra_user_price"


def test_r6_3_deny_module_with_price_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "modules", "emailing")
    raw["modules"][i]["extra_user_price"] = {"P1M": "1.00"}
    assert rejected(tmp_path, raw).field == f"modules.{i}.extra_user_price"


# --- validation: support plans (R8) ------------------------------------------------------


def test_r8_support_pack_without_terms_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip")
    del raw["packs"][i]["support"]
    assert rejected(tmp_path, raw).field == f"packs.{i}.support"


def test_r8_support_terms_on_other_pack_rejected(raw: Raw, tmp_path: Path) -> None:
    terms = copy.deepcopy(item(raw, "packs", "vip")["support"])
    i = index_of(raw, "packs", "storage")
    raw["packs"][i]["support"] = terms
    assert rejected(tmp_path, raw).field == f"packs.{i}.support"


def test_r8_2_bank_plan_without_hours_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip")
    del raw["packs"][i]["support"]["hours_per_year"]
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.hours_per_year"


def test_r8_1_bank_hours_not_in_quarter_hours_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip")
    raw["packs"][i]["support"]["hours_per_year"] = "10.1"
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.hours_per_year"


def test_r8_3_daily_plan_covering_level_3_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "orangecare")
    raw["packs"][i]["support"]["covers_level_3"] = True
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.covers_level_3"


def test_r8_3_daily_plan_without_allowance_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "orangecare")
    del raw["packs"][i]["support"]["minutes_per_user_per_day"]
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.minutes_per_user_per_day"


def test_r8_4_auto_renewing_bank_plan_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip-diamond")
    raw["packs"][i]["support"]["auto_renew"] = True
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.auto_renew"


def test_r8_4_monthly_support_price_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "orangecare")
    raw["packs"][i]["price"]["P1M"] = "10.00"
    assert rejected(tmp_path, raw).field == f"packs.{i}.price.P1M"


def test_r8_unknown_support_type_rejected(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "vip")
    raw["packs"][i]["support"]["type"] = "hourly"
    assert rejected(tmp_path, raw).field == f"packs.{i}.support.type"


# --- validation: structure and strictness (R1.4) -----------------------------------------


def test_r1_4_unknown_field_rejected(raw: Raw, tmp_path: Path) -> None:
    raw["plans"][0]["colour"] = "blue"
    assert rejected(tmp_path, raw).field == "plans.0.colour"


def test_r1_4_missing_field_rejected(raw: Raw, tmp_path: Path) -> None:
    del raw["plans"][1]["contacts"]
    err = rejected(tmp_path, raw)
    assert err.field == "plans.1.contacts"
    assert "professional" in err.message


@pytest.mark.parametrize("value", ["1", True, 1.0])
def test_r1_4_strict_integer_fields(raw: Raw, tmp_path: Path, value: object) -> None:
    raw["plans"][0]["rank"] = value
    assert rejected(tmp_path, raw).field == "plans.0.rank"


def test_r1_4_every_problem_is_reported(raw: Raw, tmp_path: Path) -> None:
    i = index_of(raw, "packs", "seats-crm")
    j = index_of(raw, "packs", "vip-diamond")
    raw["packs"][i]["module"] = "crmm"
    raw["packs"][j]["eligible_plans"] = ["gold"]
    err = rejected(tmp_path, raw)
    assert fields(err) == [f"packs.{i}.module", f"packs.{j}.eligible_plans.0"]
    assert str(err).splitlines() == [
        f"packs.{i}.module: unknown module 'crmm'",
        f"packs.{j}.eligible_plans.0: unknown plan 'gold'",
    ]


def test_r1_4_duplicate_yaml_key_rejected(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace(
        "currency: EUR\n", "currency: EUR\ncurrency: USD\n", 1
    )
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert "duplicate key 'currency'" in str(info.value)


def test_r1_4_duplicate_json_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text('{"version": "1", "version": "2"}', encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert "duplicate key 'version'" in str(info.value)


def test_r1_4_bad_files_rejected(tmp_path: Path) -> None:
    cases = {
        "catalog.txt": "version: x\n",
        "catalog.yaml": "- just\n- a list\n",
        "broken.yaml": "modules: [\n",
        "broken.json": "{",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CatalogError) as info:
            load_catalog(path)
        assert info.value.field == "catalog", name
    with pytest.raises(CatalogError):
        load_catalog(tmp_path / "missing.yaml")


def test_catalog_error_is_a_value_error() -> None:
    err = CatalogError("packs.3.module", "unknown module 'crmm'")
    assert isinstance(err, ValueError)
    assert str(err) == "packs.3.module: unknown module 'crmm'"


def test_model_validate_reports_cross_field_problem_by_field(raw: Raw) -> None:
    raw["suites"][0]["modules"].append("payroll")
    with pytest.raises(ValidationError) as info:
        Catalog.model_validate(raw)
    assert "suites.0.modules.3: unknown module 'payroll'" in str(info.value)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(raw)
    assert caught.value.field == "suites.0.modules.3"
