"""The Redis client factory (valkey locally, Redis in production) and two lean script
clients for hot paths."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def make_redis(url: str) -> Redis:
    # Short timeouts: a check must fail fast when the store is away, not hang a request.
    # A command that meets a dead connection (Redis restarted or failed over since it was
    # pooled) is sent again on a new one, twice at most, quickly: redis-py retries nothing
    # by default, and stale pooled connections failed requests after a restart. Connection
    # errors only, not timeouts; a command whose connection broke after it ran is sent again
    # too, so every write through this client is safe to repeat (docs/architecture.md).
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2,
                  supported_errors=(RedisConnectionError,))
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                          health_check_interval=10, max_connections=256,
                          decode_responses=True, retry=retry)


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
    """Several read commands in one call of `_READ_MANY`: one round trip, one reply, over a
    `ScriptPipe` of its own that writes the calls made in one turn of the event loop together
    (the checks in flight at once share a write and a wake-up of the server). On the check hot
    path redis-py spent ~45 µs of Python per call (measured), as much as the round trip."""

    def __init__(self, redis: Redis, timeout_s: float = 2.0) -> None:
        self._pipe = ScriptPipe(redis, _READ_MANY, timeout_s, coalesce=True)

    async def __call__(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        args: list[str] = []
        for command in commands:
            args.append(str(len(command)))
            args.extend(command)
        [replies] = await self._pipe.replies(await self._pipe.send([args]))
        return list(replies)

    def close(self) -> None:
        self._pipe.close()


Arg = str | bytes


class ScriptPipe:
    """One Lua script (no declared keys) down one connection of its own: the server runs the
    calls in the order they were sent, while their replies are awaited concurrently. So a
    caller can send its next calls before the previous ones have answered (and build them
    while the server works) without the order changing.

    Calls are written as they are made, or, with `coalesce`, gathered until the event loop's
    turn ends and written together: many callers in flight at once (a server's requests) then
    cost one write and one wake-up of the server, which on these VMs cost more than the
    script itself. The script is loaded when the connection opens and called by its SHA.

    A broken connection, one whose oldest call has not answered within `timeout_s`, or a
    server that cannot run the call now (loading, busy, a replica without its primary, its
    scripts flushed) fails every call awaiting a reply on it with redis-py's ConnectionError
    or TimeoutError, which routes answer with 503; the next `send` opens a new connection,
    one attempt shared by every caller waiting for it. One timer watches the oldest call,
    rather than one per call: a timer per call cost as much as the rest of a check's client
    work."""

    def __init__(self, redis: Redis, script: str, timeout_s: float, *,
                 coalesce: bool = False) -> None:
        self._endpoint = _Endpoint.of(redis)
        self._script = script
        self._timeout_s = timeout_s
        self._coalesce = coalesce
        self._connection: _Connection | None = None
        self._opening: asyncio.Future[_Connection] | None = None
        self._closed = False
        self._sha = ""
        self._reader: asyncio.Task[None] | None = None
        self._awaiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None

    async def send(self, calls: Iterable[Sequence[Arg]]) -> list[asyncio.Future[Any]]:
        """Write each call as `calls` yields it (or at the end of this turn of the loop,
        with `coalesce`); the futures of their replies, in order."""
        connection = self._connection or await self._open()
        write = connection.send_later if self._coalesce else connection.send
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        futures = []
        for args in calls:
            write("EVALSHA", self._sha, "0", *args)
            future: asyncio.Future[Any] = loop.create_future()
            self._awaiting.append((future, deadline))
            futures.append(future)
        if self._watchdog is None and self._awaiting:
            self._watchdog = loop.call_at(self._awaiting[0][1], self._watch)
        return futures

    async def replies(self, futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
        try:
            replies = [await future for future in futures]
        finally:
            # Calls fail together (the connection went): the first error is raised, the
            # others are marked seen so asyncio does not log them as lost.
            for future in futures:
                if future.done() and not future.cancelled():
                    future.exception()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return replies

    def close(self) -> None:
        self._closed = True
        self._reset(RedisConnectionError("closed"))

    async def _open(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("this client was closed")
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
        opening = self._opening
        try:
            # Shielded: a caller giving up does not cancel the attempt the others wait on.
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _connect(self) -> _Connection:
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                connection = await self._endpoint.connect()
                sha = await connection.call("SCRIPT", "LOAD", self._script)
            if isinstance(sha, hiredis.ReplyError):
                raise _unavailable(sha) if _transient(sha) else ResponseError(
                    f"loading the script failed: {sha}")
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, OSError | TimeoutError | asyncio.IncompleteReadError):
                raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
            raise
        self._connection, self._sha = connection, str(sha)
        self._reader = asyncio.create_task(self._read(connection))
        return connection

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                reply = await connection.receive()
                if not self._awaiting:
                    raise hiredis.ProtocolError(f"a reply nobody asked for: {reply!r:.80}")
                future, _ = self._awaiting.popleft()
                if isinstance(reply, hiredis.ReplyError) and _transient(reply):
                    # Not this call's fault: the server cannot run calls now.
                    if not future.done():
                        future.set_exception(_unavailable(reply))
                    if connection is self._connection:
                        self._reset(_unavailable(reply))
                    return
                if not future.done():
                    future.set_result(reply)
        except Exception as exc:
            # A broken or garbled stream, or a reply no call awaits: out of step, start over.
            if connection is self._connection:
                self._reset(RedisConnectionError(f"Redis connection failed: {exc}"))

    def _watch(self) -> None:
        """The oldest call's deadline: past it, the server is taken as gone."""
        self._watchdog = None
        if not self._awaiting:
            return
        deadline = self._awaiting[0][1]
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._reset(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._watchdog = loop.call_at(deadline, self._watch)

    def _reset(self, error: Exception) -> None:
        """Drop the connection and fail every call still awaiting its reply."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._awaiting:
            future, _ = self._awaiting.popleft()
            if not future.done():
                future.set_exception(error)


# Error replies that say the server cannot run calls now, not that a call is wrong: redis-py
# raises these as ConnectionError too (BusyLoadingError), so they reach users as 503s.
_TRANSIENT: Final = ("LOADING", "BUSY", "MASTERDOWN", "NOSCRIPT", "TRYAGAIN")


def _transient(reply: hiredis.ReplyError) -> bool:
    return str(reply).startswith(_TRANSIENT)


def _unavailable(reply: hiredis.ReplyError) -> RedisConnectionError:
    return RedisConnectionError(f"Redis cannot run the call now: {reply}")


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
        try:
            if self.password is not None:
                auth = ([self.username] if self.username else []) + [self.password]
                await connection.expect_ok("AUTH", *auth)
            if self.db:
                await connection.expect_ok("SELECT", str(self.db))
        except BaseException:
            connection.close()
            raise
        return connection


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader(encoding="utf-8")
        self._held: list[bytes] = []

    async def call(self, *args: Arg) -> Any:
        self.send(*args)
        return await self.receive()

    def send(self, *args: Arg) -> None:
        self._writer.write(_command(args))

    def send_later(self, *args: Arg) -> None:
        """Write a command at the end of this turn of the event loop, together with the
        others sent so."""
        if not self._held:
            asyncio.get_running_loop().call_soon(self._write_held)
        self._held.append(_command(args))

    def _write_held(self) -> None:
        self._writer.write(b"".join(self._held))
        self._held.clear()

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


def _command(args: Sequence[Arg]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)
