"""Entitlements routes (docs/api.md, Entitlements): thin; parse, authorize, delegate to the service.

Roles (docs/api.md "Keys"): ingest may check, read the catalog and its tenants, and buy, cancel,
uncancel, PATCH and migrate (R10.5: preview, or confirm as the owner or the account admin) on
behalf of the actor named in the body; dashboard reads the catalog (every version),
tenants and history; finance changes nothing here; admin does everything, including
`POST /v1/tenants`. A tenant-limited key gets 404 for every other tenant, as if it did not
exist: `ensure_tenant` runs before any lookup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from services.entitlements.answers import (
    CatalogVersionsOut,
    CheckDecision,
    CheckResults,
    HistoryPage,
    LotAnswer,
    MigrationOut,
    PurchaseOut,
    TenantOut,
)
from services.entitlements.migrations import MigrationRequest
from services.entitlements.models import (
    CheckBatch,
    CheckItem,
    LotAction,
    PurchaseRequest,
    TenantCreate,
    TenantPatch,
)
from services.entitlements.service import EntitlementsService
from shared.app import state_of
from shared.audit import audit
from shared.auth import PlatformAdminKey, Principal, Role, require
from shared.catalog import Catalog
from shared.errors import PayloadTooLarge, ValidationFailed
from shared.openapi import answers, component_ref, errors

router = APIRouter(tags=["entitlements"])

IngestKey = Annotated[Principal, Depends(require(Role.INGEST))]
ReaderKey = Annotated[Principal, Depends(require(Role.INGEST, Role.DASHBOARD))]
DashboardKey = Annotated[Principal, Depends(require(Role.DASHBOARD))]
JSON = "application/json"


Entitlements = Annotated[EntitlementsService, Depends(state_of("entitlements"))]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


@router.get("/v1/catalog", response_model=Catalog, responses=errors(404, 422))
async def catalog(_: ReaderKey, service: Entitlements,
                  version: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """The current catalog version (R1, R10.5), or the one `version` names; money as
    decimal strings."""
    return Response(service.catalog_json(version), media_type=JSON)


@router.get("/v1/catalog/versions", response_model=CatalogVersionsOut, responses=errors())
async def catalog_versions(_: ReaderKey, service: Entitlements) -> Response:
    """Every catalog version loaded, oldest first, and which is current (R10.5)."""
    return _json(service.catalog_versions())


@router.post("/v1/tenants/{tenant}/migrations", response_model=MigrationOut,
             responses={**errors(400, 403, 404, 409, 422, 503), 202: {
                 "model": MigrationOut, "description": "the move scheduled (`confirm: true`)"}})
async def migrate(tenant: str, body: MigrationRequest, principal: IngestKey,
                  service: Entitlements) -> Response:
    """R10.5: preview a move to another catalog version (`confirm: false`), or schedule it
    at the next period start (`confirm: true`, 202; the same request again changes nothing).
    """
    principal.ensure_tenant(tenant)
    status, answer = await service.migrations.migrate(tenant, body, principal)
    if body.confirm:
        audit("tenant.migrate", principal, actor=body.actor, tenant=tenant,
              version=body.version, at=answer.get("takes_effect"))
    return _json(answer, status)


@router.post("/v1/tenants", status_code=201, response_model=TenantOut,
             responses=errors(400, 409, 422))
async def create_tenant(body: TenantCreate, principal: PlatformAdminKey,
                        service: Entitlements) -> Response:
    created = await service.create_tenant(body, principal)
    audit("tenant.create", principal, tenant=body.id, plan=body.plan)
    return _json(created, 201)


@router.get("/v1/tenants/{tenant}", response_model=TenantOut, responses=errors(404))
async def get_tenant(tenant: str, principal: ReaderKey, service: Entitlements) -> Response:
    principal.ensure_tenant(tenant)
    return _json(await service.get_tenant(tenant))


@router.patch("/v1/tenants/{tenant}", response_model=TenantOut,
              responses=errors(400, 404, 409, 422))
async def patch_tenant(tenant: str, body: TenantPatch, principal: IngestKey,
                       service: Entitlements) -> Response:
    """R4.1: tacit renewal on or off; R9.8: the billing profile later invoices name."""
    principal.ensure_tenant(tenant)
    patched = await service.patch_tenant(tenant, body, principal)
    audit("tenant.patch", principal, actor=body.actor, tenant=tenant,
          fields=sorted(body.model_dump(exclude_unset=True, exclude={"actor"})))
    return _json(patched)


@router.post("/v1/tenants/{tenant}/purchases", response_model=PurchaseOut,
             responses={**answers(PurchaseOut, 400, 404, 409, 422, status=201,
                                  description="confirmed, or trialing"),
                        202: {"model": PurchaseOut,
                              "description": "scheduled (a downgrade), or requested"}},
             response_description="the preview (`confirm: false`): nothing changed")
async def purchase(tenant: str, body: PurchaseRequest, principal: IngestKey,
                   service: Entitlements,
                   idempotency_key: Annotated[str | None, Header()] = None) -> Response:
    """Buy a pack or change plan (R4.2–R4.7, R5); `confirm: false` is the preview (R4.3)."""
    principal.ensure_tenant(tenant)
    status, answer = await service.purchase(tenant, body, principal, idempotency_key)
    if body.confirm:  # a preview changes nothing
        audit("purchase", principal, actor=body.actor, tenant=tenant, kind=body.action,
              **purchase_ids(answer))
    return _json(answer, status)


def purchase_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """The ids a purchase's audit line names: its outcome, lots and immediate invoice."""
    lot = answer.get("lot")
    lots = [lot] if isinstance(lot, dict) else list(answer.get("lots") or [])
    return {"status": answer.get("status"),
            "lots": [x.get("id") for x in lots if isinstance(x, dict)] or None,
            "items": [x.get("item") for x in lots if isinstance(x, dict)] or None,
            "invoice": answer.get("invoice")}


