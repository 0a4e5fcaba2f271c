"""A tenant document on the clock, as pure functions of (document, now): what falls due and
when (R4.1, R4.4, R4.5, R5.3, R8.4), and the changes and events a step makes. No I/O: the
service reads and commits the document around them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from services.entitlements import support as sup
from shared.auth import Principal
from shared.billing.periods import Cycle, Period, local_midnight, period_containing
from shared.subscription import Actor, CatalogChange, TenantState
from shared.times import as_utc, utc_text, zone

# The `source` of every event entitlements publishes on `subscription-events`.
SOURCE = "entitlements"
# Where a confirmed purchase's answer keeps its event id until the invoice number replaces it.
EVENT_FIELD = "_event_id"


def zone_of(state: TenantState) -> ZoneInfo:
    return zone(state.time_zone)


def current_period(state: TenantState, day: date) -> Period:
    """The billing period containing local day `day` (the first one before the start)."""
    return period_containing(state.anchor, Cycle(state.cycle), max(day, state.anchor))


@dataclass
class Effects:
    """What one pure step produced besides the new document."""

    history: list[bytes] = field(default_factory=list)
    events: list[tuple[str, str, bytes]] = field(default_factory=list)

    def record(self, tenant: str, kind: str, at: datetime, data: dict[str, Any],
               actor: dict[str, Any] | None) -> str:
        """One change: a history entry (R4.9) and its `subscription-events` event (R4.8)."""
        event_id = str(uuid.uuid4())
        entry = {"event_id": event_id, "at": utc_text(at), "type": kind, "actor": actor, **data}
        self.history.append(orjson.dumps(entry))
        event = {"specversion": "1.0", "id": event_id, "source": SOURCE, "type": kind,
                 "subject": tenant, "time": utc_text(at), "datacontenttype": "application/json",
                 "data": {"tenant": tenant, "actor": actor, **data}}
        self.events.append((event_id, tenant, orjson.dumps(event)))
        return event_id


@dataclass
class Outcome:
    state: TenantState | None  # None: nothing to commit (a preview)
    answer: dict[str, Any]
    effects: Effects = field(default_factory=Effects)
    status_code: int = 200
    zone: str | None = None


def actor_json(actor: Actor | None, principal: Principal | None) -> dict[str, Any] | None:
    if actor is not None:
        return {"user_id": actor.user_id, "role": actor.role,
                "api_key": principal.key_id if principal else None}
    if principal is not None:
        return {"user_id": None, "role": None, "api_key": principal.key_id}
    return None  # the platform itself (lifecycle on the clock)


# --- lifecycle: a pure function of (document, now) ------------------------------------------


def next_due(state: TenantState) -> datetime | None:
    """The earliest instant something happens to this tenant by itself (R4.1, R4.4, R4.5,
    R5.3), or None."""
    if state.status == "ended":
        return None
    instants: list[datetime] = []
    if state.status == "scheduled":
        instants.append(local_midnight(state.anchor, zone_of(state)))
    instants.extend(lot.ends_at for lot in state.lots
                    if lot.state in ("cancelled", "trialing") and lot.ends_at is not None)
    if state.pending_plan_at is not None:
        instants.append(state.pending_plan_at)
    if state.pending_catalog_at is not None:
        instants.append(state.pending_catalog_at)  # R10.5: a migration takes effect
    if not state.renewal and state.ends_at is not None:
        instants.append(state.ends_at)
    instants.extend(sup.due_instants(state, zone_of(state)))  # R8.4
    return min(instants, key=lambda d: d.astimezone(UTC)) if instants else None


def advance(state: TenantState, now: datetime, effects: Effects) -> TenantState:
    """Apply every lifecycle step due at or before `now`, in time order; events carry the
    instant each step fell due, not `now`."""
    state = state.model_copy(deep=True)
    while (due := next_due(state)) is not None and due <= now:
        zone = zone_of(state)
        if state.status == "scheduled" and local_midnight(state.anchor, zone) <= due:
            state.status = "active"
            effects.record(state.id, "subscription.started", due,
                           {"plan": state.plan, "anchor": state.anchor.isoformat()}, None)
            continue
        # Lots first (R4.4 expiry, R5.3 trial end), then the plan (R4.5), then the end (R4.1).
        for lot in state.lots:
            if lot.state in ("cancelled", "trialing") and lot.ends_at is not None \
                    and lot.ends_at <= due:
                was = lot.state
                lot.state = "expired"
                if was == "trialing":
                    effects.record(state.id, "trial.ended", lot.ends_at,
                                   {"lot": lot.id, "item": lot.item}, None)
                effects.record(state.id, "lot.expired", lot.ends_at,
                               {"lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                                "reason": "trial_ended" if was == "trialing"
                                else lot.cancel_reason or "cancelled"},
                               None)  # R4.8
        sup.advance_support(  # R8.4: contracts end, daily plans are invoiced and roll over
            state, zone, due,
            lambda kind, at, data: effects.record(state.id, kind, at, data, None))
        if state.pending_plan_at is not None and state.pending_plan_at <= due:
            previous = state.plan
            state.record_plan_change(state.pending_plan_at, state.pending_plan or state.plan)
            effects.record(state.id, "plan.downgraded", state.pending_plan_at,
                           {"from": previous, "to": state.plan}, None)  # R4.5
            effects.record(state.id, "plan.changed", state.pending_plan_at, {
                "from": previous, "to": state.plan, "at": utc_text(state.pending_plan_at),
                "cancels": [lot.id for lot in state.lots
                            if lot.cancel_reason == "plan_change" and lot.ends_at is not None
                            and as_utc(lot.ends_at) == as_utc(state.pending_plan_at)]}, None)
            state.pending_plan = state.pending_plan_at = None
        if state.pending_catalog_at is not None and state.pending_catalog_at <= due:
            _migrate(state, state.pending_catalog_at, effects)
        if not state.renewal and state.ends_at is not None and state.ends_at <= due:
            state.status = "ended"  # R4.1: renewal off, the subscription and its packs end
            for lot in state.lots:
                if lot.live:
                    lot.state = "expired"
                    lot.ends_at = state.ends_at
                    effects.record(state.id, "lot.expired", state.ends_at,
                                   {"lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                                    "reason": "subscription_ended"}, None)  # R4.8
            state.pending_plan = state.pending_plan_at = None
            state.pending_catalog = state.pending_catalog_at = None
            effects.record(state.id, "subscription.ended", state.ends_at,
                           {"plan": state.plan}, None)
    return state


def _migrate(state: TenantState, at: datetime, effects: Effects) -> None:
    """R10.5: a confirmed migration takes effect at its period start; the version left is
    kept, so a late correction of an earlier period prices it as it was billed."""
    previous, target = state.catalog_version, state.pending_catalog
    state.catalog_changes.append(CatalogChange(at=at, previous=previous))
    state.catalog_version = target
    state.pending_catalog = state.pending_catalog_at = None
    effects.record(state.id, "catalog.migrated", at, {"from": previous, "to": target}, None)
