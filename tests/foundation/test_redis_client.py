"""shared.redis.make_redis: the client every service shares outlives a Redis restart."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.redis import make_redis
from shared.stack import TansuBroker, ValkeyServer


async def test_pooled_connections_dead_after_a_restart_are_replaced(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    _, valkey = private_parts
    redis = make_redis(valkey.url)
    try:
        await redis.set("client:k", "v")  # leaves a connection in the pool
        valkey.stop()
        valkey.start()
        # The pooled connection died with the server: the command is sent again on a new one
        # instead of failing a request with "Connection closed by server" (seen in CI).
        assert await redis.get("client:k") == "v"
        valkey.stop()
        # While Redis is away a command still fails, and fast, so a route answers 503.
        with pytest.raises(RedisConnectionError):
            await redis.get("client:k")
    finally:
        valkey.start()
        await redis.aclose()
