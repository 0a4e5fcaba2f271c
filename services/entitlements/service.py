"""Entitlements: tenants, purchases (R4, R5), lifecycle on the clock (R4.1, R4.4, R4.5, R4.8,
R5.3), history (R4.9); checks are answered by `Checks` (checks.py). The rules are pure
modules beside it: purchases.py (what a purchase charges and adds), lifecycle.py (a document
on the clock), policy.py (who may do what), decisions.py and support.py (checks, support).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.entitlements import decisions as dec
from services.entitlements import support as sup
from services.entitlements import support_renewals as ren
from services.entitlements.baskets import Baskets
from services.entitlements.checks import Checks
from services.entitlements.lifecycle import (
    EVENT_FIELD,
    Effects,
    Outcome,
    actor_json,
    advance,
    current_period,
    next_due,
    zone_of,
)
from services.entitlements.migrations import Migrations, Repricer
from services.entitlements.models import PurchaseRequest, TenantCreate, TenantPatch, lot_out
from services.entitlements.policy import actor_may_manage, check_role, parse_vat_rate
from services.entitlements.purchases import PurchaseRules
from services.entitlements.store import Change, EntitlementsStore
from shared.auth import Principal
from shared.billing.money import format_money
from shared.billing.periods import local_date, local_midnight
from shared.catalog import UnknownCatalogItem
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.keys import InvoicingKeys
from shared.meters import Meter
from shared.settings import EntitlementsSettings
from shared.subscription import Actor, TenantState
from shared.times import from_micros, micros, parse_zone, utc_text

MAX_ATTEMPTS = 500
# A history cursor is the id of the last entry seen (a stream id).
_HISTORY_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
_STREAM_ID_MAX = 2**64 - 1


def _history_cursor(cursor: str) -> bool:
    """A history cursor is a stream entry id: two 64-bit integers (Redis refuses larger
    ones), and not the largest id, after which no entry can start."""
    if not _HISTORY_CURSOR.fullmatch(cursor):
        return False
    ms, seq = (int(part) for part in cursor.split("-"))
    return max(ms, seq) <= _STREAM_ID_MAX and (ms, seq) != (_STREAM_ID_MAX, _STREAM_ID_MAX)


# How far ahead a tenant's first period may be scheduled (`anchor`).
MAX_SCHEDULED_START = timedelta(days=366)


@dataclass(frozen=True)
class VersionRules:
    """The purchase rules of one catalog version (R10.5): a tenant buys from its own."""

    purchases: PurchaseRules
    baskets: Baskets


class EntitlementsService:
    def __init__(self, store: EntitlementsStore, catalogs: CatalogVersions, clock: Clock,
                 settings: EntitlementsSettings, notify: Callable[[], None] = lambda: None,
                 repricing: Repricer | None = None,
                 live: Mapping[str, Meter] | None = None) -> None:
        self.store = store
        self.catalogs = catalogs
        # New tenants get the current version at once (R10.5); checks read what it grants.
        self.catalog = catalogs.current
        self.clock = clock
        self.settings = settings
        self.notify = notify
        index = dec.CatalogIndex(self.catalog, live)  # live: the priced meters (R10.4)
        self.checks = Checks(store, self.catalog, index, clock)
        self.rules: dict[str, VersionRules] = {}
        for catalog in catalogs.versions:
            purchases = PurchaseRules(catalog, index if catalog is self.catalog
                                      else dec.CatalogIndex(catalog, live),
                                      settings.entitlements_max_quantity)
            self.rules[catalog.version] = VersionRules(purchases, Baskets(purchases))
        self.migrations = Migrations(store, catalogs, clock, self._mutate, repricing)
        self._invoicing_keys = InvoicingKeys(settings.invoicing_key_prefix)
        self._public_catalogs = {c.version: orjson.dumps(c.to_public())
                                 for c in catalogs.versions}

    def catalog_json(self, version: str | None) -> bytes:
        """`GET /v1/catalog`: the current version, or the one named (R10.5)."""
        if version is None:
            return self._public_catalogs[self.catalog.version]
        try:
            return self._public_catalogs[version]
        except KeyError:
            raise NotFound(f"version: unknown catalog version '{version[:64]}'",
                           field="version") from None

    def catalog_versions(self) -> dict[str, Any]:
        """`GET /v1/catalog/versions`: every version, oldest first."""
        return {"current": self.catalog.version,
                "data": [{"version": c.version, "currency": c.currency,
                          "current": c is self.catalog} for c in self.catalogs.versions]}

    def rules_of(self, state: TenantState, now: datetime) -> VersionRules:
        return self.rules[self.catalogs.of(state, now).version]

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
                if state.catalog_version is None and not state.catalog_changes:
                    # Written before versions (R10.5): pinned to the oldest, its own.
                    state.catalog_version = self.catalogs.oldest.version
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
        catalog = self.catalog  # R10.5: the current version, unless the body names one
        if body.catalog_version is not None:
            try:
                catalog = self.catalogs.get(body.catalog_version)
            except UnknownCatalogItem:
                raise ValidationFailed(f"catalog_version: unknown catalog version "
                                       f"'{body.catalog_version}'",
                                       field="catalog_version") from None
        try:
            plan = catalog.plan(body.plan)
        except UnknownCatalogItem:
            raise ValidationFailed(f"plan: unknown plan '{body.plan}'", field="plan") from None
        if body.cycle not in plan.price:
            raise ValidationFailed(f"cycle: plan '{plan.id}' has no price for {body.cycle}",
                                   field="cycle")
        if body.currency != catalog.currency:
            raise ValidationFailed(
                f"currency: must be the catalog's currency {catalog.currency}",
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
                status="active" if anchor <= today else "scheduled", created_at=now,
                billing=None if body.billing is None else body.billing.stored(),
                catalog_version=catalog.version)
            period = current_period(new, anchor)
            price = plan.price[body.cycle]
            effects.record(new.id, "tenant.created", now, {
                "plan": plan.id, "cycle": body.cycle, "anchor": anchor.isoformat(),
                "time_zone": body.time_zone, "currency": body.currency,
                "vat_rate": format(vat, "f"), "admin_user": body.admin_user,
                "period": period.public(), "plan_price": format_money(price, new.currency),
                "catalog_version": catalog.version,
                "billing": _profile_json(new),
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
        plan = self.catalogs.of(state, now).plan(state.plan)
        lots = []
        for lot in state.lots:
            ends_at = lot.ends_at
            if ends_at is None and lot.live and not state.renewal:
                ends_at = state.ends_at
            price = None
            if lot.unit_price is not None and lot.state in ("active",) and state.renewal:
                # R4.12: per licence, as counted at purchase (each renewal counts again)
                price = format_money(lot.unit_price * lot.quantity * (lot.licences or 1),
                                     state.currency)
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
            "period": period.public(),
            "ends_at": None if state.ends_at is None or state.renewal else utc_text(state.ends_at),
            "pending_plan": None if state.pending_plan is None else {
                "plan": state.pending_plan,
                "at": utc_text(state.pending_plan_at) if state.pending_plan_at else None},
            "modules": list(plan.modules), "features": list(plan.features),
            "plan_price": format_money(plan.price[state.cycle], state.currency)
            if state.cycle in plan.price else None,
            "lots": lots, "billing": _profile_json(state),
            "catalog_version": self.catalogs.of(state, now).version,
            "pending_catalog": None if state.pending_catalog is None else {
                "version": state.pending_catalog,
                "at": utc_text(state.pending_catalog_at) if state.pending_catalog_at else None},
        }

    async def patch_tenant(self, tenant: str, body: TenantPatch, principal: Principal
                           ) -> dict[str, Any]:
        """Tacit renewal on or off (R4.1) and the billing profile (R9.8): either or both, in
        one change, so that refusing one changes neither."""
        if body.renewal is None and body.billing is None:
            raise ValidationFailed("renewal: give `renewal`, `billing` or both",
                                   field="renewal")
        actor_may_manage(body.actor, principal, "switch tacit renewal"
                         if body.renewal is not None else "change the billing profile")
        actor = actor_json(body.actor, principal)
        profile = None if body.billing is None else body.billing.stored()

        def patch(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = _require(state, tenant)
            if body.renewal is not None:
                _switch_renewal(state, body.renewal, now, effects, actor)
            if profile is not None and profile != state.billing:
                # Invoices issued from now on name the new buyer; issued ones keep theirs.
                effects.record(tenant, "tenant.billing_changed", now, {
                    "billing": profile.model_dump(), "previous": _profile_json(state)}, actor)
                state.billing = profile
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
                if lot.cancel_reason == "plan_change":
                    raise Conflict(f"lot '{lot_id}' ends with the plan change that makes it "
                                   "moot; choosing the current plan again restores it (R4.10)",
                                   field="lot", code="moot_after_plan_change")
                ren.refuse_uncancel(lot)  # R8.6: a declined renewal was credited
                lot.state, lot.ends_at = "active", None
                effects.record(tenant, "lot.uncancelled", now,
                               {"lot": lot.id, "item": lot.item, "quantity": lot.quantity},
                               actor_json(actor, principal))
            else:
                if lot.state != "active":
                    raise Conflict(f"lot '{lot_id}' is {lot.state}; only an active lot can be "
                                   "cancelled (R4.4)", field="lot", code="not_active")
                period = current_period(state, local_date(now, zone))
                declined = None
                if lot.kind == "support" and lot.contract_end is not None:
                    end = sup.cancel_end(lot, zone)  # R8.4: declined at the contract end
                    declined = ren.declined_renewal(lot, zone)  # R8.6: invoiced already
                else:
                    end = local_midnight(period.end, zone)  # active until the period end
                lot.state, lot.ends_at = "cancelled", end
                effects.record(tenant, "lot.cancelled", now, {
                    "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
                    "ends_at": utc_text(lot.ends_at), "refund": "0.00"},
                    actor_json(actor, principal))
                if declined is not None:  # invoicing credits that renewal's invoice (R8.6)
                    effects.record(tenant, "support.renewal_declined", now, declined,
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
            idem = self.store.keys.idempotency(tenant, idempotency_key)
        # R10.5: a tenant buys from its catalog version, so the document is read first.
        raw, _ = await self.store.load(tenant)
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        rules = self.rules_of(TenantState.model_validate_json(raw), await self.clock.now())
        lines = rules.baskets.lines(body)  # one for `item`, one per entry of `items` (R4.11)
        check_role(body.action, body.actor)
        access = None
        if any(line.per_licence for line in lines):  # R4.12: counted by the pure rules
            access = await self.store.live_users(tenant, [m.id for m in self.catalog.modules])

        def buy(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = _require(state, tenant)
            if self.rules_of(state, now) is not rules:  # a migration took effect meanwhile
                raise Conflict("the tenant's catalog version changed; retry", code="busy")
            actor = actor_json(body.actor, principal)
            if body.items is not None:
                return rules.baskets.decide(state, body, lines, now, effects, actor, access)
            one = lines[0]
            return rules.purchases.decide(state, body, one.item, one.quantity, now, effects,
                                          actor, access)

        status, answer = await self._mutate(tenant, buy, idem, request_hash)
        # The event id travels with the stored answer, so a replay finds the same invoice.
        event_id = answer.pop(EVENT_FIELD, None)
        if event_id is not None and answer.get("charges"):
            answer["invoice"] = await self._immediate_invoice(str(event_id))
        return status, answer

    async def _immediate_invoice(self, event_id: str) -> str | None:
        """The number invoicing gave the purchase's immediate invoice (R9.2), once it has
        consumed `purchase.confirmed`; null if that takes longer than the configured wait."""
        deadline = asyncio.get_running_loop().time() + self.settings.entitlements_invoice_wait_s
        while True:
            number = await self.store.invoice_of_event(self._invoicing_keys, event_id)
            if number is not None:
                return str(number)
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.01)

    # --- history (R4.9) ------------------------------------------------------------------

    async def history(self, tenant: str, cursor: str | None, limit: int) -> dict[str, Any]:
        raw, _ = await self.store.load(tenant)
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        if cursor is not None and not _history_cursor(cursor):
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

def _switch_renewal(state: TenantState, renewal: bool, now: datetime, effects: Effects,
                    actor: dict[str, Any] | None) -> None:
    """R4.1: tacit renewal on or off, any time before the period end."""
    if state.status == "ended":
        raise Conflict("the subscription has ended (R4.1)", code="subscription_ended")
    period = current_period(state, local_date(now, zone_of(state)))
    end = local_midnight(period.end, zone_of(state))
    if state.renewal != renewal:
        state.renewal = renewal
        state.ends_at = None if renewal else end
        effects.record(state.id, "renewal.changed", now, {
            "renewal": renewal, "ends_at": None if renewal else utc_text(end)}, actor)


def _profile_json(state: TenantState) -> dict[str, Any] | None:
    return None if state.billing is None else state.billing.model_dump()


def _require(state: TenantState | None, tenant: str) -> TenantState:
    if state is None:
        raise NotFound(f"tenant '{tenant}' not found", field="tenant")
    return state
