"""Entitlements logic without I/O frameworks: tenants, purchases (R4, R5), lifecycle on the
clock (R4.1, R4.4, R4.5, R4.8, R5.3), history (R4.9) and checks (R6.3, R7.2, R7.3). The pure
steps live beside it: lifecycle.py (a document on the clock), policy.py (who may do what),
decisions.py (checks), support.py (support contracts).

Every change follows one path, `_mutate`: read the tenant document, bring it up to "now"
(`advance`), apply the action as a pure function of (document, catalog, now), then commit the
new document with its history entries and outbox events in one Lua call, compare-and-set on
the document's version. A lost race re-reads and re-decides, so two simultaneous purchases can
never both take a single-instance pack (R4.7), lose a lot, or charge twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from services.entitlements import decisions as dec
from services.entitlements import support as sup
from services.entitlements.lifecycle import (
    Effects,
    Outcome,
    actor_json,
    advance,
    current_period,
    next_due,
    zone_of,
)
from services.entitlements.models import (
    Charge,
    CheckItem,
    PeriodOut,
    PurchaseAnswer,
    PurchaseRequest,
    TenantCreate,
    lot_out,
)
from services.entitlements.policy import (
    actor_may_manage,
    check_role,
    parse_vat_rate,
)
from services.entitlements.store import Change, EntitlementsStore
from shared import live
from shared.auth import Principal
from shared.billing.money import format_money, line_amount
from shared.billing.periods import Period, local_date, local_midnight
from shared.billing.proration import prorated_charge, upgrade_charge
from shared.catalog import ONCE, Catalog, Pack, Plan, UnknownCatalogItem
from shared.clock import Clock
from shared.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from shared.settings import EntitlementsSettings
from shared.subscription import Actor, Lot, TenantState
from shared.times import from_micros, micros, parse_zone, utc_text

MAX_ATTEMPTS = 500
# A history cursor is the id of the last entry seen (a stream id).
_HISTORY_CURSOR = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$", re.ASCII)
# How far ahead a tenant's first period may be scheduled (`anchor`).
MAX_SCHEDULED_START = timedelta(days=366)
# Where a confirmed purchase's answer keeps its event id until the invoice number replaces it.
EVENT_FIELD = "_event_id"



# --- checks ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cached:
    raw: str
    state: TenantState
    due: datetime | None


@dataclass(slots=True)
class Query:
    tenant: str
    module: str | None = None
    user: str | None = None
    feature: str | None = None
    quantity: int = 1
    level: int = 1  # support checks (R8.3)


class EntitlementsService:
    def __init__(self, store: EntitlementsStore, catalog: Catalog, clock: Clock,
                 settings: EntitlementsSettings, notify: Callable[[], None] = lambda: None
                 ) -> None:
        self.store = store
        self.catalog = catalog
        self.index = dec.CatalogIndex(catalog)
        self.clock = clock
        self.settings = settings
        self.notify = notify
        self._public_catalog = orjson.dumps(catalog.to_public())
        self._cache: dict[str, _Cached] = {}

    def catalog_json(self) -> bytes:
        return self._public_catalog

    # --- the one write path --------------------------------------------------------------

    async def _mutate(self, tenant: str,
                      action: Callable[[TenantState | None, datetime, Effects], Outcome],
                      idem_key: str | None = None, request_hash: str | None = None
                      ) -> tuple[int, dict[str, Any]]:
        if idem_key is not None:
            stored = await self.store.idempotent_answer(idem_key)
            if stored is not None:
                return self._replay(stored, request_hash)
        for _ in range(MAX_ATTEMPTS):
            now = await self.clock.now()
            raw, version = await self.store.load(tenant)
            effects = Effects()
            state = None
            if raw is not None:
                state = advance(TenantState.model_validate_json(raw), now, effects)
            outcome = action(state, now, effects)
            if outcome.state is None:
                return outcome.status_code, outcome.answer
            outcome.state.version = version + 1
            due = next_due(outcome.state)
            idem_answer = None
            if idem_key is not None:
                idem_answer = orjson.dumps({"request": request_hash,
                                            "status": outcome.status_code,
                                            "body": outcome.answer})
            change = Change(history=effects.history, events=effects.events,
                            due_us=None if due is None else micros(due),
                            idem_key=idem_key, idem_answer=idem_answer, zone=outcome.zone)
            result = await self.store.commit(
                tenant, version, outcome.state.model_dump_json().encode(), change,
                self.settings.entitlements_idempotency_ttl_s)
            if result.outcome == "committed":
                self.notify()
                return outcome.status_code, outcome.answer
            if result.outcome == "replay" and result.answer is not None:
                return self._replay(result.answer, request_hash)
            await asyncio.sleep(random.random() * 0.002)  # lost a race: re-read, re-decide
        raise Conflict("too many concurrent changes to this tenant; retry", code="busy")

    @staticmethod
    def _replay(stored: bytes, request_hash: str | None) -> tuple[int, dict[str, Any]]:
        first = orjson.loads(stored)
        if first.get("request") != request_hash:
            raise Conflict("this Idempotency-Key was used for a different request",
                           field="Idempotency-Key", code="idempotency_key_reused")
        return int(first["status"]), dict(first["body"])

    # --- tenants -------------------------------------------------------------------------

    async def create_tenant(self, body: TenantCreate, principal: Principal
                            ) -> dict[str, Any]:
        zone = parse_zone(body.time_zone, "time_zone")
        try:
            plan = self.catalog.plan(body.plan)
        except UnknownCatalogItem:
            raise ValidationFailed(f"plan: unknown plan '{body.plan}'", field="plan") from None
        if body.cycle not in plan.price:
            raise ValidationFailed(f"cycle: plan '{plan.id}' has no price for {body.cycle}",
                                   field="cycle")
        if body.currency != self.catalog.currency:
            raise ValidationFailed(
                f"currency: must be the catalog's currency {self.catalog.currency}",
                field="currency")
        vat = parse_vat_rate(body.vat_rate)

        def create(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            if state is not None:
                raise Conflict(f"tenant '{body.id}' already exists", field="id")
            today = local_date(now, zone)
            anchor = body.anchor or today
            if anchor < today:
                raise ValidationFailed(f"anchor: {anchor} is earlier than today ({today}) in "
                                       f"{body.time_zone}", field="anchor")
            if anchor > today + MAX_SCHEDULED_START:
                raise ValidationFailed(f"anchor: a start can be scheduled at most "
                                       f"{MAX_SCHEDULED_START.days} days ahead", field="anchor")
            new = TenantState(
                id=body.id, plan=plan.id, cycle=body.cycle, anchor=anchor,
                time_zone=body.time_zone, currency=body.currency, vat_rate=vat,
                admin_user=body.admin_user, account_allows_quotes=body.account_allows_quotes,
                status="active" if anchor <= today else "scheduled", created_at=now)
            period = current_period(new, anchor)
            price = plan.price[body.cycle]
            effects.record(new.id, "tenant.created", now, {
                "plan": plan.id, "cycle": body.cycle, "anchor": anchor.isoformat(),
                "time_zone": body.time_zone, "currency": body.currency,
                "vat_rate": format(vat, "f"), "admin_user": body.admin_user,
                "period": _period(period), "plan_price": format_money(price, new.currency),
            }, actor_json(None, principal))
            return Outcome(new, self.tenant_public(new, now), status_code=201,
                           zone=body.time_zone)

        _, answer = await self._mutate(body.id, create)
        return answer

    async def get_tenant(self, tenant: str) -> dict[str, Any]:
        raw, _ = await self.store.load(tenant)
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        now = await self.clock.now()
        state = advance(TenantState.model_validate_json(raw), now, Effects())
        return self.tenant_public(state, now)

    def tenant_public(self, state: TenantState, now: datetime) -> dict[str, Any]:
        zone = zone_of(state)
        today = local_date(now, zone)
        period = current_period(state, today)
        plan = self.catalog.plan(state.plan)
        lots = []
        for lot in state.lots:
            ends_at = lot.ends_at
            if ends_at is None and lot.live and not state.renewal:
                ends_at = state.ends_at
            price = None
            if lot.unit_price is not None and lot.state in ("active",) and state.renewal:
                price = format_money(lot.unit_price * lot.quantity, state.currency)
            lots.append({"id": lot.id, "item": lot.item, "kind": lot.kind,
                         "quantity": lot.quantity, "units": lot.units, "state": lot.state,
                         "trial": lot.trial, "bought_at": utc_text(lot.bought_at),
                         "ends_at": None if ends_at is None else utc_text(ends_at),
                         "next_cycle_amount": price})
        return {
            "id": state.id, "plan": state.plan, "cycle": state.cycle,
            "anchor": state.anchor.isoformat(), "time_zone": state.time_zone,
            "currency": state.currency, "vat_rate": format(state.vat_rate, "f"),
            "admin_user": state.admin_user,
            "account_allows_quotes": state.account_allows_quotes,
            "status": state.status, "renewal": state.renewal,
            "period": _period(period),
            "ends_at": None if state.ends_at is None or state.renewal else utc_text(state.ends_at),
            "pending_plan": None if state.pending_plan is None else {
                "plan": state.pending_plan,
                "at": utc_text(state.pending_plan_at) if state.pending_plan_at else None},
            "modules": list(plan.modules), "features": list(plan.features),
            "plan_price": format_money(plan.price[state.cycle], state.currency)
            if state.cycle in plan.price else None,
            "lots": lots,
        }

    async def set_renewal(self, tenant: str, renewal: bool, actor: Actor | None,
                          principal: Principal) -> dict[str, Any]:
        """R4.1: tacit renewal on or off, any time before the period end."""
        actor_may_manage(actor, principal, "switch tacit renewal")

        def patch(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = _require(state, tenant)
            if state.status == "ended":
                raise Conflict("the subscription has ended (R4.1)", code="subscription_ended")
            period = current_period(state, local_date(now, zone_of(state)))
            end = local_midnight(period.end, zone_of(state))
            if state.renewal != renewal:
                state.renewal = renewal
                state.ends_at = None if renewal else end
                effects.record(tenant, "renewal.changed", now, {
                    "renewal": renewal, "ends_at": None if renewal else utc_text(end)},
                    actor_json(actor, principal))
            return Outcome(state, self.tenant_public(state, now))

        _, answer = await self._mutate(tenant, patch)
        return answer

    # --- lots (R4.4) ---------------------------------------------------------------------

    async def cancel_lot(self, tenant: str, lot_id: str, undo: bool, actor: Actor | None,
                         principal: Principal) -> dict[str, Any]:
        actor_may_manage(actor, principal, "uncancel a lot" if undo else "cancel a lot")

        def change(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = _require(state, tenant)
            lot = next((x for x in state.lots if x.id == lot_id), None)
            if lot is None:
                raise NotFound(f"lot '{lot_id}' not found", field="lot")
            zone = zone_of(state)
            if undo:
                if lot.state != "cancelled":
                    raise Conflict(f"lot '{lot_id}' is {lot.state}, not cancelled (R4.4)",
                                   field="lot", code="not_cancelled")
                lot.state, lot.ends_at = "active", None
                effects.record(tenant, "lot.uncancelled", now,
                               {"lot": lot.id, "item": lot.item, "quantity": lot.quantity},
                               actor_json(actor, principal))
            else:
                if lot.state != "active":
                    raise Conflict(f"lot '{lot_id}' is {lot.state}; only an active lot can be "
                                   "cancelled (R4.4)", field="lot", code="not_active")
                period = current_period(state, local_date(now, zone))
                if lot.kind == "support" and lot.contract_end is not None:
                    end = sup.cancel_end(lot, zone)  # R8.4: declined at the contract end
                else:
                    end = local_midnight(period.end, zone)  # active until the period end
                lot.state = "cancelled"
                lot.ends_at = end
                effects.record(tenant, "lot.cancelled", now, {
                    "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                    "ends_at": utc_text(lot.ends_at), "refund": "0.00"},
                    actor_json(actor, principal))
            return Outcome(state, {"lot": lot_out(lot).model_dump(mode="json")})

        _, answer = await self._mutate(tenant, change)
        return answer

    # --- purchases (R4.2–R4.7, R5) -------------------------------------------------------

    async def purchase(self, tenant: str, body: PurchaseRequest, principal: Principal,
                       idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        request_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        idem = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise ValidationFailed("Idempotency-Key: 1 to 255 characters",
                                       field="Idempotency-Key")
            idem = self.store.idem_key(tenant, idempotency_key)
        item = self._item(body.item)
        quantity = self._quantity(body, item)
        check_role(body.action, body.actor)

        def buy(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = _require(state, tenant)
            return self._purchase(state, body, item, quantity, now, effects,
                                  actor_json(body.actor, principal))

        status, answer = await self._mutate(tenant, buy, idem, request_hash)
        # The event id travels with the stored answer, so a replay finds the same invoice.
        event_id = answer.pop(EVENT_FIELD, None)
        if event_id is not None and answer.get("charges"):
            answer["invoice"] = await self._immediate_invoice(str(event_id))
        return status, answer

    async def _immediate_invoice(self, event_id: str) -> str | None:
        """The number invoicing gave the purchase's immediate invoice (R9.2), once it has
        consumed `purchase.confirmed`; null if that takes longer than the configured wait."""
        key = f"{self.settings.invoicing_key_prefix}:events"
        deadline = asyncio.get_running_loop().time() + self.settings.entitlements_invoice_wait_s
        while True:
            number = await self.store.redis.hget(key, event_id)
            if number is not None:
                return str(number)
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.01)

    def _item(self, item_id: str) -> Plan | Pack:
        try:
            return self.catalog.item(item_id)
        except UnknownCatalogItem:
            raise ValidationFailed(f"item: unknown plan or pack '{item_id}'",
                                   field="item", code="unknown_item") from None

    def _quantity(self, body: PurchaseRequest, item: Plan | Pack) -> int:
        quantity = 1 if body.quantity is None else body.quantity
        if quantity <= 0:
            raise ValidationFailed("quantity: must be at least 1", field="quantity")
        if quantity > self.settings.entitlements_max_quantity:
            raise ValidationFailed(
                f"quantity: at most {self.settings.entitlements_max_quantity} per purchase",
                field="quantity")
        if isinstance(item, Plan) and quantity != 1:
            raise ValidationFailed("quantity: a plan is bought once", field="quantity")
        daily = isinstance(item, Pack) and item.support is not None \
            and item.support.type == "daily"  # R8.3: bought per subscribed user
        if isinstance(item, Pack) and item.single_instance and quantity != 1 and not daily:
            raise ValidationFailed(f"quantity: '{item.id}' is single-instance (R4.7)",
                                   field="quantity")
        return quantity

    def _purchase(self, state: TenantState, body: PurchaseRequest, item: Plan | Pack,
                  quantity: int, now: datetime, effects: Effects,
                  actor: dict[str, Any] | None) -> Outcome:
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
        self._single_instance(state, item)
        currency = state.currency
        charges: list[Charge] = []
        if item.kind == "one_time":  # R4.6: charged in full, never renewed
            amount = line_amount(Decimal(quantity), unit_price, currency)
            charges.append(Charge(kind="one_time", description=f"{quantity} × {item.id}",
                                  amount=amount, period=None, item=item.id, quantity=quantity,
                                  unit_price=unit_price))
            next_cycle = None
        else:  # R4.2: price × remaining_days / period_days, rounded once
            amount = prorated_charge(unit_price * quantity, period, today, currency)
            charges.append(Charge(
                kind="proration", item=item.id, quantity=quantity, unit_price=unit_price,
                description=f"{quantity} × {item.id} prorated {(period.end - today).days}/"
                            f"{period.days} days", amount=amount,
                period=PeriodOut.model_validate({"from": today, "to": period.end})))
            next_cycle = round_line(unit_price * quantity, currency)
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
                      unit_price=unit_price, actor=body.actor)
            state.lots.append(lot)
        answer = PurchaseAnswer(status="confirmed", lot=None if lot is None else lot_out(lot),
                                charges=charges, next_cycle_amount=next_cycle)
        event_id = effects.record(state.id, "purchase.confirmed", now, {
            "item": item.id, "kind": item.kind, "quantity": quantity,
            "lot": None if lot is None else lot.id, "currency": currency,
            "charges": [c.model_dump(mode="json", by_alias=True) for c in charges],
            "next_cycle_amount": None if next_cycle is None else format(next_cycle, "f"),
            "period": _period(period)}, actor)
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
        current = self.catalog.plan(state.plan)
        if state.cycle not in plan.price:
            raise ValidationFailed(f"item: plan '{plan.id}' has no price for the cycle "
                                   f"{state.cycle}", field="item", code="no_price_for_cycle")
        new_price = plan.price[state.cycle]
        next_cycle = round_line(new_price, state.currency)
        end = local_midnight(period.end, zone_of(state))
        if plan.id == current.id:
            if state.pending_plan is None:
                raise Conflict(f"the tenant is already on plan '{plan.id}'", field="item",
                               code="same_plan")
            # Staying on the current plan drops the scheduled downgrade.
            if not body.confirm:
                return Outcome(None, PurchaseAnswer(status="preview", lot=None, charges=[],
                                                    next_cycle_amount=next_cycle).public())
            effects.record(state.id, "plan.downgrade_cancelled", now,
                           {"plan": plan.id, "was": state.pending_plan}, actor)
            state.pending_plan = state.pending_plan_at = None
            return Outcome(state, PurchaseAnswer(status="confirmed", lot=None, charges=[],
                                                 next_cycle_amount=next_cycle).public())
        if plan.rank < current.rank:  # R4.5: at the period end, no refund or credit
            if not body.confirm:
                return Outcome(None, PurchaseAnswer(status="preview", lot=None, charges=[],
                                                    next_cycle_amount=next_cycle,
                                                    effective_at=end).public())
            state.pending_plan, state.pending_plan_at = plan.id, end
            effects.record(state.id, "plan.downgrade_scheduled", now, {
                "from": current.id, "to": plan.id, "at": utc_text(end),
                "next_cycle_amount": format(next_cycle, "f")}, actor)
            return Outcome(state, PurchaseAnswer(
                status="scheduled", lot=None, charges=[], next_cycle_amount=next_cycle,
                effective_at=end).public(), status_code=202)
        # R4.2: an upgrade is charged now, the price difference prorated, rounded once.
        old_price = current.price.get(state.cycle, Decimal(0))
        amount = upgrade_charge(old_price, max(new_price, old_price), period, today,
                                state.currency)
        charges = [Charge(
            kind="proration", item=plan.id, quantity=1, unit_price=new_price - old_price,
            description=f"upgrade {current.id} → {plan.id} prorated "
                        f"{(period.end - today).days}/{period.days} days",
            amount=amount, period=PeriodOut.model_validate({"from": today, "to": period.end}))]
        if not body.confirm:
            return Outcome(None, PurchaseAnswer(status="preview", lot=None, charges=charges,
                                                next_cycle_amount=next_cycle).public())
        state.record_plan_change(now, plan.id)
        state.pending_plan = state.pending_plan_at = None
        event_id = effects.record(state.id, "purchase.confirmed", now, {
            "item": plan.id, "kind": "plan", "from": current.id, "quantity": 1, "lot": None,
            "currency": state.currency,
            "charges": [c.model_dump(mode="json", by_alias=True) for c in charges],
            "next_cycle_amount": format(next_cycle, "f"), "period": _period(period)}, actor)
        answer = PurchaseAnswer(status="confirmed", lot=None, charges=charges,
                                next_cycle_amount=next_cycle)
        return Outcome(state, {**answer.public(), EVENT_FIELD: event_id}, status_code=201)

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

    # --- history (R4.9) ------------------------------------------------------------------

    async def history(self, tenant: str, cursor: str | None, limit: int) -> dict[str, Any]:
        raw, _ = await self.store.load(tenant)
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        if cursor is not None and not _HISTORY_CURSOR.match(cursor):
            raise ValidationFailed("cursor: not a cursor this API gave", field="cursor")
        rows = await self.store.history(tenant, cursor, limit + 1)
        data = [{"id": entry_id, **entry} for entry_id, entry in rows[:limit]]
        return {"tenant": tenant, "data": data,
                "next_cursor": data[-1]["id"] if len(rows) > limit else None}

    # --- lifecycle on the clock ----------------------------------------------------------

    async def next_due(self) -> datetime | None:
        due_us = await self.store.next_due_us()
        return None if due_us is None else from_micros(due_us)

    async def run_due(self, now: datetime) -> int:
        """Apply the lifecycle of every tenant due by `now` (each in one atomic commit)."""
        tenants = await self.store.due_tenants(micros(now))
        for tenant in tenants:
            def touch(state: TenantState | None, _: datetime, effects: Effects) -> Outcome:
                if state is None:
                    return Outcome(None, {})
                return Outcome(state, {})
            await self._mutate(tenant, touch)
        return len(tenants)

    # --- checks (R6.3, R7.2, R7.3) -------------------------------------------------------

    def parse_query(self, item: CheckItem) -> Query:
        if item.module is None and item.feature is None:
            raise ValidationFailed("module: name a module or a feature", field="module")
        if item.module is not None and item.feature is not None:
            raise ValidationFailed("feature: ask for a module or a feature, not both",
                                   field="feature")
        if item.module is not None and item.module not in self.index.modules:
            raise ValidationFailed(f"module: unknown module '{item.module}'", field="module")
        if item.user is not None and item.module is None:
            raise ValidationFailed("module: a user is checked on a module", field="module")
        if item.feature is not None and item.feature not in ("emails", "companies", "support") \
                and item.feature not in self.index.features:
            raise ValidationFailed(f"feature: unknown feature '{item.feature}'",
                                   field="feature")
        quantity = 1 if item.quantity is None else item.quantity
        if not 1 <= quantity <= 1_000_000_000:
            raise ValidationFailed("quantity: between 1 and 1000000000", field="quantity")
        level = 1 if item.level is None else item.level
        if level not in (1, 2, 3):
            raise ValidationFailed("level: support levels are 1, 2 and 3 (R8.3)", field="level")
        if item.level is not None and item.feature != "support":
            raise ValidationFailed("level: only for feature=support", field="level")
        return Query(item.tenant, item.module, item.user, item.feature, quantity, level)

    def _reads(self, query: Query, cached: _Cached | None, now: datetime
               ) -> list[tuple[str, ...]]:
        """The live-counter reads one check needs; some depend on the tenant document."""
        tenant = query.tenant
        if query.module is not None and query.user is not None:
            key = live.users_key(tenant, query.module)
            admin = cached.state.admin_user if cached is not None else query.user
            return [("ZRANK", key, query.user), ("ZRANK", key, admin), ("ZCARD", key)]
        if query.feature == "companies":
            return [("GET", live.companies_key(tenant))]
        if query.feature == "support" and cached is not None:  # R8.2, R8.3
            state = cached.state
            today = local_date(now, zone_of(state))
            days = sup.check_days(state, self.catalog, today)
            return [("MGET", *(live.support_minutes_key(tenant, d) for d in days),
                     *(live.support_minutes_key(tenant, d, level_3=True) for d in days))]
        if query.feature == "emails" and cached is not None:
            state = cached.state
            today = local_date(now, zone_of(state))
            period = current_period(state, today)
            last = min(today, period.end - timedelta(days=1))
            days = [period.start + timedelta(days=i)
                    for i in range((last - period.start).days + 1)]
            if not days:
                return []
            return [("MGET", *(live.emails_key(tenant, d) for d in days))]
        return []

    def _entry(self, tenant: str, raw: str | None) -> _Cached:
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        cached = self._cache.get(tenant)
        if cached is None or cached.raw != raw:
            state = TenantState.model_validate_json(raw)
            if len(self._cache) > 100_000:
                self._cache.clear()
            cached = self._cache[tenant] = _Cached(raw, state, next_due(state))
        return cached

    def _decide(self, query: Query, cached: _Cached, now: datetime,
                values: Sequence[Any]) -> dec.Decision:
        state = cached.state
        if cached.due is not None and cached.due <= now:
            state = advance(state, now, Effects())  # not yet run by the scheduler
        today = local_date(now, zone_of(state))
        denial = dec.subscription_denial(state, today)
        if denial is not None:
            return denial
        if query.module is not None:
            if query.user is None:
                return dec.module_decision(state, self.index, query.module)
            user_rank, admin_rank, members = values[0], values[1], int(values[2])
            rank, extra = dec.extra_user_rank(
                None if user_rank is None else int(user_rank),
                None if admin_rank is None else int(admin_rank), members)
            return dec.user_decision(state, self.index, query.module, query.user, rank, extra)
        if query.feature == "emails":
            used = sum(int(v) for v in values[0] if v is not None) if values else 0
            return dec.email_decision(state, self.index, used, query.quantity)
        if query.feature == "support":
            days = sup.check_days(state, self.catalog, today)
            raw = values[0] if values else [None] * (2 * len(days))
            minutes = {d: (max(0, int(low or 0)), max(0, int(high or 0)))
                       for d, low, high in zip(days, raw[:len(days)], raw[len(days):],
                                               strict=True)}
            view = sup.support_view(state, self.catalog, zone_of(state), today, minutes)
            return dec.support_decision(view, query.level)
        if query.feature == "companies":
            return dec.company_decision(state, self.index, max(0, int(values[0] or 0)),
                                        query.quantity)
        assert query.feature is not None
        return dec.feature_decision(state, self.index, query.feature)

    async def check(self, query: Query) -> dict[str, Any]:
        """One decision in one Redis round trip (two the first time a tenant is seen)."""
        now = await self.clock.now()
        reads = self.planned_reads(query, now)
        got = await self.store.check_reads(query.tenant, reads)
        return await self.finish_check(query, now, got.doc, reads, got.values)

    def planned_reads(self, query: Query, now: datetime) -> list[tuple[str, ...]]:
        """The reads a check needs, planned from the tenant document last seen."""
        return self._reads(query, self._cache.get(query.tenant), now)

    async def finish_check(self, query: Query, now: datetime, doc: str | None,
                           reads: list[tuple[str, ...]], values: list[Any]) -> dict[str, Any]:
        """The decision from the document and the planned reads' values; reads again only
        when the document changed what the check needs."""
        entry = self._entry(query.tenant, doc)
        fresh = self._reads(query, entry, now)
        if fresh != reads:
            values = await self.store.run(fresh)
        return self._decide(query, entry, now, values).public()

    async def check_batch(self, items: Sequence[CheckItem], principal: Principal
                          ) -> list[dict[str, Any]]:
        """Many decisions with at most two pipelines, whatever their number."""
        now = await self.clock.now()
        results: list[dict[str, Any] | None] = [None] * len(items)
        queries: list[tuple[int, Query]] = []
        for i, item in enumerate(items):
            try:
                principal.ensure_tenant(item.tenant)
                queries.append((i, self.parse_query(item)))
            except AppError as error:
                results[i] = error.body()
        tenants = sorted({q.tenant for _, q in queries})
        planned = [self._reads(q, self._cache.get(q.tenant), now) for _, q in queries]
        # Decisions on one module share most reads (the admin's rank, the member count): each
        # distinct command is sent once.
        commands = _distinct(cmd for reads in planned for cmd in reads)
        docs, flat = await self.store.batch_reads(tenants, list(commands))
        entries: dict[str, _Cached | None] = {}
        for tenant, raw in zip(tenants, docs, strict=True):
            entries[tenant] = None if raw is None else self._entry(tenant, str(raw))
        values = [[flat[commands[cmd]] for cmd in reads] for reads in planned]
        redo: dict[int, list[tuple[str, ...]]] = {}
        for n, ((_, query), reads) in enumerate(zip(queries, planned, strict=True)):
            entry = entries[query.tenant]
            if entry is not None:
                fresh = self._reads(query, entry, now)
                if fresh != reads:
                    redo[n] = fresh
        if redo:
            again_commands = _distinct(cmd for reads in redo.values() for cmd in reads)
            again = await self.store.run(list(again_commands))
            for n, reads in redo.items():
                values[n] = [again[again_commands[cmd]] for cmd in reads]
        for n, (i, query) in enumerate(queries):
            entry = entries[query.tenant]
            if entry is None:
                results[i] = NotFound(f"tenant '{query.tenant}' not found",
                                      field="tenant").body()
            else:
                results[i] = self._decide(query, entry, now, values[n]).public()
        return [r if r is not None else {} for r in results]


# --- helpers -------------------------------------------------------------------------------


def _distinct(commands: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    """Each distinct command once, with its position in the pipeline."""
    positions: dict[tuple[str, ...], int] = {}
    for command in commands:
        positions.setdefault(command, len(positions))
    return positions


def round_line(amount: Decimal, currency: str) -> Decimal:
    return line_amount(Decimal(1), amount, currency)


def _period(period: Period) -> dict[str, str]:
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


def _require(state: TenantState | None, tenant: str) -> TenantState:
    if state is None:
        raise NotFound(f"tenant '{tenant}' not found", field="tenant")
    return state
