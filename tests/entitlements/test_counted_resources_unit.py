"""Counted resources (R7.4), the pure parts: the catalog's declaration and its validation
(shared/catalog.py), what the declaration means (shared/resources.py: allowances, the item
that raises a limit, the events' checks), the live-counter effect of an event
(services/metering/service.py `live_ops`, replayed by rebuild.py's `LiveState`) and the
decision of a check (services/entitlements/decisions.py `resource_decision`).

A small catalog in memory: essentials (rank 1) grants 2,000 contacts through its v1
`contacts` field and no secondary account; professional (rank 2) 10,000 contacts and 2
secondary accounts through `allowances`; `projects` has no pack at all, so only a plan raises
it. Every expected value is worked out by hand in the test's docstring or comments.
"""

from __future__ import annotations

import copy
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.entitlements.decisions import (
    CatalogIndex,
    Decision,
    company_decision,
    resource_decision,
)
from services.metering.rebuild import LiveState
from services.metering.service import live_ops
from shared import keys
from shared.catalog import Catalog, CatalogError, parse_catalog
from shared.events import EventValidator, InvalidEvent, UsageEvent
from shared.resources import CountedResources
from shared.subscription import TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

UTC_ZONE = ZoneInfo("UTC")  # loaded at import: a unit test reads no file
P1M = {"P1M": "10.00"}

RAW: dict[str, Any] = {
    "version": "t", "currency": "EUR",
    "modules": [{"id": "crm", "extra_users": "bill", "extra_user_price": {"P1M": "15.00"}}],
    "plans": [
        {"id": "essentials", "rank": 1, "modules": ["crm"], "price": {"P1M": "49.00"},
         "companies": 1, "contacts": 2000, "allowances": {"projects": 3}},
        {"id": "professional", "rank": 2, "modules": ["crm"],
         "price": {"P1M": "99.00", "P1Y": "990.00"}, "companies": 3, "contacts": 10000,
         "features": ["ai_assist"],
         "allowances": {"contacts": 10000, "sub_accounts": 2, "projects": 10}}],
    "packs": [
        {"id": "companies-1", "kind": "companies", "price": P1M},
        {"id": "companies-5", "kind": "companies", "units": 5, "price": P1M},
        {"id": "contacts-1000", "kind": "resource", "resource": "contacts", "units": 1000,
         "price": P1M},
        {"id": "contacts-5000", "kind": "resource", "resource": "contacts", "units": 5000,
         "price": P1M},
        # Annual only: never named to a monthly tenant.
        {"id": "contacts-50000", "kind": "resource", "resource": "contacts", "units": 50000,
         "price": {"P1Y": "900.00"}},
        {"id": "sub-account", "kind": "resource", "resource": "sub_accounts", "price": P1M},
        # Sold to professional only.
        {"id": "sub-accounts-10", "kind": "resource", "resource": "sub_accounts",
         "units": 10, "price": P1M, "eligible_plans": ["professional"]}],
    "resources": [
        {"id": "contacts", "created": "contact.created", "deleted": "contact.deleted",
         "key": "contact_id"},
        {"id": "sub_accounts", "created": "subaccount.created",
         "deleted": "subaccount.deleted", "key": "account_id"},
        {"id": "projects", "created": "project.created", "deleted": "project.deleted",
         "key": "project_id"}],
}
CATALOG = Catalog.model_validate(RAW)
INDEX = CatalogIndex(CATALOG)
COUNTED = CountedResources(CATALOG)
VALIDATOR = EventValidator(COUNTED.checkers())


def _raw() -> dict[str, Any]:
    return copy.deepcopy(RAW)


def _refused(raw: dict[str, Any]) -> CatalogError:
    with pytest.raises(CatalogError) as raised:
        parse_catalog(raw)
    return raised.value


def _lot(lot_id: str, item: str, quantity: int = 1, units: int = 1, day: int = 5,
         **fields: Any) -> dict[str, Any]:
    lot = {"id": lot_id, "item": item, "kind": "resource", "quantity": quantity,
           "units": units, "state": "active", "bought_at": f"2026-03-{day:02d}T09:00:00Z"}
    lot.update(fields)
    return lot


def _tenant(*lots: dict[str, Any], plan: str = "essentials") -> TenantState:
    return tenant_document(*lots, plan=plan)


