"""Several items in one purchase (services/entitlements/baskets.py, R4.11), as pure
functions of (document, catalog, request, now). Every amount is worked out by hand.

The tenant is monthly (P1M) in Paris, anchored on 2026-03-01: the period is 1–31 March
(31 days), and "now" is 20 March 10:00 Paris (09:00Z), leaving 12 days (20 March included,
1 April excluded)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.entitlements.baskets import Baskets
from services.entitlements.decisions import CatalogIndex
from services.entitlements.lifecycle import EVENT_FIELD, Effects, Outcome
from services.entitlements.models import PurchaseRequest
from services.entitlements.purchases import PurchaseRules
from shared.catalog import Catalog
from shared.errors import AppError, Conflict, ValidationFailed
from shared.subscription import TenantState
from tests.builders import people_catalog, tenant_document

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 20, 9, tzinfo=UTC)
ACTOR = {"user_id": "u-owner", "role": "owner", "api_key": None}

CATALOG = Catalog.model_validate(people_catalog())
BASKETS = Baskets(PurchaseRules(CATALOG, CatalogIndex(CATALOG), max_quantity=50))


def _body(*items: tuple[str, int | None], confirm: bool = False, **fields: Any
          ) -> PurchaseRequest:
    body: dict[str, Any] = {"actor": {"user_id": "u-owner", "role": "owner"},
                            "items": [{"item": item, "quantity": quantity}
                                      for item, quantity in items],
                            "confirm": confirm}
    body.update(fields)
    return PurchaseRequest.model_validate(body)


def _decide(state: TenantState, body: PurchaseRequest) -> tuple[Outcome, Effects]:
    effects = Effects()
    return BASKETS.decide(state, body, BASKETS.lines(body), NOW, effects, ACTOR, None), effects


def _refused(state: TenantState, body: PurchaseRequest) -> AppError:
    with pytest.raises(AppError) as refused:
        _decide(state, body)
    return refused.value


# --- the lines of a request ----------------------------------------------------------------


def test_a_lone_item_is_one_line_at_index_0() -> None:
    body = PurchaseRequest.model_validate({"actor": {"user_id": "u-owner", "role": "owner"},
                                           "item": "seats-crm", "quantity": 3})
    [line] = BASKETS.lines(body)
    assert (line.index, line.item.id, line.quantity, line.per_licence) == (
        0, "seats-crm", 3, False)


@pytest.mark.parametrize(("fields", "field"), [
    ({"items": None}, "item"),  # neither form
    ({"item": "analytics"}, "items"),  # both forms
    ({"action": "quote"}, "items"),  # only a purchase carries several items
])
def test_exactly_one_form_of_a_purchase_is_accepted(fields: dict[str, Any],
                                                    field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        BASKETS.lines(_body(("seats-crm", 1), **fields))
    assert refused.value.field == field


def test_a_refused_item_names_its_index() -> None:
    with pytest.raises(ValidationFailed) as unknown:
        BASKETS.lines(_body(("seats-crm", 1), ("analytics", None), ("nothing", None)))
    assert unknown.value.field == "items.2.item"
    assert unknown.value.message.startswith("items.2: ")
    with pytest.raises(ValidationFailed) as quantity:
        BASKETS.lines(_body(("seats-crm", 51)))
    assert quantity.value.field == "items.0.quantity"


def test_one_plan_per_purchase() -> None:
    with pytest.raises(ValidationFailed) as refused:
        BASKETS.lines(_body(("business", None), ("seats-crm", 1), ("essentials", None)))
    assert refused.value.field == "items.2.item"


# --- deciding a basket ---------------------------------------------------------------------


def test_a_confirmed_basket_charges_each_pack_and_announces_one_purchase() -> None:
    """2 × seats-crm: 20.00 × 12/31 = 7.7419… → 7.74; analytics: 30.00 × 12/31 = 11.6129…
    → 11.61; the next cycle is 20.00 + 30.00 = 50.00. One `purchase.confirmed` carries both
    charges, so invoicing issues one invoice (R9.2)."""
    state = tenant_document()
    outcome, effects = _decide(state, _body(("seats-crm", 2), ("analytics", None),
                                            confirm=True))
    answer = outcome.answer
    assert (outcome.state, outcome.status_code, answer["status"]) == (state, 201, "confirmed")
    assert [(c["item"], c["amount"]) for c in answer["charges"]] == [
        ("seats-crm", "7.74"), ("analytics", "11.61")]
    assert answer["next_cycle_amount"] == "50.00"
    assert [lot.item for lot in state.lots] == ["seats-crm", "analytics"]
    [event] = [orjson.loads(raw) for _, _, raw in effects.events]
    assert event["type"] == "purchase.confirmed"
    assert answer[EVENT_FIELD] == event["id"]
    assert event["data"]["kind"] == "basket"
    assert [(i["item"], i["quantity"]) for i in event["data"]["items"]] == [
        ("seats-crm", 2), ("analytics", 1)]
    assert [c["amount"] for c in event["data"]["charges"]] == ["7.74", "11.61"]


def test_a_preview_decides_the_same_way_and_keeps_only_the_answer() -> None:
    """Upgrade 49.00 → 99.00: 50.00 × 12/31 = 19.3548… → 19.35; 2 × seats-hr (hr comes with
    business): 24.00 × 12/31 = 9.2903… → 9.29; next cycle 99.00 + 24.00 = 123.00."""
    outcome, effects = _decide(tenant_document(), _body(("seats-hr", 2),
                                                        ("business", None)))
    assert (outcome.state, outcome.answer["status"], outcome.answer["lots"]) == (
        None, "preview", [])
    assert [(c["item"], c["amount"]) for c in outcome.answer["charges"]] == [
        ("seats-hr", "9.29"), ("business", "19.35")]  # in the order of `items`
    assert outcome.answer["next_cycle_amount"] == "123.00"
    assert (effects.history, effects.events) == ([], [])


def test_the_plan_is_decided_first_so_packs_see_the_plan_bought() -> None:
    """analytics alone is sold to essentials; beside business, which includes it, it is
    refused although listed first (R4.7), naming its own index."""
    refused = _refused(tenant_document(), _body(("analytics", None), ("business", None),
                                                confirm=True))
    assert isinstance(refused, Conflict)
    assert (refused.field, refused.error_code) == ("items.0.item", "already_included")


@pytest.mark.parametrize(("item", "code"), [
    ("seats-hr", "moot_after_plan_change"),  # essentials has no hr: cancelled 1 April (R4.10)
    ("vip", "not_eligible"),  # sold to business only (R8.5)
])
def test_beside_a_downgrade_a_pack_is_for_the_plan_that_follows(item: str, code: str) -> None:
    refused = _refused(tenant_document(plan="business"),
                       _body(("essentials", None), (item, None), confirm=True))
    assert (refused.field, refused.error_code) == ("items.1.item", code)


def test_beside_a_downgrade_a_pack_it_keeps_is_bought_now() -> None:
    """business → essentials is scheduled (202 alone), but one seats-crm, bought now at
    10.00 × 12/31 = 3.8709… → 3.87, makes the basket a 201."""
    state = tenant_document(plan="business")
    outcome, _ = _decide(state, _body(("essentials", None), ("seats-crm", None),
                                      confirm=True))
    assert (outcome.status_code, outcome.answer["status"]) == (201, "confirmed")
    assert [c["amount"] for c in outcome.answer["charges"]] == ["3.87"]
    assert (state.plan, state.pending_plan) == ("business", "essentials")
