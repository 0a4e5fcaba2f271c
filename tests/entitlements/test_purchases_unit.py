"""What a purchase does (services/entitlements/purchases.py), as pure functions of (tenant
document, catalog, request, now): prorated packs (R4.2), previews (R4.3), plan changes (R4.2,
R4.5), one-time items (R4.6), single-instance packs (R4.7), requests (R5.2), trials (R5.3),
support contracts (R8.2, R8.5). Every amount is worked out by hand in the docstrings.

Unless a test says otherwise, the tenant is monthly (P1M) in Paris, anchored on 2026-03-01:
the period is 1–31 March (31 days), and "now" is 20 March 10:00 Paris (09:00Z), leaving
12 days (20 March included, 1 April excluded)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.entitlements.decisions import CatalogIndex
from services.entitlements.lifecycle import EVENT_FIELD, Effects, Outcome
from services.entitlements.models import PurchaseRequest
from services.entitlements.purchases import PurchaseRules
from shared.catalog import Catalog, Pack, Plan
from shared.errors import AppError, Conflict, Forbidden, ValidationFailed
from shared.subscription import TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 20, 9, tzinfo=UTC)
ACTOR = {"user_id": "u-owner", "role": "owner", "api_key": None}


def _prices(monthly: str, yearly: str) -> dict[str, str]:
    return {"P1M": monthly, "P30D": monthly, "P1Y": yearly}


def _bank(hours: str, level_3: bool) -> dict[str, Any]:
    return {"type": "bank", "hours_per_year": hours, "overage_price_per_hour": "90.00",
            "covers_level_3": level_3}


CATALOG = Catalog.model_validate({
    "version": "t", "currency": "EUR",
    "modules": [{"id": "crm", "extra_users": "bill", "extra_user_price": {"P1M": "15.00"}},
                {"id": "support", "extra_users": "deny", "support_price_per_hour": "120.00"}],
    "plans": [
        {"id": "essentials", "rank": 1, "modules": ["crm"], "price": _prices("49.00", "490.00"),
         "companies": 1, "contacts": 100},
        {"id": "professional", "rank": 2, "modules": ["crm"],
         "price": _prices("99.00", "990.00"), "companies": 3, "contacts": 100,
         "features": ["ai_assist"]},
        {"id": "enterprise", "rank": 3, "modules": ["crm"],
         "price": _prices("149.00", "1490.00"), "companies": 9, "contacts": 100,
         "features": ["ai_assist"]}],
    "packs": [
        {"id": "seats-crm", "kind": "seats", "module": "crm",
         "price": {"P1M": "10.00", "P30D": "24.00", "P1Y": "100.00"}},
        {"id": "analytics", "kind": "feature", "feature": "analytics",
         "price": _prices("30.00", "300.00"), "single_instance": True, "trial_days": 14},
        {"id": "analytics-pro", "kind": "feature", "feature": "analytics",
         "price": _prices("45.00", "450.00"), "single_instance": True},
        {"id": "ai-assist", "kind": "feature", "feature": "ai_assist",
         "price": _prices("25.00", "250.00"), "single_instance": True, "trial_days": 14},
        {"id": "parallel-events", "kind": "feature", "feature": "parallel_events",
         "price": _prices("20.00", "200.00")},
        {"id": "archive", "kind": "feature", "feature": "archive", "price": {"P1Y": "120.00"}},
        {"id": "account-rename", "kind": "one_time", "price": {"once": "15.00"}},
        {"id": "vip", "kind": "support", "module": "support", "price": {"P1Y": "680.00"},
         "single_instance": True, "support": _bank("10", False)},
        {"id": "vip-diamond", "kind": "support", "module": "support",
         "price": {"P1Y": "1450.00"}, "single_instance": True,
         "eligible_plans": ["professional"], "support": _bank("20", True)},
        {"id": "orangecare", "kind": "support", "module": "support",
         "price": {"P1Y": "120.00"}, "single_instance": True,
         "support": {"type": "daily", "minutes_per_user_per_day": 30, "auto_renew": True,
                     "overage_price_per_hour": "90.00"}}]})
RULES = PurchaseRules(CATALOG, CatalogIndex(CATALOG), max_quantity=50)


def _tenant(*lots: dict[str, Any], **fields: Any) -> TenantState:
    return tenant_document(*lots, **fields)


def _lot(lot_id: str, item: str, kind: str = "feature", **fields: Any) -> dict[str, Any]:
    lot = {"id": lot_id, "item": item, "kind": kind, "quantity": 1, "units": 1,
           "state": "active", "bought_at": "2026-03-05T09:00:00Z"}
    lot.update(fields)
    return lot


def _body(item: str, action: str = "buy", quantity: int | None = None, confirm: bool = False,
          role: str = "owner") -> PurchaseRequest:
    return PurchaseRequest.model_validate({
        "actor": {"user_id": f"u-{role}", "role": role}, "action": action, "item": item,
        "quantity": quantity, "confirm": confirm})


def _decide(state: TenantState, body: PurchaseRequest, now: datetime = NOW
            ) -> tuple[Outcome, Effects]:
    assert body.item is not None  # the single-item form
    item = RULES.item(body.item)
    effects = Effects()
    outcome = RULES.decide(state, body, item, RULES.quantity(body, item), now, effects, ACTOR)
    return outcome, effects


def _refused(state: TenantState, body: PurchaseRequest, now: datetime = NOW) -> AppError:
    with pytest.raises(AppError) as refused:
        _decide(state, body, now)
    return refused.value


def _events(effects: Effects) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for _, _, raw in effects.events]


def _charge(outcome: Outcome) -> tuple[str, str, dict[str, str] | None]:
    (charge,) = outcome.answer["charges"]
    return charge["kind"], charge["amount"], charge["period"]


# --- the item and its quantity -------------------------------------------------------------


def test_an_item_is_a_plan_or_a_pack_and_an_unknown_one_is_refused() -> None:
    assert isinstance(RULES.item("professional"), Plan)
    assert isinstance(RULES.item("seats-crm"), Pack)
    with pytest.raises(ValidationFailed) as refused:
        RULES.item("no-such-item")
    assert (refused.value.field, refused.value.error_code) == ("item", "unknown_item")


@pytest.mark.parametrize(("item", "quantity", "expected"), [
    ("seats-crm", None, 1),  # no quantity: one
    ("seats-crm", 50, 50),  # exactly the most per purchase
    ("professional", 1, 1),
    ("analytics", 1, 1),
    ("orangecare", 3, 3),  # a daily plan is bought per subscribed user (R8.3)
])
def test_accepted_quantities(item: str, quantity: int | None, expected: int) -> None:
    assert RULES.quantity(_body(item, quantity=quantity), RULES.item(item)) == expected


@pytest.mark.parametrize(("item", "quantity", "message"), [
    ("seats-crm", 0, "at least 1"),
    ("seats-crm", -3, "at least 1"),
    ("seats-crm", 51, "at most 50"),  # one past the most per purchase
    ("professional", 2, "a plan is bought once"),
    ("analytics", 2, "single-instance (R4.7)"),
    ("vip", 2, "single-instance (R4.7)"),  # a bank plan is one contract
])
def test_refused_quantities_name_the_field(item: str, quantity: int, message: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        RULES.quantity(_body(item, quantity=quantity), RULES.item(item))
    assert refused.value.field == "quantity"
    assert message in refused.value.message


# --- recurring packs: prorated now (R4.2), previewed first (R4.3) --------------------------


@pytest.mark.parametrize(("now", "amount", "days"), [
    (datetime(2026, 3, 1, 9, tzinfo=UTC), "30.00", "31/31"),  # first day: the full price
    (NOW, "11.61", "12/31"),  # R4.2's example: 30.00 × 12/31 = 11.6129… → 11.61
    (datetime(2026, 3, 19, 23, 30, tzinfo=UTC), "11.61", "12/31"),  # 20 March 00:30 Paris
    (datetime(2026, 3, 31, 9, tzinfo=UTC), "0.97", "1/31"),  # 30.00 × 1/31 = 0.9677… → 0.97
])
def test_a_pack_is_prorated_to_the_period_end_in_local_days(now: datetime, amount: str,
                                                            days: str) -> None:
    """analytics at 30.00 a month, period 1–31 March. 19 March 23:30Z is already 20 March
    in Paris (UTC+1): 12 days, not the 13 of the UTC date (which would give 12.58)."""
    outcome, effects = _decide(_tenant(), _body("analytics"), now)
    start = now.astimezone(_tenant().zone).date().isoformat()
    assert _charge(outcome) == ("proration", amount, {"from": start, "to": "2026-04-01"})
    assert outcome.answer["charges"][0]["description"] == f"1 × analytics prorated {days} days"
    assert outcome.answer["next_cycle_amount"] == "30.00"  # the renewal: the full price
    assert (outcome.answer["status"], outcome.state, effects.events) == ("preview", None, [])


def test_a_lot_of_several_packs_is_rounded_once() -> None:
    """7 × seats-crm at 10.00: 70.00 × 12/31 = 27.0967… → 27.10 (7 × 3.87 rounded first
    would give 27.09); the next cycle charges 70.00."""
    outcome, _ = _decide(_tenant(), _body("seats-crm", quantity=7))
    assert _charge(outcome)[1] == "27.10"
    assert outcome.answer["charges"][0]["unit_price"] == "10.00"
    assert outcome.answer["next_cycle_amount"] == "70.00"


def test_a_30_day_cycle_prorates_over_its_30_days() -> None:
    """P30D from 1 March: period 1–30 March (ends 31 March, excluded), 30 days. Bought on
    day 12 (12 March), 19 days are left: 3 × 24.00 = 72.00 × 19/30 = 45.60 (one seat would
    be 24.00 × 19/30 = 15.20); next cycle 72.00."""
    state = _tenant(cycle="P30D")
    outcome, _ = _decide(state, _body("seats-crm", quantity=3),
                         datetime(2026, 3, 12, 9, tzinfo=UTC))
    assert _charge(outcome) == ("proration", "45.60", {"from": "2026-03-12", "to": "2026-03-31"})
    assert outcome.answer["next_cycle_amount"] == "72.00"
    one, _ = _decide(state, _body("seats-crm"), datetime(2026, 3, 12, 9, tzinfo=UTC))
    assert _charge(one)[1] == "15.20"


def test_a_confirmed_pack_adds_one_lot_and_records_the_purchase() -> None:
    """R4.4: the quantity bought is one lot; the event carries the charge (R4.9, R9.2)."""
    state = _tenant()
    outcome, effects = _decide(state, _body("seats-crm", quantity=3, confirm=True))
    assert outcome.state is state
    assert outcome.status_code == 201
    (lot,) = state.lots
    assert (lot.item, lot.kind, lot.quantity, lot.units, lot.state, lot.bought_at,
            lot.unit_price) == ("seats-crm", "seats", 3, 1, "active", NOW, Decimal("10.00"))
    assert outcome.answer["status"] == "confirmed"
    assert outcome.answer["lot"]["id"] == lot.id
    (event,) = _events(effects)
    assert event["type"] == "purchase.confirmed"
    assert outcome.answer[EVENT_FIELD] == event["id"]
    data = event["data"]
    assert (data["lot"], data["quantity"], data["next_cycle_amount"]) == (lot.id, 3, "30.00")
    assert [c["amount"] for c in data["charges"]] == ["11.61"]  # 30.00 × 12/31
    assert data["period"] == {"from": "2026-03-01", "to": "2026-04-01"}


def test_buying_a_pack_on_trial_converts_the_trial() -> None:
    """R5.3: the trial lot ends now (expired) and the bought lot takes over."""
    state = _tenant(_lot("lot-t", "analytics", state="trialing", trial=True,
                         ends_at="2026-03-18T23:00:00Z"))
    outcome, effects = _decide(state, _body("analytics", confirm=True))
    trial, bought = state.lots
    assert (trial.state, trial.ends_at) == ("expired", NOW)
    assert (bought.state, bought.trial) == ("active", False)
    assert [e["type"] for e in _events(effects)] == ["trial.converted", "purchase.confirmed"]
    assert _charge(outcome)[1] == "11.61"


def test_a_one_time_item_is_charged_in_full_and_makes_no_lot() -> None:
    """R4.6: 2 × account-rename at 15.00 = 30.00 whatever the day; no period, no renewal."""
    state = _tenant()
    outcome, effects = _decide(state, _body("account-rename", quantity=2, confirm=True))
    assert _charge(outcome) == ("one_time", "30.00", None)
    assert outcome.answer["next_cycle_amount"] is None
    assert (outcome.answer["lot"], state.lots) == (None, [])
    (event,) = _events(effects)
    assert (event["type"], event["data"]["lot"]) == ("purchase.confirmed", None)


# --- single-instance packs (R4.7) ----------------------------------------------------------


@pytest.mark.parametrize(("lots", "plan", "item", "code"), [
    ([_lot("lot-a", "analytics")], "essentials", "analytics", "already_owned"),
    ([_lot("lot-a", "analytics", state="cancelled", ends_at="2026-03-31T22:00:00Z")],
     "essentials", "analytics", "already_owned"),  # cancelled: still granting until 1 April
    ([_lot("lot-a", "analytics")], "essentials", "analytics-pro", "already_owned"),
    ([], "professional", "ai-assist", "already_included"),  # professional has ai_assist
])
def test_a_single_instance_feature_held_or_included_is_not_sold_again(
        lots: list[dict[str, Any]], plan: str, item: str, code: str) -> None:
    """analytics-pro grants the same feature as analytics, so owning either blocks both."""
    refused = _refused(_tenant(*lots, plan=plan), _body(item, confirm=True))
    assert isinstance(refused, Conflict)
    assert (refused.field, refused.error_code) == ("item", code)
    assert "(R4.7)" in refused.message


def test_a_single_instance_pack_whose_lot_expired_can_be_bought_again() -> None:
    state = _tenant(_lot("lot-old", "analytics", state="expired",
                         ends_at="2026-03-10T23:00:00Z"))
    outcome, _ = _decide(state, _body("analytics", confirm=True))
    assert outcome.answer["status"] == "confirmed"
    assert [lot.state for lot in state.lots] == ["expired", "active"]


def test_packs_that_are_not_single_instance_make_a_new_lot_each_time() -> None:
    state = _tenant()
    for _ in range(2):
        _decide(state, _body("parallel-events", confirm=True))
    assert [lot.item for lot in state.lots] == ["parallel-events", "parallel-events"]
    assert state.lots[0].id != state.lots[1].id


# --- free trials (R5.3) --------------------------------------------------------------------


def test_a_trial_grants_the_pack_free_for_its_days_once() -> None:
    """analytics has 14 trial days: from 20 March it ends at local midnight of 3 April,
    Paris being on summer time (UTC+2) by then: 2026-04-02T22:00Z. Nothing is charged."""
    ends = datetime(2026, 4, 2, 22, tzinfo=UTC)
    state = _tenant()
    preview, _ = _decide(state, _body("analytics", action="trial"))
    assert (preview.state, preview.answer["charges"]) == (None, [])
    assert datetime.fromisoformat(preview.answer["effective_at"]) == ends
    outcome, effects = _decide(state, _body("analytics", action="trial", confirm=True))
    assert (outcome.answer["status"], outcome.status_code) == ("trialing", 201)
    (lot,) = state.lots
    assert (lot.state, lot.trial, lot.ends_at, lot.quantity) == ("trialing", True, ends, 1)
    assert state.trials_used == ["analytics"]
    assert [e["type"] for e in _events(effects)] == ["trial.started"]
    lot.state = "expired"  # the trial ended; it cannot be tried again
    assert _refused(state, _body("analytics", action="trial")).error_code == "trial_used"


@pytest.mark.parametrize(("item", "plan", "code"), [
    ("parallel-events", "essentials", "no_trial"),  # the catalog gives it no trial
    ("account-rename", "essentials", "no_trial"),  # a one-time item
    ("professional", "essentials", "no_trial"),  # a plan
    ("vip", "essentials", "no_trial"),  # a support plan
    ("ai-assist", "professional", "already_included"),  # the plan has ai_assist (R4.7)
])
def test_trials_that_cannot_start(item: str, plan: str, code: str) -> None:
    refused = _refused(_tenant(plan=plan, cycle="P1Y"), _body(item, action="trial"))
    assert isinstance(refused, Conflict)
    assert refused.error_code == code


def test_no_trial_of_a_single_instance_pack_already_owned() -> None:
    state = _tenant(_lot("lot-a", "analytics"))
    assert _refused(state, _body("analytics", action="trial")).error_code == "already_owned"


# --- plan changes (R4.2, R4.5) -------------------------------------------------------------


def test_an_upgrade_charges_the_prorated_price_difference_rounded_once() -> None:
    """essentials 49.00 → professional 99.00 on 10 March: 22 of 31 days left,
    50.00 × 22/31 = 35.4838… → 35.48 (prorating each plan first, 70.26 − 34.77, would give
    35.49). The next cycle charges professional's 99.00."""
    state = _tenant()
    outcome, effects = _decide(state, _body("professional", confirm=True),
                               datetime(2026, 3, 10, 9, tzinfo=UTC))
    assert _charge(outcome) == ("proration", "35.48", {"from": "2026-03-10", "to": "2026-04-01"})
    charge = outcome.answer["charges"][0]
    assert (charge["unit_price"], charge["item"]) == ("50.00", "professional")
    assert outcome.answer["next_cycle_amount"] == "99.00"
    assert (outcome.answer["status"], outcome.status_code) == ("confirmed", 201)
    assert state.plan == "professional"
    assert [(c.previous, c.at) for c in state.plan_changes] == [
        ("essentials", datetime(2026, 3, 10, 9, tzinfo=UTC))]
    assert [(e["type"], e["data"]["from"]) for e in _events(effects)] == [
        ("purchase.confirmed", "essentials"), ("plan.changed", "essentials")]