def _numbers(decision: Decision) -> tuple[Any, ...]:
    return (decision.decision, decision.reason, decision.covered_by, decision.limit,
            decision.used, decision.remaining, decision.raise_with)


def _event(event_type: str, data: dict[str, Any], event_id: str = "e-1") -> UsageEvent:
    return VALIDATOR.validate({"specversion": "1.0", "id": event_id, "source": "crm",
                               "type": event_type, "subject": "acme",
                               "time": "2026-03-10T10:00:00Z", "data": data})


# --- the catalog: declared, and refused naming the field -----------------------------------


def test_the_declaration_is_read_by_event_type_and_by_pack() -> None:
    assert sorted(COUNTED.declared) == ["contacts", "projects", "sub_accounts"]
    created = COUNTED.events["contact.created"]
    assert (created.resource, created.key, created.created) == ("contacts", "contact_id", True)
    assert COUNTED.events["subaccount.deleted"].created is False
    assert COUNTED.resource_of("contacts-1000") == "contacts"
    assert COUNTED.resource_of("companies-5") == "companies"  # R7.3 fits the same model
    assert COUNTED.resource_of("nope") is None
    assert CATALOG.to_public()["resources"][0] == RAW["resources"][0]


def test_allowances_come_from_the_plan() -> None:
    """Essentials names no contacts allowance: its v1 `contacts` (2,000) is it; it names no
    secondary accounts: none. Companies are the plan's `companies` (R7.3)."""
    assert COUNTED.allowance("essentials", "contacts") == 2000
    assert COUNTED.allowance("professional", "contacts") == 10000
    assert COUNTED.allowance("essentials", "sub_accounts") == 0
    assert COUNTED.allowance("professional", "sub_accounts") == 2
    assert COUNTED.allowance("essentials", "companies") == 1
    assert COUNTED.allowance("gone", "contacts") == 0  # a plan the catalog lost


def _with(change: Any) -> dict[str, Any]:
    raw = _raw()
    change(raw)
    return raw


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(raw: dict[str, Any]) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize(("change", "field"), [
    # Two resources of one id.
    (_set(("resources", 2, "id"), "contacts"), "resources.2.id"),
    # Names `feature=` already answers: a built-in check, a feature flag.
    (_set(("resources", 2, "id"), "companies"), "resources.2.id"),
    (_set(("resources", 2, "id"), "ai_assist"), "resources.2.id"),
    # Event types of the built-in contract, declared twice, or one for both events.
    (_set(("resources", 0, "created"), "company.created"), "resources.0.created"),
    (_set(("resources", 1, "deleted"), "contact.deleted"), "resources.1.deleted"),
    (_set(("resources", 0, "deleted"), "contact.created"), "resources.0.deleted"),
    (_set(("resources", 0, "created"), "Contact Created"), "resources.0.created"),
    (_set(("resources", 0, "key"), "contact.id"), "resources.0.key"),  # no dotted path
    # Allowances: a resource not declared (companies is the plan's own field), bounds, and
    # the v1 `contacts` contradicted.
    (_set(("plans", 0, "allowances"), {"seats": 3}), "plans.0.allowances.seats"),
    (_set(("plans", 0, "allowances"), {"companies": 3}), "plans.0.allowances.companies"),
    (_set(("plans", 0, "allowances"), {"projects": -1}), "plans.0.allowances.projects"),
    (_set(("plans", 0, "allowances"), {"projects": 10**9 + 1}),
     "plans.0.allowances.projects"),
    (_set(("plans", 1, "allowances", "contacts"), 9000), "plans.1.allowances.contacts"),
    # Packs: a resource pack names a declared resource; no other kind names one; a quantity
    # pack is never single-instance (R4.7).
    (_set(("packs", 2, "resource"), None), "packs.2.resource"),
    (_set(("packs", 2, "resource"), "leads"), "packs.2.resource"),
    (_set(("packs", 0, "resource"), "contacts"), "packs.0.resource"),
    (_set(("packs", 2, "single_instance"), True), "packs.2.single_instance"),
])
def test_an_invalid_declaration_is_refused_naming_the_field(change: Any, field: str) -> None:
    assert _refused(_with(change)).field == field


