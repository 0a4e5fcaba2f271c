"""Catalog migrations (R10.5): move a tenant to another catalog version from its next period
start, after a preview.

`POST /v1/tenants/{tenant}/migrations` with `confirm: false` answers the preview (the next
period's fees under both versions, the last closed period re-priced under the new one beside
what was invoiced; computed by invoicing's billing code, `Repricer`); with `confirm: true` it
also schedules the move: the document keeps `pending_catalog` until the period start, when
the lifecycle applies it (`catalog.migrated`). Confirming again the same move changes
nothing and answers the same (a retried request); confirming another version replaces it,
and confirming the version the tenant is billed by now undoes it (`catalog.migration_cancelled`).

A move is refused (409, naming `version`) when the tenant could not be billed by the target:
its plan or a pack it holds renewing is not in it, or its cycle is not priced there; or when
nothing would move (already on that version, or the subscription ends at this period's end).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from services.entitlements.lifecycle import (
    Effects,
    Outcome,
    actor_json,
    advance,
    current_period,
    zone_of,
)
from services.entitlements.policy import actor_may_manage
from services.entitlements.store import EntitlementsStore
from services.entitlements.tenants import require
from shared.auth import Principal
from shared.billing.periods import Cycle, local_date, period_containing
from shared.catalog import Catalog, UnknownCatalogItem
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.errors import Conflict, NotFound, Unavailable
from shared.subscription import Actor, TenantState
from shared.times import utc_text


class Repricer(Protocol):
    """Prices a move for the preview (services.invoicing.repricing)."""

    async def preview(self, view: TenantState, version: str, now: datetime
                      ) -> dict[str, Any]: ...


class MigrationRequest(BaseModel):
    """`POST /v1/tenants/{tenant}/migrations` (R10.5)."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    confirm: bool = False
    actor: Actor | None = None


# The service's one write path (`EntitlementsService._mutate`).
Mutate = Callable[[str, Callable[[TenantState | None, datetime, Effects], Outcome]],
                  Awaitable[tuple[int, dict[str, Any]]]]


class Migrations:
    def __init__(self, store: EntitlementsStore, catalogs: CatalogVersions, clock: Clock,
                 mutate: Mutate, repricing: Repricer | None) -> None:
        self.store = store
        self.catalogs = catalogs
        self.clock = clock
        self.mutate = mutate
        self.repricing = repricing

    async def migrate(self, tenant: str, body: MigrationRequest, principal: Principal
                      ) -> tuple[int, dict[str, Any]]:
        if body.confirm:  # it changes what the owner pays, as a renewal switch does
            actor_may_manage(body.actor, principal, "migrate the catalog version")
        catalogs = self.catalogs
        try:
            target = catalogs.get(body.version)
        except UnknownCatalogItem:
            raise NotFound(f"version: unknown catalog version '{body.version}'",
                           field="version") from None
        stored = require(await self.store.document(tenant), tenant)
        now = await self.clock.now()
        state = advance(stored, now, Effects())
        at = _next_start(state, now)
        scheduled = _already_scheduled(state, target, at)
        if not scheduled:
            _refuse_impossible(state, catalogs.of(state, at), target)
        if self.repricing is None:
            raise Unavailable("migration previews need invoicing's stores",
                              code="preview_unavailable")
        base = state.model_copy(update={"pending_catalog": None, "pending_catalog_at": None})
        answer = {"tenant": tenant, "from": catalogs.of(base, at).version,
                  "to": target.version, "status": "preview",
                  **await self.repricing.preview(base, target.version, now)}
        if not body.confirm:
            return 200, answer
        answer["status"] = "scheduled"
        actor = actor_json(body.actor, principal)

        def schedule(current: TenantState | None, when: datetime, effects: Effects) -> Outcome:
            if current is None:
                raise NotFound(f"tenant '{tenant}' not found", field="tenant")
            if _next_start(current, when) != at:  # a period ended meanwhile: preview again
                raise Conflict("the next period start moved; preview again", field="version",
                               code="stale_preview")
            if _already_scheduled(current, target, at):
                return Outcome(None, answer, status_code=202)  # a retry: nothing to add
            _refuse_impossible(current, catalogs.of(current, at), target)
            if current.pending_catalog is not None \
                    and catalogs.of(current, when).version == target.version:
                # Back to the version it is billed by: the scheduled move is undone.
                effects.record(tenant, "catalog.migration_cancelled", when,
                               {"cancelled": current.pending_catalog}, actor)
                current.pending_catalog = current.pending_catalog_at = None
                return Outcome(current, answer | {"status": "cancelled"}, status_code=200)
            current.pending_catalog, current.pending_catalog_at = target.version, at
            effects.record(tenant, "catalog.migration_scheduled", when, {
                "from": answer["from"], "to": target.version, "at": utc_text(at)}, actor)
            return Outcome(current, answer, status_code=202)

        return await self.mutate(tenant, schedule)


def _next_start(state: TenantState, now: datetime) -> datetime:
    """The start of the period after the current one: when a move takes effect."""
    zone = zone_of(state)
    current = current_period(state, local_date(now, zone))
    return period_containing(state.anchor, Cycle(state.cycle), current.end
                             ).start_instant(zone)


def _already_scheduled(state: TenantState, target: Catalog, at: datetime) -> bool:
    return state.pending_catalog == target.version and state.pending_catalog_at == at


def _refuse_impossible(state: TenantState, pinned: Catalog, target: Catalog) -> None:
    """409 naming `version` when the move is moot or the target cannot bill the tenant."""
    def refuse(why: str, code: str) -> None:
        raise Conflict(f"version: {why}", field="version", code=code)

    if pinned.version == target.version:
        refuse(f"the tenant is billed by {target.version} already", "same_version")
    if state.status == "ended" or state.end_instant() is not None:
        refuse("the subscription ends with this period; there is no next period to move",
               "subscription_ending")
    try:
        plan = target.plan(state.pending_plan or state.plan)
    except UnknownCatalogItem:
        refuse(f"{target.version} has no plan '{state.pending_plan or state.plan}'",
               "plan_not_in_version")
        return
    if state.cycle not in plan.price:
        refuse(f"{target.version} does not price plan '{plan.id}' for {state.cycle}",
               "cycle_not_priced")
    for lot in state.lots:
        if lot.live and lot.kind != "one_time" and lot.ends_at is None:
            try:
                target.pack(lot.item)
            except UnknownCatalogItem:
                refuse(f"{target.version} has no pack '{lot.item}' (lot {lot.id} renews)",
                       "pack_not_in_version")
