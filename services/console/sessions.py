"""Console sign-in: an API key is posted once, the browser keeps only an opaque session id.

The cookie holds a random token; valkey holds, under the token's SHA-256, the key's id and the
session's CSRF token, with an expiry. The key's role and tenant scope are read again from the
key store on every request, so revoking a key ends its console sessions at once, and the key's
secret is never stored anywhere by the console.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.auth import ApiKey, KeyStore
from shared.keys import console_session_key
from shared.redis import text

SESSION_COOKIE = "mb_console"
# The login form's own CSRF token (double submit): no session exists yet to hold it.
LOGIN_COOKIE = "mb_console_login"
COOKIE_PATH = "/console"


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    key: ApiKey
    csrf: str

    def csrf_ok(self, posted: str | None) -> bool:
        return posted is not None and hmac.compare_digest(posted, self.csrf)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, redis: Redis, keys: KeyStore, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def open(self, key: ApiKey) -> Session:
        session = Session(token=new_token(), key=key, csrf=new_token())
        name = console_session_key(_digest(session.token))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"key_id": key.id, "csrf": session.csrf})
            pipe.expire(name, self.ttl_s)
            await pipe.execute()
        return session

    async def find(self, token: str | None) -> Session | None:
        """The live session of a cookie's token; None when unknown, expired or its key was
        revoked since."""
        if not token or len(token) > 128:
            return None
        fields = await self.redis.hgetall(console_session_key(_digest(token)))
        if not fields:
            return None
        values = {text(k): text(v) for k, v in fields.items()}
        key = await self.keys.get(values["key_id"])
        if key is None:
            return None
        return Session(token=token, key=key, csrf=values["csrf"])

    async def close(self, token: str) -> None:
        await self.redis.delete(console_session_key(_digest(token)))