def test_a_catalog_without_resources_still_loads_and_declares_none() -> None:
    raw = _raw()
    del raw["resources"]
    for plan in raw["plans"]:
        plan.pop("allowances")
    raw["packs"] = raw["packs"][:2]
    assert CountedResources(parse_catalog(raw)).events == {}


def test_resources_are_bounded_in_number() -> None:
    raw = _raw()
    raw["resources"] = [{"id": f"r{i}", "created": f"r{i}.created", "deleted": f"r{i}.deleted",
                         "key": "id"} for i in range(65)]
    assert _refused(raw).field == "resources"


# --- the item named when a limit is reached -------------------------------------------------


@pytest.mark.parametrize(("plan", "resource", "shortfall", "expected"), [
    # The smallest pack whose one unit covers the shortfall: 1 and 1,000 → 1,000 units.
    ("essentials", "contacts", 1, "contacts-1000"),
    ("essentials", "contacts", 1000, "contacts-1000"),
    ("essentials", "contacts", 1001, "contacts-5000"),
    # No pack covers 7,000 in one unit: the largest sold monthly (the annual 50,000 is not).
    ("essentials", "contacts", 7000, "contacts-5000"),
    # sub-accounts-10 is sold to professional only.
    ("essentials", "sub_accounts", 3, "sub-account"),
    ("professional", "sub_accounts", 3, "sub-accounts-10"),
    # Companies (R7.3): 1 → companies-1; 3 → companies-5.
    ("essentials", "companies", 1, "companies-1"),
    ("essentials", "companies", 3, "companies-5"),
    # No projects pack: the higher plan, 10 − 3 = 7 more; beyond 7 still the plan granting
    # the most; from professional nothing is higher.
    ("essentials", "projects", 7, "professional"),
    ("essentials", "projects", 8, "professional"),
    ("professional", "projects", 1, None),
])
def test_raise_with_names_the_pack_else_the_plan(plan: str, resource: str, shortfall: int,
                                                 expected: str | None) -> None:
    assert COUNTED.raise_with(plan, "P1M", resource, shortfall) == expected


def test_raise_with_only_names_a_plan_priced_for_the_cycle_and_granting_more() -> None:
    """Monthly professional is priced: named; for a P30D tenant neither plan is priced, so
    nothing is named. A higher plan granting no more projects is never named."""
    assert COUNTED.raise_with("essentials", "P30D", "projects", 1) is None
    raw = _raw()
    raw["plans"][1]["allowances"]["projects"] = 3
    same = CountedResources(parse_catalog(raw))
    assert same.raise_with("essentials", "P1M", "projects", 1) is None


# --- events: accepted, refused naming the field ---------------------------------------------


def test_a_declared_event_is_accepted_and_its_key_bounded() -> None:
    assert _event("contact.created", {"contact_id": "c-1"}).data == {"contact_id": "c-1"}
    assert _event("project.deleted", {"project_id": "p" * 256}).type == "project.deleted"
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "missing_field"), ({"contact_id": None}, "missing_field"),
        ({"contact_id": ""}, "invalid_field"), ({"contact_id": "  "}, "invalid_field"),
        ({"contact_id": 12}, "invalid_field"), ({"contact_id": ["c-1"]}, "invalid_field"),
        ({"contact_id": "c" * 257}, "invalid_field")]
    for data, code in cases:
        with pytest.raises(InvalidEvent) as refused:
            _event("contact.created", data)
        assert (refused.value.code, refused.value.field) == (code, "data.contact_id"), data


def test_an_undeclared_type_stays_unknown() -> None:
    with pytest.raises(InvalidEvent) as refused:
        EventValidator().validate({"specversion": "1.0", "id": "e", "source": "s",
                                   "type": "contact.created", "subject": "acme",
                                   "time": "2026-03-10T10:00:00Z",
                                   "data": {"contact_id": "c-1"}})
    assert (refused.value.code, refused.value.field) == ("unknown_type", "type")


def test_a_type_a_meter_also_declares_passes_both_checks() -> None:
    def meter(data: Any) -> None:
        if "size" not in data:
            raise InvalidEvent("missing_field", "data.size", "is required by meter 'm'")

    both = EventValidator(COUNTED.checkers({"project.created": meter}))
    body = {"specversion": "1.0", "id": "e", "source": "s", "type": "project.created",
            "subject": "acme", "time": "2026-03-10T10:00:00Z", "data": {"project_id": "p"}}
    with pytest.raises(InvalidEvent) as refused:
        both.validate(body)
    assert refused.value.field == "data.size"
    body["data"] = {"size": 3}
    with pytest.raises(InvalidEvent) as refused:
        both.validate(body)
    assert refused.value.field == "data.project_id"


