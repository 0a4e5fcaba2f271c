"""API keys with a role and an optional tenant scope (docs/api.md "Keys").

Secrets are random 192-bit tokens, so a plain SHA-256 is the right hash: nothing to brute
force, and the lookup on every request stays one Redis round trip.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from redis.asyncio import Redis

from shared.errors import Forbidden, NotFound, Unauthorized
from shared.keys import API_KEY_IDS, api_key_by_hash, api_key_by_id
from shared.openapi import BEARER
from shared.redis import text

# Where `require` leaves the caller's key id in the ASGI scope, for the access log.
KEY_ID_SCOPE = "meterbill.key_id"


class Role(StrEnum):
    INGEST = "ingest"
    FINANCE = "finance"
    DASHBOARD = "dashboard"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role
    tenant: str | None

    def ensure_tenant(self, tenant: str) -> None:
        """A tenant-limited key sees another tenant as if it did not exist."""
        if self.tenant is not None and self.tenant != tenant:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")

    def may_see(self, tenant: str | None) -> bool:
        """Whether data of `tenant` (None: of the platform) is in this key's scope."""
        return self.tenant is None or self.tenant == tenant


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: Role
    tenant: str | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def mint(self, role: Role, tenant: str | None) -> tuple[ApiKey, str]:
        key = ApiKey(id=f"key-{secrets.token_hex(8)}", role=role, tenant=tenant)
        secret = f"mb_{role.value}_{secrets.token_urlsafe(24)}"
        await self._store(key, _digest(secret))
        return key, secret

    async def ensure_admin(self, secret: str) -> None:
        """The bootstrap admin key from ADMIN_API_KEY (docs/api.md): idempotent across restarts."""
        await self._store(ApiKey(id="key-admin", role=Role.ADMIN, tenant=None), _digest(secret))

    async def _store(self, key: ApiKey, digest: str) -> None:
        previous = await self._redis.get(api_key_by_id(key.id))
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous is not None and text(previous) != digest:
                pipe.delete(api_key_by_hash(text(previous)))
            pipe.hset(api_key_by_hash(digest),
                      mapping={"id": key.id, "role": key.role.value, "tenant": key.tenant or ""})
            pipe.set(api_key_by_id(key.id), digest)
            pipe.sadd(API_KEY_IDS, key.id)
            await pipe.execute()

    async def record(self, secret: str) -> Mapping[Any, Any]:
        """The stored record of a secret; empty when unknown or revoked."""
        return await self._redis.hgetall(api_key_by_hash(_digest(secret)))

    async def get(self, key_id: str) -> ApiKey | None:
        digest = await self._redis.get(api_key_by_id(key_id))
        fields = None if digest is None else await self._redis.hgetall(
            api_key_by_hash(text(digest)))
        return _decode(fields) if fields else None

    async def list(self) -> list[ApiKey]:
        ids = sorted(text(m) for m in await self._redis.smembers(API_KEY_IDS))
        keys = []
        for key_id in ids:
            digest = await self._redis.get(api_key_by_id(key_id))
            if digest is None:
                continue
            fields = await self._redis.hgetall(api_key_by_hash(text(digest)))
            if fields:
                keys.append(_decode(fields))
        return keys

    async def revoke(self, key_id: str) -> bool:
        digest = await self._redis.get(api_key_by_id(key_id))
        if digest is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(api_key_by_hash(text(digest)), api_key_by_id(key_id))
            pipe.srem(API_KEY_IDS, key_id)
            await pipe.execute()
        return True


def _decode(raw: Mapping[Any, Any]) -> ApiKey:
    fields = {text(k): text(v) for k, v in raw.items()}
    return ApiKey(id=fields["id"], role=Role(fields["role"]), tenant=fields["tenant"] or None)


def bearer_secret(header: str) -> str:
    """The secret of an `Authorization: Bearer <key>` header."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'",
                           field="Authorization")
    return secret.strip()


def lookup_command(secret: str) -> tuple[str, str]:
    """The Redis command that reads a key's record, for callers that pipeline it with the
    reads of their request (one round trip on a hot path)."""
    return "HGETALL", api_key_by_hash(_digest(secret))


def key_from_reply(reply: Mapping[Any, Any] | None) -> ApiKey:
    if not reply:
        raise Unauthorized("unknown or revoked API key", field="Authorization")
    return _decode(reply)


class RoleCheck:
    """Who may call a route: the given roles, and admin always; a platform-wide route only
    an admin key limited to no tenant (a tenant's admin acts on its tenant alone)."""

    def __init__(self, *roles: Role, platform_wide: bool = False) -> None:
        self.allowed = frozenset(roles) | {Role.ADMIN}
        self.platform_wide = platform_wide
        self._names = ", ".join(sorted(r.value for r in self.allowed))

    def allows(self, key: ApiKey) -> bool:
        """Whether `admit` lets the key in (the console shows only what a key may use)."""
        try:
            self.admit(key, "", "")
        except Forbidden:
            return False
        return True

    def admit(self, key: ApiKey, method: str, path: str) -> Principal:
        if key.role not in self.allowed:
            raise Forbidden(f"role '{key.role.value}' may not call {method} {path} "
                            f"(needs one of: {self._names})")
        if self.platform_wide and key.tenant is not None:
            raise Forbidden(f"{method} {path} acts on the whole platform: it needs an admin "
                            "key limited to no tenant")
        return Principal(key_id=key.id, role=key.role, tenant=key.tenant)


def require(*roles: Role, platform_wide: bool = False
            ) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting the given roles (admin is always admitted)."""
    check = RoleCheck(*roles, platform_wide=platform_wide)

    async def dependency(request: Request,
                         _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
                         ) -> Principal:
        # `_` puts the bearer scheme on the route in the OpenAPI document; the header is read
        # here, as the fast paths read it, for the same 401 messages.
        secret = bearer_secret(request.headers.get("authorization", ""))
        keys: KeyStore = request.app.state.runtime.keys
        key = key_from_reply(await keys.record(secret))
        # For the access log (shared.app.MetricsMiddleware): who called, even when refused.
        request.scope[KEY_ID_SCOPE] = key.id
        return check.admit(key, request.method, request.url.path)

    return dependency


AdminKey = Annotated[Principal, Depends(require(Role.ADMIN))]
PlatformAdminKey = Annotated[Principal, Depends(require(Role.ADMIN, platform_wide=True))]
