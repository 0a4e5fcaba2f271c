"""Entitlements routes (docs/api.md, Entitlements): thin; parse, authorize, delegate to the service.

Roles (docs/api.md "Keys"): ingest may check, read the catalog and its tenants, and buy, cancel,
uncancel and PATCH on behalf of the actor named in the body; dashboard reads the catalog,
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

from services.entitlements.models import (
    CheckBatch,
    CheckItem,
    LotAction,
    PurchaseRequest,
    TenantCreate,
    TenantPatch,
)
from services.entitlements.service import EntitlementsService
from shared.auth import PlatformAdminKey, Principal, Role, require
from shared.errors import PayloadTooLarge, ValidationFailed

router = APIRouter(tags=["entitlements"])

IngestKey = Annotated[Principal, Depends(require(Role.INGEST))]
ReaderKey = Annotated[Principal, Depends(require(Role.INGEST, Role.DASHBOARD))]
DashboardKey = Annotated[Principal, Depends(require(Role.DASHBOARD))]
JSON = "application/json"


def entitlements(request: Request) -> EntitlementsService:
    service: EntitlementsService = request.app.state.entitlements
    return service


Entitlements = Annotated[EntitlementsService, Depends(entitlements)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


@router.get("/v1/catalog")
async def catalog(_: ReaderKey, service: Entitlements) -> Response:
    """The loaded catalog (R1), money as decimal strings."""
    return Response(service.catalog_json(), media_type=JSON)


@router.post("/v1/tenants", status_code=201)
async def create_tenant(body: TenantCreate, principal: PlatformAdminKey,
                        service: Entitlements) -> Response:
    return _json(await service.create_tenant(body, principal), 201)


@router.get("/v1/tenants/{tenant}")
async def get_tenant(tenant: str, principal: ReaderKey, service: Entitlements) -> Response:
    principal.ensure_tenant(tenant)
    return _json(await service.get_tenant(tenant))


@router.patch("/v1/tenants/{tenant}")
async def patch_tenant(tenant: str, body: TenantPatch, principal: IngestKey,
                       service: Entitlements) -> Response:
    """R4.1: tacit renewal on or off; R9.8: the billing profile later invoices name."""
    principal.ensure_tenant(tenant)
    return _json(await service.patch_tenant(tenant, body, principal))


@router.post("/v1/tenants/{tenant}/purchases")
async def purchase(tenant: str, body: PurchaseRequest, principal: IngestKey,
                   service: Entitlements,
                   idempotency_key: Annotated[str | None, Header()] = None) -> Response:
    """Buy a pack or change plan (R4.2–R4.7, R5); `confirm: false` is the preview (R4.3)."""
    principal.ensure_tenant(tenant)
    status, answer = await service.purchase(tenant, body, principal, idempotency_key)
    return _json(answer, status)


async def _lot_body(request: Request) -> LotAction:
    raw = await request.body()
    if not raw.strip():
        return LotAction()
    try:
        return LotAction.model_validate_json(raw)
    except ValueError as error:
        raise ValidationFailed(f"body: {str(error).splitlines()[0]}", field="body") from None


@router.post("/v1/tenants/{tenant}/lots/{lot}/cancel")
async def cancel_lot(tenant: str, lot: str, principal: IngestKey, service: Entitlements,
                     body: Annotated[LotAction, Depends(_lot_body)]) -> Response:
    """R4.4: the whole lot, at the period end; no refund."""
    principal.ensure_tenant(tenant)
    return _json(await service.cancel_lot(tenant, lot, False, body.actor, principal))


@router.post("/v1/tenants/{tenant}/lots/{lot}/uncancel")
async def uncancel_lot(tenant: str, lot: str, principal: IngestKey, service: Entitlements,
                       body: Annotated[LotAction, Depends(_lot_body)]) -> Response:
    """R4.4: undo a cancellation before the period end."""
    principal.ensure_tenant(tenant)
    return _json(await service.cancel_lot(tenant, lot, True, body.actor, principal))


@router.get("/v1/tenants/{tenant}/history")
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


@router.get("/v1/tenants/{tenant}/check")
async def check(tenant: str, request: Request, principal: IngestKey,
                service: Entitlements) -> Response:
    """One decision: `module=`, `module=&user=`, `feature=emails&quantity=`,
    `feature=companies`, `feature=support[&level=3]`, `feature=<flag>` (R6.3, R7.2, R7.3,
    R8.2, R8.3). Served by
    `CheckFastPath` when the part is installed; this route documents it and is the fallback."""
    principal.ensure_tenant(tenant)
    item = check_item(tenant, request.query_params)
    return Response(orjson.dumps(await service.checks.check(service.checks.parse_query(item))),
                    media_type=JSON)


@router.post("/v1/check")
async def check_batch(body: CheckBatch, principal: IngestKey,
                      service: Entitlements) -> Response:
    """Many decisions in one call; each answer (or error) at its request's position."""
    if len(body.checks) > service.settings.entitlements_max_batch:
        raise PayloadTooLarge(f"at most {service.settings.entitlements_max_batch} checks per "
                              "call", field="checks")
    results = await service.checks.check_batch(body.checks, principal)
    return Response(orjson.dumps({"results": results}), media_type=JSON)
