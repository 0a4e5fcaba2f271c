"""The platform's own routes, served by every process: health, readiness, metrics, API keys
and the clock (docs/api.md, "Platform")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.audit import audit
from shared.auth import AdminKey, PlatformAdminKey, Role
from shared.errors import Conflict, Forbidden, NotFound
from shared.kafka import probe
from shared.keys import TENANT_ZONES
from shared.openapi import answers, errors
from shared.times import utc_text

if TYPE_CHECKING:
    from shared.app import Runtime

router = APIRouter()


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    tenant: str | None = Field(default=None, min_length=1, max_length=128)


class ApiKeyOut(BaseModel):
    """A key; `key`, its secret, only in the answer that minted it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "key-5f2c9a0d1e3b4c7a", "role": "ingest", "tenant": "acme",
         "key": "mb_ingest_3q2+7w..."}]})
    id: str
    role: Role
    tenant: str | None
    key: str | None = None


class ApiKeyList(BaseModel):
    """The keys an admin key may see, without their secrets."""

    data: list[ApiKeyOut]


class Readiness(BaseModel):
    """Each dependency's state: `ok`, or why not (then 503, in the error shape besides)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"status": "ready", "checks": {"kafka": "ok", "redis": "ok", "clickhouse": "ok"}}]})
    status: str | None = None
    checks: dict[str, str]


class ClockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    now: AwareDatetime


class ClockOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"now": "2026-03-20T10:00:00Z", "manual": True}]})
    now: datetime
    manual: bool


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


Probe = Callable[["Runtime"], Awaitable[None]]


async def _probe_kafka(runtime: Runtime) -> None:
    await probe(runtime.producer)


async def _probe_redis(runtime: Runtime) -> None:
    await runtime.redis.ping()


async def _probe_clickhouse(runtime: Runtime) -> None:
    await runtime.clickhouse.ping()


async def _check(runtime: Runtime, name: str, probe_fn: Probe) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe_fn(runtime), timeout=2.0)
    except Exception as exc:  # any failure means "not ready", named below
        return name, f"unavailable: {type(exc).__name__}"
    return name, "ok"


PROBES: dict[str, Probe] = {"kafka": _probe_kafka, "redis": _probe_redis,
                            "clickhouse": _probe_clickhouse}


async def readiness(runtime: Runtime) -> dict[str, str]:
    """Each dependency's and background loop's state: `ok`, or why not (`/readyz`, and the
    console's operators page)."""
    results = dict(await asyncio.gather(*(_check(runtime, n, p) for n, p in PROBES.items())))
    results.update(runtime.health.problems())
    return results


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

@router.get("/readyz", tags=["health"], response_model=Readiness, responses={
    503: {"model": Readiness, "description": "a dependency or a background loop is down"}})
async def readyz(request: Request) -> JSONResponse:
    results = await readiness(runtime_of(request))
    down = sorted(n for n, state in results.items() if state != "ok")
    if down:
        body = {"error": {"code": "not_ready", "message": f"not ready: {', '.join(down)}"},
                "checks": results}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": results})

@router.get("/metrics", tags=["health"], response_class=Response, responses={200: {
    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
    "description": "Prometheus metrics, text format"}})
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

@router.post("/v1/api-keys", status_code=201, tags=["keys"], response_model=ApiKeyOut,
             responses=errors(400, 404, 422))
async def mint_key(body: ApiKeyRequest, request: Request, principal: AdminKey) -> ApiKeyOut:
    """A tenant's admin mints keys for its tenant only; keys name existing tenants."""
    runtime = runtime_of(request)
    if body.tenant is None and principal.tenant is not None:
        raise Forbidden("a key limited to a tenant mints keys for that tenant only",
                        field="tenant")
    if body.tenant is not None:
        principal.ensure_tenant(body.tenant)
        if not await runtime.redis.hexists(TENANT_ZONES, body.tenant):
            raise NotFound(f"tenant '{body.tenant}' not found", field="tenant")
    key, secret = await runtime.keys.mint(body.role, body.tenant)
    audit("api_key.mint", principal, minted=key.id, minted_role=key.role.value,
          tenant=key.tenant)
    return ApiKeyOut(id=key.id, role=key.role, tenant=key.tenant, key=secret)

# `response_model=Any`: the dict is rendered as before; `answers` documents its schema.
@router.get("/v1/api-keys", tags=["keys"], response_model=Any, responses=answers(ApiKeyList))
async def list_keys(request: Request, principal: AdminKey) -> dict[str, Any]:
    keys = await runtime_of(request).keys.list()
    return {"data": [ApiKeyOut(id=k.id, role=k.role, tenant=k.tenant).model_dump(
        exclude={"key"}) for k in keys if principal.may_see(k.tenant)]}

@router.delete("/v1/api-keys/{key_id}", status_code=204, tags=["keys"],
                responses=errors(404, 409, 422))
async def revoke_key(key_id: Annotated[str, Path(max_length=64)], request: Request,
                     principal: AdminKey) -> Response:
    if key_id == principal.key_id:
        # Revoking the key of the request could lock the last administrator out.
        raise Conflict("an API key cannot revoke itself: use another admin key",
                       field="id", code="key_in_use")
    keys = runtime_of(request).keys
    key = await keys.get(key_id)
    if key is None or not principal.may_see(key.tenant) or not await keys.revoke(key_id):
        raise NotFound(f"API key '{key_id}' not found", field="id")
    audit("api_key.revoke", principal, revoked=key_id, tenant=key.tenant)
    return Response(status_code=204)

@router.get("/v1/clock", tags=["clock"], response_model=ClockOut, responses=errors())
async def get_clock(request: Request,
                    _: AdminKey) -> ClockOut:
    clock = runtime_of(request).clock
    return ClockOut(now=(await clock.now()).astimezone(UTC), manual=clock.manual)

@router.put("/v1/clock", tags=["clock"], response_model=ClockOut,
            responses=errors(400, 409, 422))
async def set_clock(body: ClockRequest, request: Request,
                    principal: PlatformAdminKey) -> ClockOut:
    runtime = runtime_of(request)
    before = await runtime.clock.now()
    result = await runtime.scheduler.advance_to(body.now.astimezone(UTC))
    audit("clock.move", principal, before=utc_text(before), after=utc_text(result.now))
    return ClockOut(now=result.now, manual=True)
