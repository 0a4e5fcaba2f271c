"""The FastAPI application shared by every service: wiring, errors, the platform routes.

A service contributes a `ServicePart` (its router, and start/stop hooks that wire its store,
service and workers onto the `Runtime`). `create_app` serves one part per process in
production, or all three in one process in embedded mode.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import DatabaseError as ClickHouseDatabaseError
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api_docs import install_api_docs
from shared.auth import KEY_ID_SCOPE, KeyStore
from shared.clickhouse.client import ClickHouse, connect
from shared.clickhouse.migrate import migrate
from shared.clock import Clock, ManualClock, Scheduler, WallClock
from shared.consumer import LoopHealth
from shared.errors import (
    AppError,
    BadRequest,
    Unavailable,
    ValidationFailed,
)
from shared.kafka import ensure_topics, make_producer, platform_topics
from shared.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    access_log,
    configure_logging,
    enable_access_log,
)
from shared.openapi import add_links, add_referenced_components, operation_id
from shared.platform_api import router as platform_router
from shared.redis import make_redis
from shared.settings import CommonSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The clients a process holds, opened once in the lifespan and shared by its services."""

    settings: CommonSettings
    redis: Redis
    clickhouse: ClickHouse
    producer: AIOKafkaProducer
    clock: Clock
    scheduler: Scheduler
    keys: KeyStore
    # The application's state: where each service part puts what its routes depend on.
    app_state: State = field(default_factory=State)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # Background loops that cannot go on: `/readyz` turns 503 while any is listed.
    health: LoopHealth = field(default_factory=LoopHealth)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run(), name=name)
        self.health.supervise(task)
        self.background.append(task)


class FastPath(Protocol):
    """A hot route answered before FastAPI's middleware, routing and dependency solving
    (which, measured here, halve what a worker serves). It must apply the same rules as the
    documented FastAPI route it shadows."""

    def claims(self, scope: Scope) -> bool: ...

    async def serve(self, app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None: ...


class ServicePart(Protocol):
    """A service's contribution to an app. It may also carry `fast_paths` (FastPath)."""

    name: str
    router: APIRouter

    async def start(self, runtime: Runtime) -> None: ...

    async def stop(self) -> None: ...


def state_of(name: str) -> Callable[[Request], Any]:
    """A route dependency: what a part put in the app's state under `name` at its start
    (`Annotated[TheService, Depends(state_of("name"))]` gives routes its type)."""
    def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = name
    return dependency


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_each(*running: Stoppable | None) -> None:
    """Stop what a part started, in the order given (None: never started, or stopped)."""
    for each in running:
        if each is not None:
            await each.stop()


async def open_runtime(settings: CommonSettings) -> Runtime:
    redis = make_redis(settings.redis_url)
    clickhouse = connect(settings.clickhouse_dsn)
    await migrate(clickhouse)
    await ensure_topics(settings.kafka_bootstrap, platform_topics(settings))
    producer = make_producer(settings)
    await producer.start()
    clock: Clock
    if settings.clock == "manual":
        manual = ManualClock(redis, settings.clock_start or await WallClock().now())
        await manual.init()
        clock = manual
    else:
        clock = WallClock()
    keys = KeyStore(redis)
    if settings.admin_api_key:
        await keys.ensure_admin(settings.admin_api_key)
    return Runtime(settings=settings, redis=redis, clickhouse=clickhouse, producer=producer,
                   clock=clock, keys=keys,
                   scheduler=Scheduler(clock, timedelta(days=settings.clock_max_step_days)),
                   health=LoopHealth(settings.loop_stall_after_s))


async def close_runtime(runtime: Runtime) -> None:
    for task in runtime.background:
        task.cancel()
    await asyncio.gather(*runtime.background, return_exceptions=True)
    await runtime.producer.stop()
    await runtime.redis.aclose()
    runtime.clickhouse.close()


def create_app(settings: CommonSettings, parts: list[ServicePart],
               title: str = "meterbill") -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings)
        runtime.app_state = app.state
        app.state.runtime = runtime
        started: list[ServicePart] = []
        try:
            for part in parts:
                await part.start(runtime)
                started.append(part)
            runtime.spawn(runtime.scheduler.run_forever(settings.scheduler_tick_s), "scheduler")
            tune_gc()
            yield
        finally:
            runtime.scheduler.stop()
            for part in reversed(started):
                await part.stop()
            await close_runtime(runtime)

    enable_access_log(settings.access_log)
    fast_paths = [path for part in parts for path in getattr(part, "fast_paths", ())]
    # /docs and /redoc are served with local assets (shared.api_docs), never a CDN's.
    app = PlatformApp(fast_paths, title=title, version="1", lifespan=lifespan,
                      generate_unique_id_function=operation_id, docs_url=None,
                      redoc_url=None)
    install_api_docs(app)
    install_error_handlers(app)
    app.include_router(platform_router)
    for part in parts:
        app.include_router(part.router)
    app.add_middleware(MetricsMiddleware)
    return app


