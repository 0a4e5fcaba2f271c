"""Plan changes (R4.2, R4.5, R4.10) as pure functions of (document, catalog, request, now).

An upgrade (a higher rank) applies now and charges the price difference prorated to the
period end, rounded once; one that is not dearer charges nothing and says so. A downgrade
is scheduled at the period end, charged nothing, refunded nothing. Choosing the current plan
again drops a scheduled downgrade.

Either way, the change cancels the lots it makes moot (R4.10): seat packs of a module the new
plan lacks (for a suite's seats, when it lacks every module of the suite), and single-instance
feature packs whose feature the new plan includes. They stay active until the period end,
are not renewed, and then expire with reason `plan_change`; the preview lists them. Should
the change itself be undone before the period end (a scheduled downgrade dropped, a
different plan chosen), the lots it cancelled and the new target does not make moot are
active again.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.entitlements.lifecycle import EVENT_FIELD, Effects, Outcome
from services.entitlements.models import AnswerStatus, Charge, PeriodOut, PurchaseAnswer
from shared.billing.money import line_amount
from shared.billing.periods import Period
from shared.billing.proration import upgrade_charge
from shared.catalog import Catalog, Plan, UnknownCatalogItem
from shared.errors import Conflict
from shared.subscription import Lot, TenantState
from shared.times import utc_text


def is_moot(lot: Lot, catalog: Catalog, plan: Plan) -> bool:
    """Does `plan` make the lot's pack moot (R4.10)?"""
    try:
        pack = catalog.pack(lot.item)
    except UnknownCatalogItem:
        return False
    if pack.kind == "seats":
        covered = {pack.module} if pack.module is not None else set(
            catalog.suite_modules(pack.suite) if pack.suite is not None else ())
        return bool(covered) and not covered & catalog.modules_of_plan(plan.id)
    return pack.single_instance and pack.feature is not None and pack.feature in plan.features


def moot_lots(state: TenantState, catalog: Catalog, plan: Plan) -> list[Lot]:
    """The tenant's active lots (not trials) that `plan` makes moot."""
    return [lot for lot in state.lots if lot.state == "active" and not lot.trial
            and is_moot(lot, catalog, plan)]