async def _lot_body(request: Request) -> LotAction:
    raw = await request.body()
    if not raw.strip():
        return LotAction()
    try:
        return LotAction.model_validate_json(raw)
    except ValueError as error:
        raise ValidationFailed(f"body: {str(error).splitlines()[0]}", field="body") from None


# The body is read by hand (`_lot_body`: an empty body is no actor), so it is declared here.
LOT_ROUTE: dict[str, Any] = {
    "response_model": LotAnswer, "responses": errors(404, 409, 422),
    "openapi_extra": {"requestBody": {"required": False, "content": {JSON: {
        "schema": component_ref(LotAction)}}}}}


@router.post("/v1/tenants/{tenant}/lots/{lot}/cancel", **LOT_ROUTE)
async def cancel_lot(tenant: str, lot: str, principal: IngestKey, service: Entitlements,
                     body: Annotated[LotAction, Depends(_lot_body)]) -> Response:
    """R4.4: the whole lot, at the period end; no refund."""
    return await _change_lot(tenant, lot, False, principal, service, body)


@router.post("/v1/tenants/{tenant}/lots/{lot}/uncancel", **LOT_ROUTE)
async def uncancel_lot(tenant: str, lot: str, principal: IngestKey, service: Entitlements,
                       body: Annotated[LotAction, Depends(_lot_body)]) -> Response:
    """R4.4: undo a cancellation before the period end."""
    return await _change_lot(tenant, lot, True, principal, service, body)


async def _change_lot(tenant: str, lot: str, undo: bool, principal: Principal,
                      service: EntitlementsService, body: LotAction) -> Response:
    principal.ensure_tenant(tenant)
    answer = await service.cancel_lot(tenant, lot, undo, body.actor, principal)
    audit("lot.uncancel" if undo else "lot.cancel", principal, actor=body.actor,
          tenant=tenant, lot=lot)
    return _json(answer)


@router.get("/v1/tenants/{tenant}/history", response_model=HistoryPage,
            responses=errors(404, 422))
async def history(tenant: str, principal: DashboardKey, service: Entitlements,
                  cursor: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """R4.9: every change with its date, actor and amounts, oldest first."""
    principal.ensure_tenant(tenant)
    return _json(await service.history(tenant, cursor, limit))


# ASCII digits only, few enough for a 64-bit integer: str.isdigit() also takes '²' and
# '١٢', which int() refuses or reads; the service checks the range.
_INTEGER = re.compile(r"-?[0-9]{1,12}", re.ASCII)


def _integer(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _INTEGER.fullmatch(text):
        raise ValidationFailed(f"{name}: must be an integer", field=name)
    return int(text)


def check_item(tenant: str, params: Mapping[str, str]) -> CheckItem:
    """One check from its query string (shared with the fast path, services/.../fastpath)."""
    return CheckItem.model_construct(
        tenant=tenant, module=params.get("module"), user=params.get("user"),
        feature=params.get("feature"), quantity=_integer(params, "quantity"),
        level=_integer(params, "level"))


# The check reads its query by hand (`check_item`, shared with the fast path, for the same
# 422 messages), so FastAPI cannot see its parameters: they are declared here.
_INTEGER_TEXT = {"type": "string", "pattern": r"^-?[0-9]{1,12}$"}
CHECK_PARAMETERS = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
    for name, schema, text in (
        ("module", {"type": "string"}, "a module: may the user (or the tenant) use it"),
        ("user", {"type": "string"}, "with `module`: the user whose seat is checked"),
        ("feature", {"type": "string"}, "`emails`, `companies`, a counted resource, "
         "a priced meter (R10.4), `support` or a feature flag"),
        ("quantity", _INTEGER_TEXT, "how many more (an integer); default 1"),
        ("level", _INTEGER_TEXT, "feature=support: the session's level (an integer)"))]


@router.get("/v1/tenants/{tenant}/check", response_model=CheckDecision,
            responses=errors(404, 422), openapi_extra={"parameters": CHECK_PARAMETERS})
async def check(tenant: str, request: Request, principal: IngestKey,
                service: Entitlements) -> Response:
    """One decision: `module=`, `module=&user=`, `feature=emails&quantity=`,
    `feature=companies`, `feature=<meter>&quantity=`, `feature=support[&level=3]`,
    `feature=<flag>` (R6.3, R7.2, R7.3, R8.2, R8.3, R10.4). Served by
    `CheckFastPath` when the part is installed; this route documents it and is the fallback."""
    principal.ensure_tenant(tenant)
    item = check_item(tenant, request.query_params)
    return Response(orjson.dumps(await service.checks.check(service.checks.parse_query(item))),
                    media_type=JSON)


@router.post("/v1/check", response_model=CheckResults, responses=errors(400, 413, 422))
async def check_batch(body: CheckBatch, principal: IngestKey,
                      service: Entitlements) -> Response:
    """Many decisions in one call; each answer (or error) at its request's position."""
    if len(body.checks) > service.settings.entitlements_max_batch:
        raise PayloadTooLarge(f"at most {service.settings.entitlements_max_batch} checks per "
                              "call", field="checks")
    results = await service.checks.check_batch(body.checks, principal)
    return Response(orjson.dumps({"results": results}), media_type=JSON)