def test_an_upgrade_drops_a_scheduled_downgrade() -> None:
    """professional (99.00) with a downgrade to essentials scheduled, upgraded to enterprise
    (149.00) on 20 March: 50.00 × 12/31 = 19.3548… → 19.35, and the downgrade is gone."""
    state = _tenant(plan="professional", pending_plan="essentials",
                    pending_plan_at="2026-03-31T22:00:00Z")
    outcome, _ = _decide(state, _body("enterprise", confirm=True))
    assert _charge(outcome)[1] == "19.35"
    assert (state.plan, state.pending_plan, state.pending_plan_at) == ("enterprise", None,
                                                                       None)


def test_a_downgrade_is_scheduled_for_the_period_end_without_charge() -> None:
    """R4.5: professional → essentials takes effect at local midnight of 1 April, Paris on
    summer time: 2026-03-31T22:00Z; nothing is charged or refunded now, 49.00 next cycle."""
    at = datetime(2026, 3, 31, 22, tzinfo=UTC)
    state = _tenant(plan="professional")
    preview, _ = _decide(state, _body("essentials"))
    assert (preview.state, preview.answer["charges"]) == (None, [])
    assert datetime.fromisoformat(preview.answer["effective_at"]) == at
    outcome, effects = _decide(state, _body("essentials", confirm=True))
    assert (outcome.answer["status"], outcome.status_code) == ("scheduled", 202)
    assert outcome.answer["next_cycle_amount"] == "49.00"
    assert (state.plan, state.pending_plan, state.pending_plan_at) == (
        "professional", "essentials", at)
    assert [e["type"] for e in _events(effects)] == ["plan.downgrade_scheduled"]


