"""`GET /v1/tenants/{tenant}/check` as a fast path (shared.app.FastPath): the hot path of
every product backend, answered before FastAPI's middleware and routing, with the same rules
(`shared.auth`) and the same service calls as the documented route in api.py, and the API
key read in the same script call as the check's own reads: one round trip per decision."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import Receive, Scope, Send

from services.entitlements.api import check_item
from services.entitlements.service import EntitlementsService
from shared.app import unavailable
from shared.auth import (
    KEY_ID_SCOPE,
    Role,
    RoleCheck,
    bearer_secret,
    key_from_reply,
    lookup_command,
)
from shared.errors import AppError
from shared.observability import HTTP_LATENCY, HTTP_REQUESTS, access_log

PREFIX = "/v1/tenants/"
SUFFIX = "/check"
ROUTE = "/v1/tenants/{tenant}/check"
ROLES = RoleCheck(Role.INGEST)
LATENCY = HTTP_LATENCY.labels(ROUTE)


class CheckFastPath:
    def claims(self, scope: Scope) -> bool:
        path: str = scope["path"]
        return (scope["method"] == "GET" and path.startswith(PREFIX) and path.endswith(SUFFIX)
                and "/" not in path[len(PREFIX):-len(SUFFIX)] and len(path) > len(PREFIX)
                + len(SUFFIX))

    async def serve(self, app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        service: EntitlementsService = app.state.entitlements
        status = 200
        try:
            body = await self._decide(service, scope, unquote(path[len(PREFIX):-len(SUFFIX)]),
                                      path)
        except AppError as error:
            status, body = error.status, error.body()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            down = unavailable(exc, "GET", path)
            status, body = down.status, down.body()
        payload = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        seconds = time.perf_counter() - started
        HTTP_REQUESTS.labels("GET", ROUTE, str(status)).inc()
        LATENCY.observe(seconds)
        # The middleware is bypassed here, so the fast path writes its own access line.
        access_log("GET", ROUTE, status, seconds, scope.get(KEY_ID_SCOPE))

    @staticmethod
    async def _decide(service: EntitlementsService, scope: Scope, tenant: str,
                      path: str) -> dict[str, Any]:
        headers = dict(scope["headers"])
        secret = bearer_secret(headers.get(b"authorization", b"").decode("latin-1"))
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        # The key is judged first (401, 403, 404 before a bad query's 422), yet read in the
        # same call as the check's own reads.
        try:
            query = service.checks.parse_query(check_item(tenant, params))
        except AppError as error:
            query, bad_query = None, error
        keyed = await service.checks.check_with_key(lookup_command(secret), tenant, query)
        record = keyed.key_record  # HGETALL's reply, flat from a script
        key = key_from_reply(dict(zip(record[::2], record[1::2], strict=True)))
        scope[KEY_ID_SCOPE] = key.id
        principal = ROLES.admit(key, "GET", path)
        principal.ensure_tenant(tenant)
        if query is None:
            raise bad_query
        return await service.checks.decide_keyed(query, keyed)