# --- the live count: a set of ids ------------------------------------------------------------


def test_created_and_deleted_add_and_remove_the_id_in_the_resource_set() -> None:
    key = keys.resource_key("acme", "contacts")
    assert key == "live:acme:resource:contacts"
    assert live_ops(_event("contact.created", {"contact_id": "c-1"}), UTC_ZONE,
                    COUNTED.events) == [["member", key, "c-1", 1]]
    assert live_ops(_event("contact.deleted", {"contact_id": "c-1"}), UTC_ZONE,
                    COUNTED.events) == [["member", key, "c-1", 0]]
    # Without the declaration (a metering that does not know it) nothing is counted.
    assert live_ops(_event("contact.created", {"contact_id": "c-1"}), UTC_ZONE) == []


def test_replays_and_strays_never_double_count_nor_go_negative() -> None:
    """c-1 created twice (a replay under another event id) counts once; deleting c-2, never
    created, changes nothing; c-1 deleted twice leaves 0, not −1; created again, 1."""
    state = LiveState()
    key = keys.resource_key("acme", "contacts")
    steps = [("contact.created", "c-1", {"c-1"}), ("contact.created", "c-1", {"c-1"}),
             ("contact.deleted", "c-2", {"c-1"}), ("contact.deleted", "c-1", set()),
             ("contact.deleted", "c-1", set()), ("contact.created", "c-1", {"c-1"})]
    for event_type, contact, expected in steps:
        state.apply(live_ops(_event(event_type, {"contact_id": contact}), UTC_ZONE,
                             COUNTED.events))
        assert state.members[key] == expected


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=30))
def test_the_set_holds_the_ids_whose_last_event_created_them(
        stream: list[tuple[bool, str]]) -> None:
    """What the consumer leaves (SADD/SREM in stream order) is what the rebuild computes
    (the ids whose last event, in that order, is a creation)."""
    state = LiveState()
    last: dict[str, bool] = {}
    for created, contact in stream:
        kind = "contact.created" if created else "contact.deleted"
        state.apply(live_ops(_event(kind, {"contact_id": contact}), UTC_ZONE, COUNTED.events))
        last[contact] = created
    key = keys.resource_key("acme", "contacts")
    assert state.members.get(key, set()) == {c for c, created in last.items() if created}


# --- the check's decision --------------------------------------------------------------------


@pytest.mark.parametrize(("used", "quantity", "expected"), [
    # Essentials: 2,000 contacts. The 2,000th is the plan's; the 2,001st is refused and
    # contacts-1000 named (1,000 ≥ the 1 missing).
    (1999, 1, ("covered", "plan", None, 2000, 1999, 1, None)),
    (2000, 1, ("denied", "limit_reached", None, 2000, 2000, 0, "contacts-1000")),
    # 1,500 more from 1,000: 500 missing → still contacts-1000; 2,000 more: 1,000 missing.
    (1000, 1500, ("denied", "limit_reached", None, 2000, 1000, 1000, "contacts-1000")),
    (1000, 2001, ("denied", "limit_reached", None, 2000, 1000, 1000, "contacts-5000")),
])
def test_contacts_without_a_pack_stop_at_the_plan(used: int, quantity: int,
                                                  expected: tuple[Any, ...]) -> None:
    assert _numbers(resource_decision(_tenant(), INDEX, "contacts", used, quantity)) == expected