def test_choosing_the_current_plan_cancels_a_scheduled_downgrade_or_is_refused() -> None:
    state = _tenant(plan="professional")
    refused = _refused(state, _body("professional", confirm=True))
    assert (refused.error_code, refused.field) == ("same_plan", "item")
    state = _tenant(plan="professional", pending_plan="essentials",
                    pending_plan_at="2026-03-31T22:00:00Z")
    outcome, effects = _decide(state, _body("professional", confirm=True))
    assert (outcome.answer["status"], outcome.answer["charges"]) == ("confirmed", [])
    assert (state.pending_plan, state.pending_plan_at) == (None, None)
    assert [e["type"] for e in _events(effects)] == ["plan.downgrade_cancelled"]


# --- what cannot be bought -----------------------------------------------------------------


@pytest.mark.parametrize(("fields", "now", "code"), [
    ({"status": "ended"}, NOW, "subscription_ended"),  # R4.1
    # Anchored on 1 April: 31 March 23:59 Paris (21:59Z) is still before it.
    ({"anchor": "2026-04-01", "status": "scheduled"}, datetime(2026, 3, 31, 21, 59, tzinfo=UTC),
     "not_started"),
])
def test_nothing_is_bought_outside_the_subscription(fields: dict[str, Any], now: datetime,
                                                    code: str) -> None:
    refused = _refused(_tenant(**fields), _body("seats-crm", confirm=True), now)
    assert isinstance(refused, Conflict)
    assert refused.error_code == code


