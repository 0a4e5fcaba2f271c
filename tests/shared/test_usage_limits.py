"""R10.4 without I/O: how an event moves a priced meter's live counters, how a check reads
them back, which thresholds a figure reaches, the decision, the plan a denial names, and the
limits refused at load. Worked examples by hand; hypothesis for the exactness of the split
counters over any stream of values."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.entitlements.decisions import CatalogIndex, metered_decision
from services.metering.service import live_ops
from shared import keys
from shared.catalog import Catalog, CatalogError, parse_catalog
from shared.catalog_versions import CatalogVersions
from shared.events import UsageEvent
from shared.meters import Aggregation, Meter, MeterRegistry
from shared.usage_limits import (
    NANOS,
    LiveMeters,
    check_usage_limits,
    event_value,
    meter_used,
    reached,
    split,
)
from tests.builders import tenant_document
from tests.shared.test_catalog_usage import DEMO_RAW

API_CALLS = Meter(slug="api_calls", event_type="api.calls", aggregation=Aggregation.SUM,
                  value_property="usage.count")
EXPORTS = Meter(slug="exports", event_type="export.completed", aggregation=Aggregation.COUNT)
PEAK = Meter(slug="peak", event_type="jobs.peak", aggregation=Aggregation.MAX,
             value_property="jobs")
REGISTRY = MeterRegistry([*MeterRegistry.load(None).all(), API_CALLS, EXPORTS, PEAK])
TOUCHED = "ent:meter-touched"
DAY = date(2027, 1, 10)


def plan(plan_id: str, rank: int, usage: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": plan_id, "rank": rank, "modules": ["sales"], "price": {"P1M": "10.00"},
            "companies": 1, "contacts": 10, "usage": usage}


def hard(per_period: str, **more: Any) -> dict[str, Any]:
    return {"meter": "api_calls", "included": "100", "model": "per_unit", "unit_price": "0.01",
            "limit": {"per_period": per_period, "mode": "hard"}, **more}


def catalog_with(*plans: dict[str, Any]) -> Catalog:
    raw: dict[str, Any] = copy.deepcopy(DEMO_RAW)
    raw["plans"].extend(plans)
    return parse_catalog(raw)


# Ranks 9 to 12: `small` allows 1,000 calls; `medium` 3,000; `soft` a soft 2,000; `big` 10,000.
CATALOG = catalog_with(
    plan("small", 9, [hard("1000", thresholds=["0.8", "1.0"]),
                      {"meter": "exports", "included": "1", "model": "per_unit",
                       "unit_price": "1", "limit": {"per_period": "3", "mode": "soft"}}]),
    plan("medium", 10, [hard("3000")]),
    plan("soft", 11, [{**hard("2000"), "limit": {"per_period": "2000", "mode": "soft"}}]),
    plan("big", 12, [hard("10000")]))
LIVE = LiveMeters(CatalogVersions((CATALOG,)), REGISTRY, TOUCHED)
INDEX = CatalogIndex(CATALOG, LIVE.meters)


def usage_event(event_type: str, data: dict[str, Any]) -> UsageEvent:
    return UsageEvent(id="e-1", source="tests", type=event_type, tenant="acme",
                      time=datetime(2027, 1, 10, 23, 30, tzinfo=UTC), data=data, extensions={})


@pytest.mark.unit
def test_an_event_moves_its_days_units_and_billionths_and_touches_the_meter() -> None:
    """2.25 calls at 23:30 UTC, 00:30 on the 11th in Paris: 2 units and 250,000,000
    billionths on the 11th; an export counts one; an event of no priced meter nothing."""
    calls = usage_event("api.calls", {"usage": {"count": 2.25}})
    eleventh = date(2027, 1, 11)
    assert live_ops(calls, ZoneInfo("Europe/Paris"), meters=LIVE) == [
        ["incr", keys.meter_key("acme", "api_calls", eleventh), 2],
        ["incr", keys.meter_nanos_key("acme", "api_calls", eleventh), 250_000_000],
        ["touch", TOUCHED, "acme\x1fapi_calls"]]
    assert live_ops(usage_event("export.completed", {}), ZoneInfo("UTC"), meters=LIVE) == [
        ["incr", keys.meter_key("acme", "exports", DAY), 1],
        ["touch", TOUCHED, "acme\x1fexports"]]
    assert live_ops(usage_event("jobs.peak", {"jobs": 3}), ZoneInfo("UTC"), meters=LIVE) == []


@pytest.mark.unit
def test_a_priced_built_in_meter_keeps_its_built_in_counter_too() -> None:
    """Pricing `emails_sent` (SUM of `count`) adds its meter counter beside the e-mails'."""
    priced = catalog_with(plan("mailer", 9, [{"meter": "emails_sent", "model": "per_unit",
                                               "unit_price": "0.001"}]))
    live = LiveMeters(CatalogVersions((priced,)), REGISTRY, TOUCHED)
    ops = live_ops(usage_event("email.sent", {"count": 7}), ZoneInfo("UTC"), meters=live)
    assert ops == [["incr", keys.emails_key("acme", DAY), 7],
                   ["incr", keys.meter_key("acme", "emails_sent", DAY), 7],
                   ["touch", TOUCHED, "acme\x1femails_sent"]]