@pytest.mark.parametrize(("used", "quantity", "expected"), [
    # lot-a (2 × 1,000, bought on the 4th) then lot-b (1 × 1,000, the 9th): limit
    # 2,000 + 2,000 + 1,000 = 5,000. Contacts 2,001–4,000 come from lot-a, 4,001–5,000
    # from lot-b; the expired lot-x and lot-y of another resource grant nothing.
    (2000, 1, ("covered", "resource_pack", "lot-a", 5000, 2000, 3000, None)),
    (3999, 1, ("covered", "resource_pack", "lot-a", 5000, 3999, 1001, None)),
    (4000, 1, ("covered", "resource_pack", "lot-b", 5000, 4000, 1000, None)),
    (4000, 1000, ("covered", "resource_pack", "lot-b", 5000, 4000, 1000, None)),
    (4000, 1001, ("denied", "limit_reached", None, 5000, 4000, 1000, "contacts-1000")),
])
def test_contact_packs_raise_the_limit_in_the_order_bought(
        used: int, quantity: int, expected: tuple[Any, ...]) -> None:
    state = _tenant(_lot("lot-b", "contacts-1000", units=1000, day=9),
                    _lot("lot-a", "contacts-1000", quantity=2, units=1000, day=4),
                    _lot("lot-x", "contacts-5000", units=5000, state="expired"),
                    _lot("lot-y", "sub-account"))
    assert _numbers(resource_decision(state, INDEX, "contacts", used, quantity)) == expected


def test_a_cancelled_lot_still_counts_until_it_expires() -> None:
    state = _tenant(_lot("lot-c", "contacts-1000", units=1000, state="cancelled",
                         ends_at="2026-04-01T00:00:00Z"))
    assert _numbers(resource_decision(state, INDEX, "contacts", 2500, 1)) == (
        "covered", "resource_pack", "lot-c", 3000, 2500, 500, None)


def test_secondary_accounts_are_all_bought_on_essentials() -> None:
    """Allowance 0: the first is refused naming sub-account; one lot covers one; the second
    is refused again; a second lot covers it."""
    assert _numbers(resource_decision(_tenant(), INDEX, "sub_accounts", 0, 1)) == (
        "denied", "limit_reached", None, 0, 0, 0, "sub-account")
    one = _tenant(_lot("lot-1", "sub-account"))
    assert _numbers(resource_decision(one, INDEX, "sub_accounts", 0, 1)) == (
        "covered", "resource_pack", "lot-1", 1, 0, 1, None)
    assert _numbers(resource_decision(one, INDEX, "sub_accounts", 1, 1)) == (
        "denied", "limit_reached", None, 1, 1, 0, "sub-account")
    two = _tenant(_lot("lot-1", "sub-account"), _lot("lot-2", "sub-account", day=6))
    assert _numbers(resource_decision(two, INDEX, "sub_accounts", 1, 1)) == (
        "covered", "resource_pack", "lot-2", 2, 1, 1, None)


def test_a_resource_without_packs_names_the_higher_plan() -> None:
    assert _numbers(resource_decision(_tenant(), INDEX, "projects", 3, 1)) == (
        "denied", "limit_reached", None, 3, 3, 0, "professional")
    assert _numbers(resource_decision(_tenant(plan="professional"), INDEX, "projects", 9, 1)
                    ) == ("covered", "plan", None, 10, 9, 1, None)


def test_the_answer_names_the_item_only_when_the_limit_is_reached() -> None:
    denied = resource_decision(_tenant(), INDEX, "contacts", 2000, 1).public()
    assert denied == {"decision": "denied", "reason": "limit_reached", "covered_by": None,
                      "limit": 2000, "used": 2000, "remaining": 0,
                      "raise_with": "contacts-1000"}
    assert "raise_with" not in resource_decision(_tenant(), INDEX, "contacts", 0, 1).public()
    nothing = resource_decision(_tenant(plan="professional"), INDEX, "projects", 10, 1)
    assert nothing.public()["raise_with"] is None


def test_companies_keep_their_answers_and_name_the_pack_when_full() -> None:
    """R7.3 unchanged (the plan's 1, reason company_pack), and R7.4's named pack: 1 missing
    → companies-1, 3 missing → companies-5."""
    state = _tenant(_lot("lot-c", "companies-5", units=5, kind="companies"))
    assert _numbers(company_decision(state, INDEX, 0, 1)) == (
        "covered", "plan", None, 6, 0, 6, None)
    assert _numbers(company_decision(state, INDEX, 1, 1)) == (
        "covered", "company_pack", "lot-c", 6, 1, 5, None)
    assert _numbers(company_decision(state, INDEX, 6, 1)) == (
        "denied", "limit_reached", None, 6, 6, 0, "companies-1")
    assert _numbers(company_decision(state, INDEX, 6, 3)) == (
        "denied", "limit_reached", None, 6, 6, 0, "companies-5")