def test_packs_are_sold_from_the_anchors_local_midnight() -> None:
    """Anchored on 1 April: 1 April 00:00 Paris is 2026-03-31T22:00Z, the first day of a
    30-day period (April), so the pack costs its full 30.00."""
    state = _tenant(anchor="2026-04-01", status="scheduled")
    outcome, _ = _decide(state, _body("analytics"), datetime(2026, 3, 31, 22, tzinfo=UTC))
    assert _charge(outcome) == ("proration", "30.00", {"from": "2026-04-01", "to": "2026-05-01"})


@pytest.mark.parametrize("action", ["buy", "quote"])
def test_a_support_plan_reserved_to_other_plans_is_refused(action: str) -> None:
    """R8.5: vip-diamond is sold to professional tenants only."""
    refused = _refused(_tenant(cycle="P1Y"), _body("vip-diamond", action=action))
    assert (refused.error_code, refused.field) == ("not_eligible", "item")


@pytest.mark.parametrize(("item", "cycle"), [("archive", "P1M"), ("vip", "P1M")])
def test_an_item_without_a_price_for_the_tenants_cycle_is_refused(item: str,
                                                                  cycle: str) -> None:
    """archive and vip are priced for P1Y only: a monthly tenant cannot buy them."""
    refused = _refused(_tenant(cycle=cycle), _body(item))
    assert isinstance(refused, ValidationFailed)
    assert (refused.error_code, refused.field) == ("no_price_for_cycle", "item")