def tune_gc() -> None:
    """The consumers allocate many short-lived objects per batch: with the default gen-0
    threshold of 700 the collector runs thousands of times a second (measured: about a third
    of a batch's Python time). Objects alive after start-up are frozen out of collections."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class PlatformApp(FastAPI):
    """FastAPI, with the parts' fast paths tried first."""

    def __init__(self, fast_paths: Sequence[FastPath], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_paths = list(fast_paths)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            add_referenced_components(document)
            add_links(document)
        return super().openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for path in self.fast_paths:
                if path.claims(scope):
                    await path.serve(self, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def standalone_app(part: ServicePart) -> FastAPI:
    """One service as its own process, configured by the environment alone (production)."""
    settings = CommonSettings()
    configure_logging(settings.log_level)
    return create_app(settings, [part], title=f"meterbill-{part.name}")


# --- errors ------------------------------------------------------------------------------

def _field_path(loc: Sequence[Any]) -> str:
    # FastAPI prefixes where the value came from; callers know fields by their own names.
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        where = _field_path(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            error: AppError = BadRequest(f"the body is not valid JSON: {first.get('msg')}",
                                         field="body", code="invalid_json")
        else:
            error = ValidationFailed(f"{where}: {first.get('msg')}", field=where)
        return JSONResponse(error.body(), status_code=error.status)

    async def dependency_down(request: Request, exc: Exception) -> JSONResponse:
        error = unavailable(exc, request.method, request.url.path)
        return JSONResponse(error.body(), status_code=error.status, headers={"Retry-After": "1"})

    for dependency_error in DEPENDENCY_ERRORS:
        app.add_exception_handler(dependency_error, dependency_down)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the caller's input: logged with its trace, answered in the same shape.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}},
                            status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only; a path served
            # by several routes (GET and PATCH of a tenant) allows all of theirs.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and isinstance(route, Route):
            methods |= route.methods or set()
    return sorted(methods)


DEPENDENCY_ERRORS: dict[type[Exception], str] = {
    RedisConnectionError: "redis", RedisTimeoutError: "redis",
    KafkaError: "kafka",
    ClickHouseDatabaseError: "clickhouse", ClickHouseOperationalError: "clickhouse",
}


def unavailable(exc: Exception, method: str, path: str) -> Unavailable:
    """A store that is down, as the 503 the caller gets (never a 500)."""
    part = next(name for kind, name in DEPENDENCY_ERRORS.items() if isinstance(exc, kind))
    log.warning("%s unavailable on %s %s: %s", part, method, path, exc)
    return Unavailable(f"{part} is unavailable; retry later", code=f"{part}_unavailable")


# --- metrics -----------------------------------------------------------------------------

# Polled every few seconds by orchestrators and Prometheus: counted in the metrics, but kept
# out of the access log, where they would drown the callers' requests.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class MetricsMiddleware:
    """Counts, times and logs requests by route template (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(route).observe(seconds)
            if route not in PROBES:
                access_log(scope["method"], route, status, seconds, scope.get(KEY_ID_SCOPE))
