"""The Redis client factory (valkey locally, Redis in production)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


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
    """Calls `_READ_MANY` over connections of its own: RESP written here, replies parsed by
    hiredis. On the check hot path redis-py spent ~45 µs of Python per call (measured), as
    much as the round trip itself. A small pool of keep-alive connections; any failure closes
    the connection and surfaces as redis-py's ConnectionError or TimeoutError, which the
    routes answer with 503."""

    def __init__(self, redis: Redis, timeout_s: float = 2.0) -> None:
        options = redis.connection_pool.connection_kwargs
        self._host: str = options.get("host", "127.0.0.1")
        self._port: int = int(options.get("port", 6379))
        self._db: int = int(options.get("db", 0) or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._timeout_s = timeout_s
        self._sha = hashlib.sha1(_READ_MANY.encode()).hexdigest()
        self._idle: list[_Connection] = []

    async def __call__(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        args: list[str] = []
        for command in commands:
            args.append(str(len(command)))
            args.extend(command)
        if self._idle:
            try:
                return await self._call(self._idle.pop(), args)
            except RedisConnectionError:
                # A pooled connection died (Redis restarted): so did the others; start over.
                for stale in self._idle:
                    stale.close()
                self._idle.clear()
        return await self._call(None, args)

    async def _call(self, connection: _Connection | None, args: list[str]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                if connection is None:
                    connection = await self._connect()
                reply = await connection.call("EVALSHA", self._sha, "0", *args)
                if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                    reply = await connection.call("EVAL", _READ_MANY, "0", *args)
        except TimeoutError:
            if connection is not None:
                connection.close()
            raise RedisTimeoutError("Redis did not answer in time") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            if connection is not None:
                connection.close()
            raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
        self._idle.append(connection)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        replies: list[Any] = reply
        return replies

    def close(self) -> None:
        """Close the idle connections (those in use close when their call ends)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        connection = _Connection(reader, writer)
        if self._password is not None:
            auth = ([self._username] if self._username else []) + [self._password]
            await connection.expect_ok("AUTH", *auth)
        if self._db:
            await connection.expect_ok("SELECT", str(self._db))
        return connection


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader(encoding="utf-8")

    async def call(self, *args: str) -> Any:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self._writer.write(b"".join(out))
        while (reply := self._parser.gets()) is False:
            chunk = await self._reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            self._parser.feed(chunk)
        return reply

    async def expect_ok(self, *args: str) -> None:
        reply = await self.call(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisConnectionError(f"{args[0]} refused: {reply}")

    def close(self) -> None:
        self._writer.close()