@pytest.mark.unit
@pytest.mark.parametrize(("value", "parts"), [
    ("2.25", (2, 250_000_000)), ("7", (7, 0)), ("-0.5", (-1, 500_000_000)),
    ("0.000000001", (0, 1)), ("1.0000000009", (1, 0)),  # a 10th place is cut, as ClickHouse
    ("999999999999999.999999999", (999_999_999_999_999, 999_999_999))])
def test_split_by_hand(value: str, parts: tuple[int, int]) -> None:
    assert split(Decimal(value)) == parts


@pytest.mark.unit
@given(st.lists(st.decimals(min_value=-10**15, max_value=10**15, places=9,
                            allow_nan=False, allow_infinity=False), max_size=50))
def test_split_counters_add_up_to_the_exact_sum(values: list[Decimal]) -> None:
    """Whatever the values, the two counters read back are their exact sum."""
    units = sum(split(v)[0] for v in values)
    nanos = sum(split(v)[1] for v in values)
    assert all(0 <= split(v)[1] < NANOS for v in values)
    assert meter_used([[str(units)], [str(nanos)]]) == sum(values, Decimal(0))


@pytest.mark.unit
def test_meter_used_reads_days_without_counters_as_zero() -> None:
    assert meter_used([[b"3", None, b"4"], [None, b"500000000", None]]) == Decimal("7.5")
    assert meter_used([]) == 0


@pytest.mark.unit
def test_event_values_a_counter_can_hold() -> None:
    assert event_value(usage_event("api.calls", {"usage": {"count": "1.5"}}), API_CALLS) == \
        Decimal("1.5")
    assert event_value(usage_event("api.calls", {"usage": {}}), API_CALLS) is None
    assert event_value(usage_event("api.calls", {"usage": {"count": True}}), API_CALLS) is None
    assert event_value(usage_event("export.completed", {}), EXPORTS) == 1


@pytest.mark.unit
def test_thresholds_of_the_limit_or_of_the_included_quantity() -> None:
    """Limit 1,000: 0.8 at 800, 1.0 at 1,000. No limit, 10 included: 0.5 at 5."""
    charge = CATALOG.plan("small").usage[0]
    assert [t.level for t in reached(charge, Decimal(799))] == []
    assert [(t.fraction, t.of, t.level) for t in reached(charge, Decimal(800))] == [
        (Decimal("0.8"), "limit", Decimal("800.0"))]
    assert len(reached(charge, Decimal(1000))) == 2
    included = parse_catalog({**copy.deepcopy(DEMO_RAW), "plans": [
        *DEMO_RAW["plans"], plan("x", 9, [{"meter": "exports", "included": "10",
                                          "model": "per_unit", "unit_price": "1",
                                          "thresholds": ["0.5"]}])]}).plan("x").usage[0]
    assert [(t.of, t.level) for t in reached(included, Decimal("4.999"))] == []
    assert [(t.of, t.level) for t in reached(included, Decimal(5))] == [
        ("included", Decimal("5.0"))]