class PlanChange:
    """One plan-change request on a document, decided at `now` in `period`."""

    def __init__(self, state: TenantState, catalog: Catalog, plan: Plan, period: Period,
                 today: date, end: datetime) -> None:
        self.state = state
        self.catalog = catalog
        self.plan = plan
        self.current = catalog.plan(state.plan)
        self.period = period
        self.today = today
        self.end = end  # the period end: when a downgrade and the cancellations apply
        self.next_cycle = line_amount(Decimal(1), plan.price[state.cycle], state.currency)

    def decide(self, confirm: bool, now: datetime, effects: Effects,
               actor: dict[str, Any] | None) -> Outcome:
        if self.plan.id == self.current.id:
            return self._stay(confirm, now, effects, actor)
        if self.plan.rank < self.current.rank:
            return self._downgrade(confirm, now, effects, actor)
        return self._upgrade(confirm, now, effects, actor)

    def _answer(self, status: AnswerStatus, charges: list[Charge], cancels: list[Lot],
                **extra: Any) -> dict[str, Any]:
        return PurchaseAnswer(status=status, lot=None, charges=charges,
                              next_cycle_amount=self.next_cycle,
                              cancels=[lot.id for lot in cancels], **extra).public()

    def _stay(self, confirm: bool, now: datetime, effects: Effects,
              actor: dict[str, Any] | None) -> Outcome:
        """Staying on the current plan drops the scheduled downgrade (and what it cancelled)."""
        state = self.state
        if state.pending_plan is None:
            raise Conflict(f"the tenant is already on plan '{self.plan.id}'", field="item",
                           code="same_plan")
        if not confirm:
            return Outcome(None, self._answer("preview", [], []))
        effects.record(state.id, "plan.downgrade_cancelled", now,
                       {"plan": self.plan.id, "was": state.pending_plan}, actor)
        state.pending_plan = state.pending_plan_at = None
        self._retarget(now, effects, actor)
        return Outcome(state, self._answer("confirmed", [], []))

    def _downgrade(self, confirm: bool, now: datetime, effects: Effects,
                   actor: dict[str, Any] | None) -> Outcome:
        """R4.5: at the period end, no refund or credit; R4.10: moot lots end with it."""
        state, end = self.state, self.end
        moot = moot_lots(state, self.catalog, self.plan)
        if not confirm:
            return Outcome(None, self._answer("preview", [], moot, effective_at=end))
        state.pending_plan, state.pending_plan_at = self.plan.id, end
        cancelled = self._retarget(now, effects, actor)
        effects.record(state.id, "plan.downgrade_scheduled", now, {
            "from": self.current.id, "to": self.plan.id, "at": utc_text(end),
            "next_cycle_amount": format(self.next_cycle, "f"),
            "cancels": [lot.id for lot in cancelled]}, actor)
        return Outcome(state, self._answer("scheduled", [], cancelled, effective_at=end),
                       status_code=202)

    def _upgrade(self, confirm: bool, now: datetime, effects: Effects,
                 actor: dict[str, Any] | None) -> Outcome:
        """R4.2: charged now, the price difference prorated, rounded once; nothing when the
        new plan is not dearer, and the answer says why."""
        state, period, today = self.state, self.period, self.today
        old_price = self.current.price.get(state.cycle, Decimal(0))
        new_price = self.plan.price[state.cycle]
        charges, note = [], None
        if new_price > old_price:
            charges.append(Charge(
                kind="proration", item=self.plan.id, quantity=1,
                unit_price=new_price - old_price,
                description=f"upgrade {self.current.id} → {self.plan.id} prorated "
                            f"{(period.end - today).days}/{period.days} days",
                amount=upgrade_charge(old_price, new_price, period, today, state.currency),
                period=PeriodOut.model_validate({"from": today, "to": period.end})))
        else:
            note = (f"no charge now: plan '{self.plan.id}' ({new_price}) is not dearer than "
                    f"'{self.current.id}' ({old_price}) (R4.2)")
        if not confirm:
            moot = moot_lots(state, self.catalog, self.plan)
            return Outcome(None, self._answer("preview", charges, moot, note=note))
        previous = self.current.id
        state.record_plan_change(now, self.plan.id)
        state.pending_plan = state.pending_plan_at = None
        cancelled = self._retarget(now, effects, actor)
        event_id = effects.record(state.id, "purchase.confirmed", now, {
            "item": self.plan.id, "kind": "plan", "from": previous, "quantity": 1,
            "lot": None, "currency": state.currency,
            "charges": [c.model_dump(mode="json", by_alias=True) for c in charges],
            "next_cycle_amount": format(self.next_cycle, "f"), "period": period.public(),
            "cancels": [lot.id for lot in cancelled]}, actor)
        effects.record(state.id, "plan.changed", now, {
            "from": previous, "to": self.plan.id, "at": utc_text(now),
            "cancels": [lot.id for lot in cancelled]}, actor)
        answer = self._answer("confirmed", charges, cancelled, note=note)
        return Outcome(state, {**answer, EVENT_FIELD: event_id}, status_code=201)

    def _retarget(self, now: datetime, effects: Effects, actor: dict[str, Any] | None
                  ) -> list[Lot]:
        """Lots an earlier plan change cancelled that the plan now targeted does not make
        moot are active again; the active ones it makes moot end at the period end."""
        state = self.state
        target = self.catalog.plan(state.pending_plan or state.plan)
        for lot in state.lots:
            if lot.state == "cancelled" and lot.cancel_reason == "plan_change" \
                    and not is_moot(lot, self.catalog, target):
                lot.state, lot.ends_at, lot.cancel_reason = "active", None, None
                effects.record(state.id, "lot.uncancelled", now, {
                    "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                    "reason": "plan_change"}, actor)
        moot = moot_lots(state, self.catalog, target)
        for lot in moot:
            lot.state, lot.ends_at, lot.cancel_reason = "cancelled", self.end, "plan_change"
            effects.record(state.id, "lot.cancelled", now, {
                "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                "ends_at": utc_text(self.end), "refund": "0.00", "reason": "plan_change"},
                actor)
        return moot
