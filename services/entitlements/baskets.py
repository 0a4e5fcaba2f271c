"""Several items in one purchase (R4.11), as pure functions of (document, catalog, request,
now), like a single purchase, whose rules (`PurchaseRules`) each item goes through.

`items` replaces `item`/`quantity`: each entry is validated as a single item is, and a
refusal names its index (`items.2.item`). The items are decided one after the other on the
one document copy the service's write path (`_mutate`) hands in, the plan item first, so the
packs see the plan the purchase moves to (an upgrade's modules, features and eligibility). A
refusal raises before anything is committed, so all the items apply or none; a preview
decides them the same way on that copy and keeps only the answer (R4.3).

Each item's own `purchase.confirmed` is held back: the basket records one, carrying every
charge, so invoicing issues one immediate invoice for the whole purchase (R9.2).

A downgrade in a basket is scheduled at the period end, as alone (R4.5). The packs beside it
are bought now, under the plan in force, but are meant for the plan that follows, so a pack
that plan does not sell (R8.5) or makes moot (R4.10) is refused: it would be bought only to be
cancelled at the period end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.entitlements.lifecycle import EVENT_FIELD, Effects, Outcome, current_period, zone_of
from services.entitlements.models import PurchaseRequest
from services.entitlements.plan_changes import is_moot
from services.entitlements.purchases import LiveAccess, PurchaseRules
from shared.billing.periods import local_date
from shared.catalog import Pack, Plan
from shared.errors import AppError, Conflict, ValidationFailed
from shared.subscription import TenantState


@dataclass(frozen=True, slots=True)
class BasketLine:
    """One item of a purchase, validated: its index in `items` (0 for a lone `item`)."""

    index: int
    request: PurchaseRequest  # the item as a purchase of its own
    item: Plan | Pack
    quantity: int

    @property
    def per_licence(self) -> bool:
        return isinstance(self.item, Pack) and self.item.per == "licence"


@dataclass
class _Gathering(Effects):
    """The items' changes, each one's `purchase.confirmed` held back for the basket's."""

    confirmed: list[dict[str, Any]] = field(default_factory=list)

    def record(self, tenant: str, kind: str, at: datetime, data: dict[str, Any],
               actor: dict[str, Any] | None) -> str:
        if kind != "purchase.confirmed":
            return super().record(tenant, kind, at, data, actor)
        self.confirmed.append(data)
        return ""  # no event of its own: the basket's one replaces it


@contextmanager
def _naming(index: int) -> Iterator[None]:
    """A refusal of one item names its index: `items.2.item`, `items.2.quantity` (R4.11)."""
    try:
        yield
    except AppError as error:
        error.field = f"items.{index}" + ("" if error.field is None else f".{error.field}")
        error.message = f"items.{index}: {error.message}"
        raise