@pytest.mark.parametrize("item", ["professional", "seats-crm", "account-rename"])
def test_only_support_plans_are_renewed_by_hand(item: str) -> None:
    refused = _refused(_tenant(), _body(item, action="renew"))
    assert refused.error_code == "not_renewable"


def test_a_bank_support_plan_is_a_year_charged_in_full() -> None:
    """R8.2: vip at 680.00 a year for a yearly tenant, bought on 20 March: the contract runs
    2026-03-20 to 2027-03-20, charged 680.00 now, never prorated to the subscription's
    period; renewed on time it would cost 680.00 × 0.90 = 612.00 (R8.4)."""
    state = _tenant(cycle="P1Y")
    outcome, _ = _decide(state, _body("vip", confirm=True))
    assert _charge(outcome) == ("support_contract", "680.00",
                                {"from": "2026-03-20", "to": "2027-03-20"})
    assert outcome.answer["next_cycle_amount"] == "612.00"
    assert outcome.answer["contract"] == {"from": "2026-03-20", "to": "2027-03-20"}
    (lot,) = state.lots
    assert (lot.kind, lot.quantity, lot.contract_start, lot.contract_end) == (
        "support", 1, date(2026, 3, 20), date(2027, 3, 20))


# --- quotes and feature requests (R5.2) ----------------------------------------------------


