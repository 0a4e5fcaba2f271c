"""Entitlements: tenants, purchases (R4, R5), lifecycle on the clock (R4.1, R4.4, R4.5, R4.8,
R5.3), history (R4.9); checks are answered by `Checks` (checks.py). The rules are pure
modules beside it: tenants.py (a new tenant, the document's view, renewal, a lot cancelled),
purchases.py (what a purchase charges and adds), lifecycle.py (a document on the clock),
policy.py (who may do what), decisions.py and support.py (checks, support).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.entitlements import decisions as dec
from services.entitlements.baskets import Baskets
from services.entitlements.checks import Checks
from services.entitlements.lifecycle import (
    EVENT_FIELD,
    Effects,
    Outcome,
    actor_json,
    advance,
    next_due,
)
from services.entitlements.migrations import Migrations, Repricer
from services.entitlements.models import PurchaseRequest, TenantCreate, TenantPatch
from services.entitlements.policy import actor_may_manage, check_role
from services.entitlements.purchases import PurchaseRules
from services.entitlements.store import Change, EntitlementsStore
from services.entitlements.tenants import (
    NewTenant,
    change_lot,
    history_cursor,
    profile_json,
    require,
    switch_renewal,
    tenant_view,
)
from shared.auth import Principal
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.keys import InvoicingKeys
from shared.meters import Meter
from shared.settings import EntitlementsSettings
from shared.subscription import Actor, TenantState
from shared.times import from_micros, micros

MAX_ATTEMPTS = 500


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
        # New tenants get the current version at once (R10.5).
        self.catalog = catalogs.current
        self.clock = clock
        self.settings = settings
        self.notify = notify
        # Each version's lookups, once (live: the priced meters, R10.4).
        indexes = {c.version: dec.CatalogIndex(c, live) for c in catalogs.versions}
        self.checks = Checks(store, catalogs, indexes, clock)
        self.rules: dict[str, VersionRules] = {}
        for catalog in catalogs.versions:
            purchases = PurchaseRules(catalog, indexes[catalog.version],
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
        terms = NewTenant.check(body, self.catalogs)
        actor = actor_json(None, principal)

        def create(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            new = terms.create(state, now, effects, actor)
            return Outcome(new, self.tenant_public(new, now), status_code=201,
                           zone=body.time_zone)

        _, answer = await self._mutate(body.id, create)
        return answer

    async def get_tenant(self, tenant: str) -> dict[str, Any]:
        stored = require(await self.store.document(tenant), tenant)
        now = await self.clock.now()
        state = advance(stored, now, Effects())
        return self.tenant_public(state, now)

    def tenant_public(self, state: TenantState, now: datetime) -> dict[str, Any]:
        return tenant_view(state, self.catalogs.of(state, now), now)

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
            state = require(state, tenant)
            if body.renewal is not None:
                switch_renewal(state, body.renewal, now, effects, actor)
            if profile is not None and profile != state.billing:
                # Invoices issued from now on name the new buyer; issued ones keep theirs.
                effects.record(tenant, "tenant.billing_changed", now, {
                    "billing": profile.model_dump(), "previous": profile_json(state)}, actor)
                state.billing = profile
            return Outcome(state, self.tenant_public(state, now))

        _, answer = await self._mutate(tenant, patch)
        return answer

    # --- lots (R4.4) ---------------------------------------------------------------------

    async def cancel_lot(self, tenant: str, lot_id: str, undo: bool, actor: Actor | None,
                         principal: Principal) -> dict[str, Any]:
        actor_may_manage(actor, principal, "uncancel a lot" if undo else "cancel a lot")
        recorded = actor_json(actor, principal)

        def change(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = require(state, tenant)
            return Outcome(state, change_lot(state, lot_id, undo, now, effects, recorded))

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
        stored = require(await self.store.document(tenant), tenant)
        rules = self.rules_of(stored, await self.clock.now())
        lines = rules.baskets.lines(body)  # one for `item`, one per entry of `items` (R4.11)
        check_role(body.action, body.actor)
        access = None
        if any(line.per_licence for line in lines):  # R4.12: counted by the pure rules
            access = await self.store.live_users(tenant, [m.id for m in self.catalog.modules])

        def buy(state: TenantState | None, now: datetime, effects: Effects) -> Outcome:
            state = require(state, tenant)
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
        require(await self.store.document(tenant), tenant)
        if cursor is not None and not history_cursor(cursor):
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
