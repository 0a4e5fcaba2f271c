"""The Redis client factory (valkey locally, Redis in production)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis


def make_redis(url: str) -> Redis:
    # Short timeouts: a check must fail fast when the store is away, not hang a request.
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                          health_check_interval=10, max_connections=256,
                          decode_responses=True)


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client decodes; the stubs still say bytes | str)."""
    return value.decode() if isinstance(value, bytes) else value


# Runs read commands given as [argc, command, args..., argc, command, ...] and returns their
# replies in order: several reads in one command, so one reply to parse (redis-py spends more
# time per pipelined command than the server does). Read-only commands only; keys are not
# declared, so this is for a single Redis, not a cluster.
_READ_MANY = """
local replies = {}
local i = 1
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  replies[#replies + 1] = redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return replies
"""


class ReadMany:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_READ_MANY)

    async def __call__(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        args: list[str] = []
        for command in commands:
            args.append(str(len(command)))
            args.extend(command)
        replies: list[Any] = await self._script(args=args)
        return replies