class Baskets:
    def __init__(self, rules: PurchaseRules) -> None:
        self.rules = rules
        self.catalog = rules.catalog

    def lines(self, body: PurchaseRequest) -> list[BasketLine]:
        """The items of a request, each validated as a single purchase's; one line for a
        lone `item`. Exactly one of the two forms is accepted."""
        if body.items is None:
            if body.item is None:
                raise ValidationFailed("item: name the item bought, or several in items "
                                       "(R4.11)", field="item")
            item = self.rules.item(body.item)
            return [BasketLine(0, body, item, self.rules.quantity(body, item))]
        if body.item is not None or body.quantity is not None:
            raise ValidationFailed("items: give either item (and quantity) or items, not "
                                   "both (R4.11)", field="items")
        if body.action != "buy":
            raise ValidationFailed(f"items: only a purchase (action buy) carries several "
                                   f"items; '{body.action}' names one item (R4.11)",
                                   field="items")
        lines: list[BasketLine] = []
        for index, entry in enumerate(body.items):
            # Confirmed even for a preview: a preview decides on a copy it throws away.
            single = body.model_copy(update={"item": entry.item, "quantity": entry.quantity,
                                             "items": None, "confirm": True})
            with _naming(index):
                item = self.rules.item(entry.item)
                lines.append(BasketLine(index, single, item, self.rules.quantity(single, item)))
        plans = [line.index for line in lines if isinstance(line.item, Plan)]
        if len(plans) > 1:
            raise ValidationFailed(f"items.{plans[1]}.item: one plan per purchase; "
                                   f"items.{plans[0]} already names one (R4.11)",
                                   field=f"items.{plans[1]}.item")
        return lines

    def decide(self, state: TenantState, body: PurchaseRequest, lines: list[BasketLine],
               now: datetime, effects: Effects, actor: dict[str, Any] | None,
               access: LiveAccess | None) -> Outcome:
        """Every item decided on `state`, the plan first; all applied, or a refusal naming
        the item's index and nothing changed."""
        gathered = _Gathering()
        answers: dict[int, Outcome] = {}
        target: Plan | None = None  # the plan a downgrade of this basket schedules
        for line in sorted(lines, key=lambda x: not isinstance(x.item, Plan)):
            with _naming(line.index):
                if target is not None:
                    self._fits(line.item, target)
                before = len(state.lots)
                answers[line.index] = self.rules.decide(
                    state, line.request, line.item, line.quantity, now, gathered, actor,
                    access)
                if isinstance(line.item, Plan) and state.pending_plan is not None:
                    target = self.catalog.plan(state.pending_plan)
                if target is not None:
                    self._not_moot(state, before, target)
        answer = self._answer(body, lines, answers)
        if not body.confirm:  # R4.3: the copy decided on is dropped, nothing committed
            return Outcome(None, answer)
        effects.history.extend(gathered.history)
        effects.events.extend(gathered.events)
        status_code = 201 if any(o.status_code == 201 for o in answers.values()) \
            else max(o.status_code for o in answers.values())
        if gathered.confirmed:
            answer[EVENT_FIELD] = self._announce(state, lines, answer, now, effects, actor)
        return Outcome(state, answer, status_code=status_code)

    def _fits(self, item: Plan | Pack, target: Plan) -> None:
        """Beside a downgrade, a pack must be sold to the plan it will renew under (R8.5)."""
        if isinstance(item, Pack) and item.eligible_plans is not None \
                and target.id not in item.eligible_plans:
            raise Conflict(f"'{item.id}' is not sold to plan '{target.id}', which this "
                           "purchase schedules (R8.5, R4.11)", field="item",
                           code="not_eligible")

    def _not_moot(self, state: TenantState, before: int, target: Plan) -> None:
        """Beside a downgrade, a pack the lower plan makes moot would only be cancelled at
        the period end (R4.10): refused rather than sold."""
        for lot in state.lots[before:]:
            if is_moot(lot, self.catalog, target):
                raise Conflict(f"'{lot.item}' would be cancelled at the period end by the "
                               f"downgrade to '{target.id}' this purchase schedules (R4.10, "
                               "R4.11)", field="item", code="moot_after_plan_change")

    @staticmethod
    def _answer(body: PurchaseRequest, lines: list[BasketLine],
                answers: dict[int, Outcome]) -> dict[str, Any]:
        """One answer for the basket: every charge in the order of `items`, a lot per pack,
        the total of the next cycle, and what the plan item says (cancels, effective_at)."""
        ordered = [answers[line.index].answer for line in lines]
        plan = next((answers[line.index].answer for line in lines
                     if isinstance(line.item, Plan)), {})
        amounts = [Decimal(a["next_cycle_amount"]) for a in ordered
                   if a.get("next_cycle_amount") is not None]
        confirmed = any(a["status"] == "confirmed" for a in ordered)
        status = "preview" if not body.confirm else (
            "confirmed" if confirmed else str(plan.get("status", "confirmed")))
        return {"status": status, "lot": None,
                "lots": [a["lot"] for a in ordered if a.get("lot")] if body.confirm else [],
                "charges": [c for a in ordered for c in a["charges"]],
                "next_cycle_amount": format(sum(amounts), "f") if amounts else None,
                "invoice": None, "effective_at": plan.get("effective_at"),
                "cancels": list(plan.get("cancels", [])), "note": plan.get("note")}

    @staticmethod
    def _announce(state: TenantState, lines: list[BasketLine], answer: dict[str, Any],
                  now: datetime, effects: Effects, actor: dict[str, Any] | None) -> str:
        """The one `purchase.confirmed` of the basket: every charge, so one invoice (R9.2)."""
        period = current_period(state, local_date(now, zone_of(state)))
        return effects.record(state.id, "purchase.confirmed", now, {
            "kind": "basket",
            "items": [{"item": line.item.id, "quantity": line.quantity,
                       "kind": "plan" if isinstance(line.item, Plan) else line.item.kind}
                      for line in lines],
            "lots": [lot["id"] for lot in answer["lots"]], "currency": state.currency,
            "charges": answer["charges"], "next_cycle_amount": answer["next_cycle_amount"],
            "period": period.public(), "cancels": answer["cancels"]}, actor)
