"""The entitlements answers as the OpenAPI document describes them (docs/api.md,
Entitlements). Documentation only: the routes answer bytes the service builds, so these
models never filter an answer; `extra="allow"` where an answer may carry more than listed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.entitlements.models import DecisionKind, LotOut, PeriodOut, PurchaseAnswer
from shared.openapi import ErrorBody

_LOT_EXAMPLE: dict[str, Any] = {
                "id": "lot-7f3a", "item": "seats-crm", "kind": "seats", "quantity": 3,
                "units": 1, "state": "active", "trial": False,
                "bought_at": "2026-03-20T10:00:00Z", "ends_at": None,
                "next_cycle_amount": "30.00"}


class TenantLot(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    item: str
    kind: str
    quantity: int
    units: int
    state: str
    trial: bool
    bought_at: str
    ends_at: str | None
    next_cycle_amount: str | None = Field(description="money, decimal string")


class PendingPlan(BaseModel):
    plan: str
    at: str | None


class TenantOut(BaseModel):
    """The tenant's subscription, as `GET /v1/tenants/{tenant}` answers it."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "acme", "plan": "essentials", "cycle": "P1M", "anchor": "2026-03-01",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-1", "account_allows_quotes": False, "status": "active",
        "renewal": True, "period": {"from": "2026-03-01", "to": "2026-04-01"},
        "ends_at": None, "pending_plan": None, "modules": ["sales", "crm", "emailing"],
        "features": [], "plan_price": "49.00", "lots": [_LOT_EXAMPLE], "billing": None,
        "catalog_version": "2026-11", "pending_catalog": None}]})
    id: str
    plan: str
    cycle: str
    anchor: str
    time_zone: str
    currency: str
    vat_rate: str
    admin_user: str
    account_allows_quotes: bool
    status: str
    renewal: bool
    period: PeriodOut
    ends_at: str | None
    pending_plan: PendingPlan | None
    modules: list[str]
    features: list[str]
    plan_price: str | None
    lots: list[TenantLot]
    billing: dict[str, Any] | None = Field(description="the billing profile (R9.8), or null")
    catalog_version: str = Field(description="the catalog version the tenant is billed by "
                                 "now (R10.5)")
    pending_catalog: dict[str, Any] | None = Field(
        description="a confirmed migration, `{version, at}`, until it applies (R10.5)")


class PurchaseOut(PurchaseAnswer):
    """A purchase's answer (R4.3, R4.11): 200 preview, 201 applied, 202 scheduled or asked."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "status": "confirmed", "lot": {"id": "lot-7f3a", "item": "seats-crm", "quantity": 3,
                                       "state": "active", "ends_at": None},
        "charges": [{"kind": "proration", "description": "seats-crm × 3, prorated",
                     "amount": "11.61", "period": {"from": "2026-03-20", "to": "2026-04-01"},
                     "item": "seats-crm", "quantity": 3, "unit_price": "10.00"}],
        "next_cycle_amount": "30.00", "invoice": "INV-2026-000007", "effective_at": None,
        "cancels": [], "note": None}]})
    lots: list[LotOut] | None = Field(default=None, description="a purchase of several items")


class LotAnswer(BaseModel):
    """The lot after a cancel or an uncancel (R4.4)."""

    lot: LotOut


class CheckDecision(BaseModel):
    """One decision (docs/entitlements.md lists the reasons)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"decision": "covered", "reason": "plan", "covered_by": None, "limit": None,
         "used": None, "remaining": None},
        {"decision": "denied", "reason": "limit_reached", "covered_by": None, "limit": 2000,
         "used": 2000, "remaining": 0, "raise_with": "contacts-1000"}]})
    decision: DecisionKind
    reason: str
    covered_by: str | None = Field(description="the lot that covers it, or null")
    # A priced meter's figures (R10.4) may have decimals.
    limit: int | float | None
    used: int | float | None
    remaining: int | float | None
    support: dict[str, Any] | None = Field(default=None, description="feature=support: pools")
    raise_with: str | None = Field(default=None, description="limit_reached: the item whose "
                                   "purchase would raise the limit, or null")


class CheckResults(BaseModel):
    """`POST /v1/check`: each check's decision, or its error, at the check's position."""

    results: list[CheckDecision | ErrorBody]


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(description="the entry's id, also the next page's cursor")
    event_id: str
    at: str
    type: str = Field(examples=["lot.cancelled"])
    actor: dict[str, Any] | None


class HistoryPage(BaseModel):
    """R4.9: the dated history, oldest first; `next_cursor` null on the last page."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "tenant": "acme", "next_cursor": None, "data": [{
            "id": "1774000800000-0", "event_id": "evt-1", "at": "2026-03-20T10:00:00Z",
            "type": "lot.cancelled", "actor": {"user_id": "u-1", "role": "owner"},
            "lot": "lot-7f3a", "item": "seats-crm", "quantity": 3,
            "ends_at": "2026-03-31T22:00:00Z", "refund": "0.00"}]}]})
    tenant: str
    data: list[HistoryEntry]
    next_cursor: str | None


class CatalogVersionOut(BaseModel):
    version: str
    currency: str
    current: bool


class CatalogVersionsOut(BaseModel):
    """`GET /v1/catalog/versions` (R10.5): oldest first; new tenants get `current`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "current": "2027-01", "data": [
            {"version": "2026-11", "currency": "EUR", "current": False},
            {"version": "2027-01", "currency": "EUR", "current": True}]}]})
    current: str
    data: list[CatalogVersionOut]


class MigrationFees(BaseModel):
    model_config = ConfigDict(extra="allow")
    lines: list[dict[str, Any]] = Field(description="invoice lines, as on an invoice")
    subtotal: str = Field(description="money, decimal string")


class NextPeriodFees(BaseModel):
    period: PeriodOut
    current: MigrationFees = Field(description="under the version the tenant is billed by")
    new: MigrationFees = Field(description="under the version it would move to")


class RepricedLine(BaseModel):
    kind: str
    module: str | None
    description: str
    invoiced: dict[str, str] | None = Field(
        description="quantity, unit_price, amount as issued; null: not on an invoice")
    repriced: dict[str, str] | None = Field(
        description="the same under the new version; null: a line it would not bill")


class RepricedPeriod(BaseModel):
    period: PeriodOut
    lines: list[RepricedLine]
    invoiced: str = Field(description="money: the period's lines as issued")
    repriced: str = Field(description="money: the same period under the new version")


class MigrationOut(BaseModel):
    """`POST /v1/tenants/{tenant}/migrations` (R10.5): 200 preview, 202 scheduled."""

    model_config = ConfigDict(extra="allow")
    tenant: str
    status: str = Field(examples=["preview", "scheduled"])
    from_: str = Field(alias="from", description="the version the tenant is billed by")
    to: str
    takes_effect: str = Field(description="the next period start, when the move applies")
    next_period: NextPeriodFees
    last_closed_period: RepricedPeriod | None = Field(
        description="null while the tenant has no closed period")