@pytest.mark.unit
@pytest.mark.parametrize(("tenant_plan", "used", "quantity", "expected"), [
    # small: 100 included, hard 1,000 -> the lowest higher plan allowing 1,001 is medium
    ("small", "50", 50, ("covered", "included", 1000, 950, None)),
    ("small", "50", 51, ("covered", "usage_charge", 1000, 950, None)),
    ("small", "900", 100, ("covered", "usage_charge", 1000, 100, None)),
    ("small", "900", 101, ("denied", "limit_reached", 1000, 100, "medium")),
    # 3,001 is beyond medium's 3,000: soft (no hard limit) is the lowest that allows it
    ("small", "3000.5", 1, ("denied", "limit_reached", 1000, 0, "soft")),
    # 10,001 is beyond every hard limit; soft still allows it, beyond its 2,000
    ("medium", "10000", 1, ("denied", "limit_reached", 3000, 0, "soft")),
    ("soft", "2000", 1, ("billable", "soft_limit_exceeded", 2000, 0, None)),
    ("big", "10000", 1, ("denied", "limit_reached", 10000, 0, None)),
])
def test_metered_decisions_by_hand(tenant_plan: str, used: str, quantity: int,
                                   expected: tuple[str, str, int, float, str | None]) -> None:
    state = tenant_document(plan=tenant_plan)
    found = metered_decision(state, INDEX, "api_calls", Decimal(used), quantity).public()
    assert (found["decision"], found["reason"], found["limit"], found["remaining"],
            found.get("raise_with")) == expected
    assert found["used"] == (float(used) if "." in used else int(used))


@pytest.mark.unit
def test_a_meter_the_plan_does_not_price_is_covered_unlimited() -> None:
    found = metered_decision(tenant_document(plan="medium"), INDEX, "exports", Decimal(9), 5)
    assert found.public() == {"decision": "covered", "reason": "not_priced",
                              "covered_by": None, "limit": None, "used": 9, "remaining": None}


@pytest.mark.unit
@pytest.mark.parametrize(("charge", "field"), [
    ({"meter": "peak", "model": "per_unit", "unit_price": "1",
      "limit": {"per_period": "5", "mode": "hard"}}, "plans.2.usage.0.limit"),
    ({"meter": "peak", "model": "per_unit", "unit_price": "1", "included": "5",
      "thresholds": ["0.5"]}, "plans.2.usage.0.thresholds"),
    ({"meter": "users_with_access", "model": "per_unit", "unit_price": "1",
      "limit": {"per_period": "5", "mode": "soft"}}, "plans.2.usage.0.limit"),
])
def test_a_limit_on_a_meter_no_counter_holds_is_refused_naming_the_field(
        charge: dict[str, Any], field: str) -> None:
    catalog = catalog_with(plan("x", 9, [charge]))
    known = {m.slug: m for m in REGISTRY.all()}
    with pytest.raises(CatalogError) as raised:
        check_usage_limits(catalog, known)
    assert raised.value.field == field
    with pytest.raises(CatalogError):
        LiveMeters(CatalogVersions((catalog,)), REGISTRY, TOUCHED)


@pytest.mark.unit
def test_a_max_meter_priced_without_a_limit_is_billed_but_not_counted_live() -> None:
    catalog = catalog_with(plan("x", 9, [{"meter": "peak", "model": "per_unit",
                                          "unit_price": "1"}]))
    # The demo's professional plan prices api_calls: that one is counted live.
    live = LiveMeters(CatalogVersions((catalog,)), REGISTRY, TOUCHED)
    assert set(live.meters) == {"api_calls"}


@pytest.mark.unit
def test_a_priced_meter_named_like_another_check_is_refused() -> None:
    """A declared meter `contacts` would shadow the counted resource's check (R7.4)."""
    contacts = Meter(slug="contacts", event_type="contact.touched",
                     aggregation=Aggregation.COUNT)
    registry = MeterRegistry([*REGISTRY.all(), contacts])
    catalog = catalog_with(plan("x", 9, [{"meter": "contacts", "model": "per_unit",
                                          "unit_price": "1"}]))
    with pytest.raises(CatalogError) as raised:
        LiveMeters(CatalogVersions((catalog,)), registry, TOUCHED)
    assert raised.value.field == "plans.2.usage.0.meter"


@pytest.mark.unit
@given(used=st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False,
                        allow_infinity=False),
       quantity=st.integers(min_value=1, max_value=10**6),
       tenant_plan=st.sampled_from(["small", "soft"]))
def test_metered_decisions_follow_the_limit(used: Decimal, quantity: int,
                                            tenant_plan: str) -> None:
    """Whatever the figures: beyond the limit denied (hard) or billable (soft), within it
    covered; remaining is what is left of the limit, never negative."""
    charge = CATALOG.plan(tenant_plan).usage[0]
    assert charge.limit is not None
    limit = charge.limit.per_period
    found = metered_decision(tenant_document(plan=tenant_plan), INDEX, "api_calls", used,
                             quantity)
    beyond = used + quantity > limit
    expected = ("denied" if charge.limit.mode == "hard" else "billable") if beyond \
        else "covered"
    assert found.decision == expected
    assert found.remaining == max(Decimal(0), limit - used)
    assert found.limit == limit
