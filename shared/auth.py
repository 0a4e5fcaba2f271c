"""API keys with a role and an optional tenant scope (api.md "Keys").

Secrets are random 192-bit tokens, so a plain SHA-256 is the right hash: nothing to brute
force, and the lookup on every request stays one Redis round trip.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from shared.errors import Forbidden, NotFound, Unauthorized
from shared.redis import text


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


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: Role
    tenant: str | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    _BY_HASH = "apikey:hash:"
    _BY_ID = "apikey:id:"
    _IDS = "apikeys"

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def mint(self, role: Role, tenant: str | None) -> tuple[ApiKey, str]:
        key = ApiKey(id=f"key-{secrets.token_hex(8)}", role=role, tenant=tenant)
        secret = f"mb_{role.value}_{secrets.token_urlsafe(24)}"
        await self._store(key, _digest(secret))
        return key, secret

    async def ensure_admin(self, secret: str) -> None:
        """The bootstrap admin key from ADMIN_API_KEY (api.md): idempotent across restarts."""
        await self._store(ApiKey(id="key-admin", role=Role.ADMIN, tenant=None), _digest(secret))

    async def _store(self, key: ApiKey, digest: str) -> None:
        previous = await self._redis.get(self._BY_ID + key.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            if previous is not None and text(previous) != digest:
                pipe.delete(self._BY_HASH + text(previous))
            pipe.hset(self._BY_HASH + digest,
                      mapping={"id": key.id, "role": key.role.value, "tenant": key.tenant or ""})
            pipe.set(self._BY_ID + key.id, digest)
            pipe.sadd(self._IDS, key.id)
            await pipe.execute()

    async def lookup(self, secret: str) -> ApiKey | None:
        fields = await self._redis.hgetall(self._BY_HASH + _digest(secret))
        if not fields:
            return None
        return _decode(fields)

    async def list(self) -> list[ApiKey]:
        ids = sorted(text(m) for m in await self._redis.smembers(self._IDS))
        keys = []
        for key_id in ids:
            digest = await self._redis.get(self._BY_ID + key_id)
            if digest is None:
                continue
            fields = await self._redis.hgetall(self._BY_HASH + text(digest))
            if fields:
                keys.append(_decode(fields))
        return keys

    async def revoke(self, key_id: str) -> bool:
        digest = await self._redis.get(self._BY_ID + key_id)
        if digest is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._BY_HASH + text(digest), self._BY_ID + key_id)
            pipe.srem(self._IDS, key_id)
            await pipe.execute()
        return True


def _decode(raw: Mapping[bytes | str, bytes | str]) -> ApiKey:
    fields = {text(k): text(v) for k, v in raw.items()}
    return ApiKey(id=fields["id"], role=Role(fields["role"]), tenant=fields["tenant"] or None)


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting the given roles (admin is always admitted)."""
    allowed = frozenset(roles) | {Role.ADMIN}
    names = ", ".join(sorted(r.value for r in allowed))

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'",
                               field="Authorization")
        keys: KeyStore = request.app.state.runtime.keys
        key = await keys.lookup(secret.strip())
        if key is None:
            raise Unauthorized("unknown or revoked API key", field="Authorization")
        if key.role not in allowed:
            raise Forbidden(f"role '{key.role.value}' may not call {request.method} "
                            f"{request.url.path} (needs one of: {names})")
        return Principal(key_id=key.id, role=key.role, tenant=key.tenant)

    return dependency


AdminKey = Annotated[Principal, Depends(require(Role.ADMIN))]
