"""The Redis client factory (valkey locally, Redis in production)."""

from __future__ import annotations

from redis.asyncio import Redis


def make_redis(url: str) -> Redis:
    # Short timeouts: a check must fail fast when the store is away, not hang a request.
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                          health_check_interval=10, max_connections=256,
                          decode_responses=True)


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client decodes; the stubs still say bytes | str)."""
    return value.decode() if isinstance(value, bytes) else value
