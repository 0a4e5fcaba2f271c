"""The Redis client factory (valkey locally, Redis in production) and two lean script
clients for hot paths."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
        self._endpoint = _Endpoint.of(redis)
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
                    connection = await self._endpoint.connect()
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

Arg = str | bytes


class ScriptPipe:
    """One Lua script (no declared keys) down one connection of its own: the server runs the
    calls in the order they were sent, while their replies are awaited concurrently. So a
    caller can send its next calls before the previous ones have answered (and build them
    while the server works) without the order changing. The script goes as EVAL, whose
    server-side cache makes a body sent again cost a hash, and a restarted server needs no
    reload. A broken connection fails every call awaiting a reply (redis-py's
    ConnectionError); the next `send` opens a new one."""

    def __init__(self, redis: Redis, script: str, timeout_s: float) -> None:
        self._endpoint = _Endpoint.of(redis)
        self._script = script
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._awaiting: deque[asyncio.Future[Any]] = deque()
        self._connecting = asyncio.Lock()

    async def send(self, calls: Iterable[Sequence[Arg]]) -> list[asyncio.Future[Any]]:
        """Write each call as `calls` yields it; the futures of their replies, in order."""
        connection = await self._open()
        loop = asyncio.get_running_loop()
        futures = []
        for args in calls:
            connection.send("EVAL", self._script, "0", *args)
            future: asyncio.Future[Any] = loop.create_future()
            self._awaiting.append(future)
            futures.append(future)
        return futures

    async def replies(self, futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = [await future for future in futures]
        except TimeoutError:
            self._reset(RedisTimeoutError("Redis did not answer in time"))
            raise RedisTimeoutError("Redis did not answer in time") from None
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return replies

    def close(self) -> None:
        self._reset(RedisConnectionError("closed"))

    async def _open(self) -> _Connection:
        async with self._connecting:
            if self._connection is None:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        connection = await self._endpoint.connect()
                except (OSError, TimeoutError) as exc:
                    raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
                self._connection = connection
                self._reader = asyncio.create_task(self._read(connection))
            return self._connection

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                reply = await connection.receive()
                future = self._awaiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except (OSError, asyncio.IncompleteReadError) as exc:
            if connection is self._connection:
                self._reset(RedisConnectionError(f"Redis connection failed: {exc}"))

    def _reset(self, error: Exception) -> None:
        """Drop the connection and fail every call still awaiting its reply."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        while self._awaiting:
            future = self._awaiting.popleft()
            if not future.done():
                future.set_exception(error)


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @classmethod
    def of(cls, redis: Redis) -> _Endpoint:
        """Where a redis-py client connects, from the URL it was made with."""
        options = redis.connection_pool.connection_kwargs
        return cls(host=options.get("host", "127.0.0.1"), port=int(options.get("port", 6379)),
                   db=int(options.get("db", 0) or 0), username=options.get("username"),
                   password=options.get("password"))

    async def connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        connection = _Connection(reader, writer)
        if self.password is not None:
            auth = ([self.username] if self.username else []) + [self.password]
            await connection.expect_ok("AUTH", *auth)
        if self.db:
            await connection.expect_ok("SELECT", str(self.db))
        return connection


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader(encoding="utf-8")

    async def call(self, *args: Arg) -> Any:
        self.send(*args)
        return await self.receive()

    def send(self, *args: Arg) -> None:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self._writer.write(b"".join(out))

    async def receive(self) -> Any:
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
