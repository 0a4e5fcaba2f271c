"""What a purchase does (R4.2–R4.7, R5, R8.2–R8.4), as pure functions of (tenant document,
catalog, request, now): which charges it makes, which lot it adds, which events it records.
No I/O: the service runs `decide` inside its one write path, which commits the outcome or
re-decides after a lost race, so everything here can be checked by hand.

A preview (R4.3) answers the same charges and changes nothing (`Outcome.state` is None).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.entitlements import support as sup
from services.entitlements.decisions import CatalogIndex
from services.entitlements.lifecycle import EVENT_FIELD, Effects, Outcome, current_period, zone_of
from services.entitlements.models import Charge, PeriodOut, PurchaseAnswer, PurchaseRequest, lot_out
from services.entitlements.plan_changes import PlanChange
from shared.billing.money import line_amount
from shared.billing.periods import Period, local_date, local_midnight
from shared.billing.proration import prorated_charge
from shared.billing.seats import licence_holders
from shared.catalog import ONCE, Catalog, Pack, Plan, UnknownCatalogItem
from shared.errors import Conflict, Forbidden, ValidationFailed
from shared.subscription import Lot, TenantState
from shared.times import utc_text

# Per module, the users holding access to it now (metering's live counters), R4.12.
LiveAccess = Mapping[str, Collection[str]]


def round_line(amount: Decimal, currency: str) -> Decimal:
    return line_amount(Decimal(1), amount, currency)


class PurchaseRules:
    def __init__(self, catalog: Catalog, index: CatalogIndex, max_quantity: int) -> None:
        self.catalog = catalog
        self.index = index
        self.max_quantity = max_quantity

    def item(self, item_id: str) -> Plan | Pack:
        try:
            return self.catalog.item(item_id)
        except UnknownCatalogItem:
            raise ValidationFailed(f"item: unknown plan or pack '{item_id}'",
                                   field="item", code="unknown_item") from None

    def quantity(self, body: PurchaseRequest, item: Plan | Pack) -> int:
        quantity = 1 if body.quantity is None else body.quantity
        if quantity <= 0:
            raise ValidationFailed("quantity: must be at least 1", field="quantity")
        if quantity > self.max_quantity:
            raise ValidationFailed(
                f"quantity: at most {self.max_quantity} per purchase",
                field="quantity")
        if isinstance(item, Plan) and quantity != 1:
            raise ValidationFailed("quantity: a plan is bought once", field="quantity")
        daily = isinstance(item, Pack) and item.support is not None \
            and item.support.type == "daily"  # R8.3: bought per subscribed user
        if isinstance(item, Pack) and item.single_instance and quantity != 1 and not daily:
            raise ValidationFailed(f"quantity: '{item.id}' is single-instance (R4.7)",
                                   field="quantity")
        if isinstance(item, Pack) and item.per == "licence" and quantity != 1:
            raise ValidationFailed(f"quantity: '{item.id}' is priced per licence; the "
                                   "licences are counted, not chosen (R4.12)", field="quantity")
        return quantity

    def decide(self, state: TenantState, body: PurchaseRequest, item: Plan | Pack,
               quantity: int, now: datetime, effects: Effects,
               actor: dict[str, Any] | None, access: LiveAccess | None = None) -> Outcome:
        """The outcome of one purchase request on `state` at `now` (raises when refused).
        `access`: who holds access to each module now, read by the caller from metering's
        live counters when a pack priced per licence is bought (R4.12)."""
        zone = zone_of(state)
        today = local_date(now, zone)
        if state.status == "ended":
            raise Conflict("the subscription has ended; nothing can be bought (R4.1)",
                           code="subscription_ended")
        if today < state.anchor:
            raise Conflict(f"the subscription starts on {state.anchor}", code="not_started")
        period = current_period(state, today)
        if isinstance(item, Pack) and item.eligible_plans is not None \
                and state.plan not in item.eligible_plans:
            raise Conflict(f"'{item.id}' is only sold to plans {list(item.eligible_plans)} "
                           "(R8.5)", field="item", code="not_eligible")
        if body.action in ("quote", "request_feature"):
            return self._request(state, body, item, quantity, now, effects, actor)
        if isinstance(item, Plan):
            if body.action == "trial":
                raise Conflict("a plan has no free trial (R5.3)", field="item", code="no_trial")
            if body.action == "renew":
                raise Conflict("only support plans are renewed by hand (R8.4)",
                               field="action", code="not_renewable")
            return self._change_plan(state, body, item, period, today, now, effects, actor)
        if item.kind == "support" or body.action == "renew":
            return self._support(state, body, item, now, today, effects, actor)
        price_key = ONCE if item.kind == "one_time" else state.cycle
        if price_key not in item.price:
            raise ValidationFailed(f"item: '{item.id}' has no price for the cycle {price_key}",
                                   field="item", code="no_price_for_cycle")
        unit_price = item.price[price_key]
        if body.action == "trial":
            return self._trial(state, body, item, now, today, effects, actor)
        licences = self._licences(state, item, access)
        return self._buy_pack(state, body, item, quantity, unit_price, period, now, effects,
                              actor, licences)

    def _licences(self, state: TenantState, pack: Pack, access: LiveAccess | None
                  ) -> int | None:
        """R4.12: the licences a pack priced per licence is bought for, under the plan in
        force (a basket's upgrade decided first counts its modules); None for other packs."""
        if pack.per != "licence":
            return None
        if access is None:  # the caller reads the live counters before deciding
            raise ValueError(f"'{pack.id}' is priced per licence: the live access is needed")
        return len(licence_holders(access, self.catalog.modules_of_plan(state.plan),
                                   state.admin_user))

    def _buy_pack(self, state: TenantState, body: PurchaseRequest, item: Pack, quantity: int,
                  unit_price: Decimal, period: Period, now: datetime, effects: Effects,
                  actor: dict[str, Any] | None, licences: int | None = None) -> Outcome:
        """A recurring pack prorated to the period end (R4.2), or a one-time pack (R4.6);
        one priced per licence costs price × `licences` instead of × quantity (R4.12)."""
        today = local_date(now, zone_of(state))
        self._single_instance(state, item)
        currency = state.currency
        billed = quantity if licences is None else licences
        charges: list[Charge] = []
        if item.kind == "one_time":  # R4.6: charged in full, never renewed
            amount = line_amount(Decimal(quantity), unit_price, currency)
            charges.append(Charge(kind="one_time", description=f"{quantity} × {item.id}",
                                  amount=amount, period=None, item=item.id, quantity=quantity,
                                  unit_price=unit_price))
            next_cycle = None
        else:  # R4.2: price × remaining_days / period_days, rounded once
            amount = prorated_charge(unit_price * billed, period, today, currency)
            what = f"{quantity} × {item.id}" if licences is None \
                else f"{item.id} for {licences} licence(s)"
            charges.append(Charge(
                kind="proration", item=item.id, quantity=billed, unit_price=unit_price,
                description=f"{what} prorated {(period.end - today).days}/"
                            f"{period.days} days", amount=amount,
                period=PeriodOut.model_validate({"from": today, "to": period.end})))
            next_cycle = round_line(unit_price * billed, currency)
        if not body.confirm:  # R4.3: the preview changes nothing
            return Outcome(None, PurchaseAnswer(status="preview", lot=None, charges=charges,
                                                next_cycle_amount=next_cycle).public())
        lot = None
        if item.kind != "one_time":
            for trial in state.lots:  # buying a pack on trial keeps it (R5.3)
                if trial.item == item.id and trial.state == "trialing":
                    trial.state, trial.ends_at = "expired", now
                    effects.record(state.id, "trial.converted", now,
                                   {"lot": trial.id, "item": trial.item}, actor)
            lot = Lot(id=f"lot-{secrets.token_hex(8)}", item=item.id, kind=item.kind,
                      quantity=quantity, units=item.units, state="active", bought_at=now,
                      unit_price=unit_price, actor=body.actor, licences=licences)
            state.lots.append(lot)
        answer = PurchaseAnswer(status="confirmed", lot=None if lot is None else lot_out(lot),
                                charges=charges, next_cycle_amount=next_cycle)
        event_id = effects.record(state.id, "purchase.confirmed", now, {
            "item": item.id, "kind": item.kind, "quantity": quantity,
            "lot": None if lot is None else lot.id, "currency": currency,
            "charges": [c.model_dump(mode="json", by_alias=True) for c in charges],
            "next_cycle_amount": None if next_cycle is None else format(next_cycle, "f"),
            "period": period.public(),
            **({} if licences is None else {"licences": licences})}, actor)
        return Outcome(state, {**answer.public(), EVENT_FIELD: event_id}, status_code=201)

    def _support(self, state: TenantState, body: PurchaseRequest, item: Pack, now: datetime,
                 today: date, effects: Effects, actor: dict[str, Any] | None) -> Outcome:
        """R8.2–R8.4: a one-year contract charged in full now, or its renewal."""
        if item.kind != "support":
            raise Conflict(f"only support plans are renewed by hand; '{item.id}' renews with "
                           "the subscription (R8.4)", field="action", code="not_renewable")
        if body.action == "trial":
            raise Conflict(f"'{item.id}' has no free trial (R5.3)", field="item",
                           code="no_trial")
        bought = sup.new_contract(state, item, body.action, body.quantity, today, now,
                                  zone_of(state), body.actor)
        charges = [bought.charge]
        if not body.confirm:  # R4.3
            return Outcome(None, PurchaseAnswer(status="preview", lot=None, charges=charges,
                                                next_cycle_amount=bought.next_cycle).public())
        state.lots.append(bought.lot)
        contract = {"from": bought.lot.contract_start.isoformat()
                    if bought.lot.contract_start else None,
                    "to": bought.lot.contract_end.isoformat()
                    if bought.lot.contract_end else None}
        event_id = effects.record(state.id, "purchase.confirmed", now, {
            "item": item.id, "kind": item.kind, "quantity": bought.lot.quantity,
            "lot": bought.lot.id, "currency": state.currency,
            "charges": [c.model_dump(mode="json", by_alias=True) for c in charges],
            "next_cycle_amount": None if bought.next_cycle is None
            else format(bought.next_cycle, "f"),
            "period": contract, "contract": contract, "renews": bought.lot.renews,
            "carry_over": bought.lot.carry_over}, actor)
        answer = PurchaseAnswer(status="confirmed", lot=lot_out(bought.lot), charges=charges,
                                next_cycle_amount=bought.next_cycle).public()
        answer["contract"] = contract
        return Outcome(state, {**answer, EVENT_FIELD: event_id}, status_code=201)

    def _single_instance(self, state: TenantState, pack: Pack) -> None:
        """R4.7: a single-instance pack is not bought while owned or included in the plan."""
        if not pack.single_instance:
            return
        if pack.feature is not None and pack.feature in self.index.plan_features[state.plan]:
            raise Conflict(f"'{pack.id}' is single-instance and plan '{state.plan}' already "
                           f"includes {pack.feature} (R4.7)", field="item",
                           code="already_included")
        for lot in state.lots:
            if lot.live and not lot.trial and (
                    lot.item == pack.id or (pack.feature is not None
                                            and self.index.feature_of_pack.get(lot.item)
                                            == pack.feature)):
                raise Conflict(f"'{pack.id}' is single-instance and lot {lot.id} already "
                               "grants it (R4.7)", field="item", code="already_owned")

    def _trial(self, state: TenantState, body: PurchaseRequest, pack: Pack, now: datetime,
               today: date, effects: Effects, actor: dict[str, Any] | None) -> Outcome:
        """R5.3: the pack for the catalog's trial length at no charge, once per pack."""
        if pack.trial_days is None:
            raise Conflict(f"'{pack.id}' has no free trial (R5.3)", field="item",
                           code="no_trial")
        if pack.id in state.trials_used:
            raise Conflict(f"the free trial of '{pack.id}' was already used; it has expired "
                           "and can only be bought now (R5.3)", field="item",
                           code="trial_used")
        self._single_instance(state, pack)
        ends = local_midnight(today + timedelta(days=pack.trial_days), zone_of(state))
        if not body.confirm:
            answer = PurchaseAnswer(status="preview", lot=None, charges=[],
                                    next_cycle_amount=None, effective_at=ends)
            return Outcome(None, answer.public())
        lot = Lot(id=f"lot-{secrets.token_hex(8)}", item=pack.id, kind=pack.kind, quantity=1,
                  units=pack.units, state="trialing", bought_at=now, ends_at=ends, trial=True,
                  actor=body.actor)
        state.lots.append(lot)
        state.trials_used.append(pack.id)
        effects.record(state.id, "trial.started", now,
                       {"lot": lot.id, "item": pack.id, "ends_at": utc_text(ends)}, actor)
        answer = PurchaseAnswer(status="trialing", lot=lot_out(lot), charges=[],
                                next_cycle_amount=None, effective_at=ends)
        return Outcome(state, answer.public(), status_code=201)

    def _change_plan(self, state: TenantState, body: PurchaseRequest, plan: Plan,
                     period: Period, today: date, now: datetime, effects: Effects,
                     actor: dict[str, Any] | None) -> Outcome:
        if state.cycle not in plan.price:
            raise ValidationFailed(f"item: plan '{plan.id}' has no price for the cycle "
                                   f"{state.cycle}", field="item", code="no_price_for_cycle")
        end = local_midnight(period.end, zone_of(state))
        change = PlanChange(state, self.catalog, plan, period, today, end)
        return change.decide(body.confirm, now, effects, actor)

    def _request(self, state: TenantState, body: PurchaseRequest, item: Plan | Pack,
                 quantity: int, now: datetime, effects: Effects,
                 actor: dict[str, Any] | None) -> Outcome:
        """R5.2: a quote or a feature request notifies the owner (an event), charges nothing."""
        if body.action == "quote" and body.actor.role == "admin" \
                and not state.account_allows_quotes:
            raise Forbidden("role 'admin' may not request a quote: the account does not allow "
                            "it (R5)", field="actor.role", code="role_forbidden")
        answer = PurchaseAnswer(status="preview" if not body.confirm else "requested",
                                lot=None, charges=[], next_cycle_amount=None)
        if not body.confirm:
            return Outcome(None, answer.public())
        kind = "quote.requested" if body.action == "quote" else "feature.requested"
        effects.record(state.id, kind, now, {"item": item.id, "quantity": quantity,
                                             "notify": "owner"}, actor)
        return Outcome(state, answer.public(), status_code=202)