@pytest.mark.parametrize(("action", "role", "event"), [
    ("quote", "owner", "quote.requested"),
    ("request_feature", "supervisor", "feature.requested"),
])
def test_a_request_notifies_the_owner_and_charges_nothing(action: str, role: str,
                                                          event: str) -> None:
    state = _tenant()
    outcome, effects = _decide(state, _body("analytics", action=action, role=role,
                                            confirm=True))
    assert (outcome.answer["status"], outcome.status_code) == ("requested", 202)
    assert (outcome.answer["charges"], state.lots) == ([], [])
    ((kind, data),) = [(e["type"], e["data"]) for e in _events(effects)]
    assert (kind, data["item"], data["quantity"], data["notify"]) == (
        event, "analytics", 1, "owner")


def test_an_admin_asks_for_a_quote_only_when_the_account_allows_it() -> None:
    """R5: admin → quote only if the account allows quotes; the refusal names the role."""
    refused = _refused(_tenant(), _body("professional", action="quote", role="admin"))
    assert isinstance(refused, Forbidden)
    assert (refused.field, refused.error_code) == ("actor.role", "role_forbidden")
    assert "role 'admin'" in refused.message
    allowed = _tenant(account_allows_quotes=True)
    outcome, _ = _decide(allowed, _body("professional", action="quote", role="admin",
                                        confirm=True))
    assert outcome.answer["status"] == "requested"


# --- previews change nothing (R4.3) --------------------------------------------------------


@pytest.mark.parametrize(("plan", "cycle", "item", "action"), [
    ("essentials", "P1M", "seats-crm", "buy"),
    ("essentials", "P1M", "account-rename", "buy"),
    ("essentials", "P1M", "analytics", "trial"),
    ("essentials", "P1M", "professional", "buy"),  # upgrade
    ("professional", "P1M", "essentials", "buy"),  # downgrade
    ("essentials", "P1Y", "vip", "buy"),
    ("essentials", "P1M", "analytics", "quote"),
])
def test_a_preview_changes_nothing(plan: str, cycle: str, item: str, action: str) -> None:
    """The document is untouched and no history entry nor event is made."""
    state = _tenant(_lot("lot-t", "ai-assist", state="trialing", trial=True,
                         ends_at="2026-03-24T23:00:00Z"), plan=plan, cycle=cycle)
    before = state.model_dump(mode="json")
    outcome, effects = _decide(state, _body(item, action=action))
    assert outcome.state is None
    assert outcome.answer["status"] == "preview"
    assert state.model_dump(mode="json") == before
    assert (effects.history, effects.events) == ([], [])
