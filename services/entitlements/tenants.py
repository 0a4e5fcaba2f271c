"""A tenant document's own rules, as pure functions of (document, catalog, now): what a new
tenant starts as (R4.1, R10.5), how a document is shown, tacit renewal (R4.1), a lot cancelled
or restored (R4.4, R8.4, R8.6), and what a history cursor looks like (R4.9). No I/O: the
service reads the document and commits what these decide (service.py, `_mutate`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from services.entitlements import support as sup
from services.entitlements import support_renewals as ren
from services.entitlements.lifecycle import Effects, current_period, zone_of
from services.entitlements.models import TenantCreate, lot_out
from services.entitlements.policy import parse_vat_rate
from shared.billing.money import format_money
from shared.billing.periods import local_date, local_midnight
from shared.catalog import Catalog, Plan, UnknownCatalogItem
from shared.catalog_versions import CatalogVersions
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.subscription import Lot, TenantState
from shared.times import parse_zone, utc_text

# How far ahead a tenant's first period may be scheduled (`anchor`).
MAX_SCHEDULED_START = timedelta(days=366)
# A history cursor is the id of the last entry seen (a stream id).
_HISTORY_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
_STREAM_ID_MAX = 2**64 - 1


def history_cursor(cursor: str) -> bool:
    """A history cursor is a stream entry id: two 64-bit integers (Redis refuses larger
    ones), and not the largest id, after which no entry can start."""
    if not _HISTORY_CURSOR.fullmatch(cursor):
        return False
    ms, seq = (int(part) for part in cursor.split("-"))
    return max(ms, seq) <= _STREAM_ID_MAX and (ms, seq) != (_STREAM_ID_MAX, _STREAM_ID_MAX)


def require(state: TenantState | None, tenant: str) -> TenantState:
    if state is None:
        raise NotFound(f"tenant '{tenant}' not found", field="tenant")
    return state


def profile_json(state: TenantState) -> dict[str, Any] | None:
    return None if state.billing is None else state.billing.model_dump()


@dataclass(frozen=True)
class NewTenant:
    """A `POST /v1/tenants` body checked against the catalog version it names (R10.5: the
    current one unless it names another)."""

    body: TenantCreate
    catalog: Catalog
    plan: Plan
    zone: ZoneInfo
    vat_rate: Decimal

    @classmethod
    def check(cls, body: TenantCreate, catalogs: CatalogVersions) -> NewTenant:
        zone = parse_zone(body.time_zone, "time_zone")
        catalog = catalogs.current
        if body.catalog_version is not None:
            try:
                catalog = catalogs.get(body.catalog_version)
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
        return cls(body, catalog, plan, zone, parse_vat_rate(body.vat_rate))

    def create(self, state: TenantState | None, now: datetime, effects: Effects,
               actor: dict[str, Any] | None) -> TenantState:
        """The new document, active from today or scheduled for `anchor`, and its
        `tenant.created` entry."""
        body = self.body
        if state is not None:
            raise Conflict(f"tenant '{body.id}' already exists", field="id")
        today = local_date(now, self.zone)
        anchor = body.anchor or today
        if anchor < today:
            raise ValidationFailed(f"anchor: {anchor} is earlier than today ({today}) in "
                                   f"{body.time_zone}", field="anchor")
        if anchor > today + MAX_SCHEDULED_START:
            raise ValidationFailed(f"anchor: a start can be scheduled at most "
                                   f"{MAX_SCHEDULED_START.days} days ahead", field="anchor")
        new = TenantState(
            id=body.id, plan=self.plan.id, cycle=body.cycle, anchor=anchor,
            time_zone=body.time_zone, currency=body.currency, vat_rate=self.vat_rate,
            admin_user=body.admin_user, account_allows_quotes=body.account_allows_quotes,
            status="active" if anchor <= today else "scheduled", created_at=now,
            billing=None if body.billing is None else body.billing.stored(),
            catalog_version=self.catalog.version)
        effects.record(new.id, "tenant.created", now, {
            "plan": self.plan.id, "cycle": body.cycle, "anchor": anchor.isoformat(),
            "time_zone": body.time_zone, "currency": body.currency,
            "vat_rate": format(self.vat_rate, "f"), "admin_user": body.admin_user,
            "period": current_period(new, anchor).public(),
            "plan_price": format_money(self.plan.price[body.cycle], new.currency),
            "catalog_version": self.catalog.version,
            "billing": profile_json(new),
        }, actor)
        return new


def tenant_view(state: TenantState, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """The document as `GET /v1/tenants/{t}` shows it; `catalog` is the version the tenant
    is priced by at `now`."""
    period = current_period(state, local_date(now, zone_of(state)))
    plan = catalog.plan(state.plan)
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
        "lots": [_lot_view(state, lot) for lot in state.lots],
        "billing": profile_json(state),
        "catalog_version": catalog.version,
        "pending_catalog": None if state.pending_catalog is None else {
            "version": state.pending_catalog,
            "at": utc_text(state.pending_catalog_at) if state.pending_catalog_at else None},
    }


def _lot_view(state: TenantState, lot: Lot) -> dict[str, Any]:
    ends_at = lot.ends_at
    if ends_at is None and lot.live and not state.renewal:
        ends_at = state.ends_at
    price = None
    if lot.unit_price is not None and lot.state == "active" and state.renewal:
        # R4.12: per licence, as counted at purchase (each renewal counts again)
        price = format_money(lot.unit_price * lot.quantity * (lot.licences or 1),
                             state.currency)
    return {"id": lot.id, "item": lot.item, "kind": lot.kind,
            "quantity": lot.quantity, "units": lot.units, "state": lot.state,
            "trial": lot.trial, "bought_at": utc_text(lot.bought_at),
            "ends_at": None if ends_at is None else utc_text(ends_at),
            "next_cycle_amount": price}


def switch_renewal(state: TenantState, renewal: bool, now: datetime, effects: Effects,
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


def change_lot(state: TenantState, lot_id: str, undo: bool, now: datetime, effects: Effects,
               actor: dict[str, Any] | None) -> dict[str, Any]:
    """R4.4: cancel a whole lot at the period end (no refund), or undo that before it ends;
    the answer names the lot as it now is."""
    lot = next((x for x in state.lots if x.id == lot_id), None)
    if lot is None:
        raise NotFound(f"lot '{lot_id}' not found", field="lot")
    if undo:
        _uncancel(state.id, lot, now, effects, actor)
    else:
        _cancel(state, lot, now, effects, actor)
    return {"lot": lot_out(lot).model_dump(mode="json")}


def _uncancel(tenant: str, lot: Lot, now: datetime, effects: Effects,
              actor: dict[str, Any] | None) -> None:
    if lot.state != "cancelled":
        raise Conflict(f"lot '{lot.id}' is {lot.state}, not cancelled (R4.4)",
                       field="lot", code="not_cancelled")
    if lot.cancel_reason == "plan_change":
        raise Conflict(f"lot '{lot.id}' ends with the plan change that makes it "
                       "moot; choosing the current plan again restores it (R4.10)",
                       field="lot", code="moot_after_plan_change")
    ren.refuse_uncancel(lot)  # R8.6: a declined renewal was credited
    lot.state, lot.ends_at = "active", None
    effects.record(tenant, "lot.uncancelled", now,
                   {"lot": lot.id, "item": lot.item, "quantity": lot.quantity}, actor)


def _cancel(state: TenantState, lot: Lot, now: datetime, effects: Effects,
            actor: dict[str, Any] | None) -> None:
    if lot.state != "active":
        raise Conflict(f"lot '{lot.id}' is {lot.state}; only an active lot can be "
                       "cancelled (R4.4)", field="lot", code="not_active")
    zone = zone_of(state)
    declined = None
    if lot.kind == "support" and lot.contract_end is not None:
        end = sup.cancel_end(lot, zone)  # R8.4: declined at the contract end
        declined = ren.declined_renewal(lot, zone)  # R8.6: invoiced already
    else:  # active until the period end
        end = local_midnight(current_period(state, local_date(now, zone)).end, zone)
    lot.state, lot.ends_at = "cancelled", end
    effects.record(state.id, "lot.cancelled", now, {
        "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
        "ends_at": utc_text(end), "refund": "0.00"}, actor)
    if declined is not None:  # invoicing credits that renewal's invoice (R8.6)
        effects.record(state.id, "support.renewal_declined", now, declined, actor)
