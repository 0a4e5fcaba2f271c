"""Metering routes (docs/api.md, Metering): ingest and usage. Thin: parse, authorize, delegate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.metering.models import CloudEvent, EventRefs, IngestResult, Meters, UsageSeries
from services.metering.service import MeteringService
from shared.app import state_of
from shared.auth import Principal, Role, require
from shared.errors import BadRequest, PayloadTooLarge, ValidationFailed
from shared.openapi import ErrorBody, component_ref, errors
from shared.times import parse_instant

router = APIRouter(tags=["metering"])

IngestKey = Annotated[Principal, Depends(require(Role.INGEST))]
DashboardKey = Annotated[Principal, Depends(require(Role.DASHBOARD))]
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


Metering = Annotated[MeteringService, Depends(state_of("metering"))]


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes", field="body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", field="body")
    return bytes(body)


# The route reads the raw body (size limit first, then one parse for either form), so
# FastAPI cannot see it: it is declared here.
_EVENT = component_ref(CloudEvent)
_BATCH = {"type": "array", "minItems": 1, "items": _EVENT}
EVENTS_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [_EVENT, _BATCH]}},
    BATCH_CONTENT_TYPE: {"schema": _BATCH}}}}


@router.post("/v1/events", status_code=202, response_model=IngestResult,
             openapi_extra=EVENTS_BODY, responses={
                 **errors(400, 413),
                 422: {"model": ErrorBody, "description": "no event could be accepted: "
                       "the first reason in `error`, every one in `rejected`"}})
async def ingest(request: Request, principal: IngestKey, service: Metering) -> JSONResponse:
    settings = request.app.state.metering_settings
    raw = await _read_limited(request, settings.max_request_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON", field="body", code="invalid_json") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == BATCH_CONTENT_TYPE and not isinstance(body, list):
        raise ValidationFailed(f"body: {BATCH_CONTENT_TYPE} needs a JSON array", field="body")
    bodies = body if isinstance(body, list) else [body]
    if not bodies:
        raise ValidationFailed("body: the batch is empty", field="body")
    if len(bodies) > settings.max_batch_events:
        raise PayloadTooLarge(f"at most {settings.max_batch_events} events per request",
                              field="body")
    accepted, rejected = await service.ingest(bodies, principal.tenant)
    rejections = [{"index": r.index, "id": r.event_id, "code": r.error.code,
                   "field": r.error.field, "reason": r.error.reason} for r in rejected]
    if not accepted:
        # Nothing could be taken: a 4xx naming the (first) field, with every reason.
        first = rejected[0].error
        body_out: dict[str, Any] = {
            "error": {"code": first.code, "message": f"{first.field}: {first.reason}",
                      "field": first.field},
            "accepted": 0, "rejected": rejections}
        return JSONResponse(body_out, status_code=422)
    return JSONResponse({"accepted": accepted, "rejected": rejections}, status_code=202)




@dataclass(frozen=True)
class UsageScope:
    """The parameters every usage query shares, checked once: the key's tenant scope included."""

    tenant: str
    meter: str
    start: datetime
    end: datetime
    module: str | None


async def usage_scope(principal: DashboardKey, tenant: str, meter: str,
                      from_: Annotated[str, Query(alias="from")], to: str,
                      module: str | None = None) -> UsageScope:
    principal.ensure_tenant(tenant)
    return UsageScope(tenant, meter, parse_instant(from_, "from"),
                      parse_instant(to, "to", range_end=True), module)


Scope = Annotated[UsageScope, Depends(usage_scope)]


@router.get("/v1/usage", response_model=UsageSeries, responses=errors(404, 422))
async def usage(
    scope: Scope,
    service: Metering,
    window: str | None = None,
    tz: str = "UTC",
    group_by: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    if window is not None and window not in ("hour", "day", "month"):
        raise ValidationFailed("window: must be hour, day or month", field="window")
    groups = [g.strip() for item in group_by or [] for g in item.split(",") if g.strip()]
    data = await service.usage(scope.tenant, scope.meter, scope.start, scope.end, window, tz,
                               groups, scope.module)
    return {"tenant": scope.tenant, "meter": scope.meter, "window": window, "tz": tz,
            "data": data}


@router.get("/v1/usage/events", response_model=EventRefs, responses=errors(404, 422))
async def usage_events(
    scope: Scope,
    service: Metering,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> dict[str, Any]:
    """The events behind a usage figure (R9.6), oldest first."""
    data = await service.event_refs(scope.tenant, scope.meter, scope.start, scope.end,
                                    scope.module, limit)
    return {"tenant": scope.tenant, "meter": scope.meter, "data": data}


@router.get("/v1/meters", response_model=Meters, responses=errors())
async def meters(_: DashboardKey, service: Metering) -> Meters:
    return Meters(data=service.registry.all())
