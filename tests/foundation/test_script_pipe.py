"""shared.redis.ScriptPipe: calls sent before earlier ones answered run in the order sent, and
each reply reaches its own call, through restarts and script errors."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis import ReadMany, ScriptPipe, make_redis
from shared.stack import Endpoints, TansuBroker, ValkeyServer
from tests.conftest import eventually, redis_db_url

# Appends ARGV[2] to the list ARGV[1] and answers with what it appended and where.
APPEND = """
local length = redis.call('RPUSH', ARGV[1], ARGV[2])
if ARGV[2] == 'fail' then return redis.error_reply('asked to fail') end
return {ARGV[2], length}
"""


async def test_calls_run_in_the_order_sent_and_answer_their_own_futures(
        endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    pipe = ScriptPipe(redis, APPEND, timeout_s=10)
    key = f"pipe:{unique}"
    try:
        first = await pipe.send([(key, "a1"), (key, "a2")])
        # Sent before the first calls have answered, built lazily as they are written.
        second = await pipe.send((key, f"b{n}") for n in range(1, 4))
        third = await pipe.send([(key, "c1")])
        replies = await asyncio.gather(pipe.replies(third), pipe.replies(first),
                                       pipe.replies(second))
        assert list(replies) == [[["c1", 6]], [["a1", 1], ["a2", 2]],
                           [["b1", 3], ["b2", 4], ["b3", 5]]]
    finally:
        pipe.close()
        await redis.aclose()


async def test_a_script_error_fails_its_call_only(endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    pipe = ScriptPipe(redis, APPEND, timeout_s=10)
    key = f"pipe:{unique}"
    try:
        failing = await pipe.send([(key, "ok"), (key, "fail")])
        fine = await pipe.send([(key, "next")])
        with pytest.raises(ResponseError, match="asked to fail"):
            await pipe.replies(failing)
        assert await pipe.replies(fine) == [["next", 3]]
    finally:
        pipe.close()
        await redis.aclose()


async def test_uses_the_clients_database(endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(redis_db_url(endpoints, 9))
    pipe = ScriptPipe(redis, APPEND, timeout_s=10)
    try:
        await pipe.replies(await pipe.send([(f"pipe:{unique}:db", "nine")]))
        assert await redis.lrange(f"pipe:{unique}:db", 0, -1) == ["nine"]
    finally:
        pipe.close()
        await redis.aclose()


async def test_a_restart_fails_the_calls_in_flight_and_the_next_send_reconnects(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    _, valkey = private_parts
    redis = make_redis(valkey.url)
    pipe = ScriptPipe(redis, APPEND, timeout_s=10)
    try:
        assert await pipe.replies(await pipe.send([("pipe:r", "before")])) == [["before", 1]]
        valkey.stop()
        with pytest.raises(RedisConnectionError):
            await pipe.replies(await pipe.send([("pipe:r", "lost")]))
        valkey.start()
        # A new connection, and EVAL needs no script reload on the restarted server.
        assert await pipe.replies(await pipe.send([("pipe:r", "after")])) == [["after", 2]]
    finally:
        pipe.close()
        await redis.aclose()


async def test_coalesced_calls_of_one_turn_each_get_their_own_reply(
        endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    pipe = ScriptPipe(redis, APPEND, timeout_s=10, coalesce=True)
    try:
        async def append(n: int) -> list[object]:
            [reply] = await pipe.replies(await pipe.send([(f"pipe:{unique}:{n % 7}", str(n))]))
            return list(reply)

        # Made in the same turn of the loop, so written together down one connection.
        replies = await asyncio.gather(*(append(n) for n in range(300)))
        assert [value for value, _ in replies] == [str(n) for n in range(300)]
        # Each list got its values in the order the calls were made.
        for list_no in range(7):
            assert await redis.lrange(f"pipe:{unique}:{list_no}", 0, -1) == \
                [str(n) for n in range(list_no, 300, 7)]
    finally:
        pipe.close()
        await redis.aclose()


async def test_a_server_that_does_not_answer_in_time_fails_the_call_not_the_next(
        endpoints: Endpoints, unique: str) -> None:
    busy = "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + i end return ARGV[2]"
    redis = make_redis(endpoints.redis_url)
    pipe = ScriptPipe(redis, busy, timeout_s=0.05)
    try:
        with pytest.raises(RedisTimeoutError):
            await pipe.replies(await pipe.send([("100000000", "slow")]))

        async def quick() -> bool:
            # Refused while valkey still runs the slow call; then a fresh connection answers.
            try:
                return bool(await pipe.replies(await pipe.send([("1", "quick")])) == ["quick"])
            except (RedisConnectionError, RedisTimeoutError):
                return False

        await eventually(quick, within=20)
    finally:
        pipe.close()
        await redis.aclose()


async def test_callers_waiting_for_a_connection_share_one_attempt(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    """Six callers while the server cannot answer: one connection attempt, one failure for
    all (each used to make its own attempt after the previous one timed out)."""
    _, valkey = private_parts
    redis = make_redis(valkey.url)
    slow = ScriptPipe(redis, "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + i end "
                             "return 1", timeout_s=30)
    pipe = ScriptPipe(redis, APPEND, timeout_s=0.1)
    try:
        busy = await slow.send([("100000000",)])  # holds the server for about a second

        async def one() -> BaseException:
            try:
                await pipe.replies(await pipe.send([("pipe:shared", "x")]))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                return exc
            raise AssertionError("answered while the server was held")

        errors = await asyncio.gather(*(one() for _ in range(6)))
        assert len({id(e) for e in errors}) == 1  # the same failed attempt, seen by all
        await slow.replies(busy)
    finally:
        pipe.close()
        slow.close()
        await redis.aclose()


async def test_a_busy_server_is_unavailable_not_an_error_of_the_call(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    """BUSY (a script running past the threshold) reaches callers as a ConnectionError, which
    routes answer with 503, as redis-py does for LOADING; the pipe recovers after."""
    _, valkey = private_parts
    redis = make_redis(valkey.url)
    await redis.config_set("busy-reply-threshold", 10)
    slow = ScriptPipe(redis, "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + i end "
                             "return 1", timeout_s=30)
    pipe = ScriptPipe(redis, APPEND, timeout_s=10)
    try:
        await pipe.replies(await pipe.send([("pipe:busy", "before")]))  # connected, loaded
        busy = await slow.send([("100000000",)])
        await asyncio.sleep(0.1)
        with pytest.raises(RedisConnectionError, match="BUSY"):
            await pipe.replies(await pipe.send([("pipe:busy", "during")]))
        await slow.replies(busy)
        assert await pipe.replies(await pipe.send([("pipe:busy", "after")])) == [["after", 2]]
    finally:
        await redis.config_set("busy-reply-threshold", 5000)
        pipe.close()
        slow.close()
        await redis.aclose()


async def test_a_reply_that_is_not_text_fails_its_call_and_the_next_one_works(
        endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    read = ReadMany(redis)
    try:
        await redis.set(f"pipe:{unique}:bytes", b"\xff\xfe")
        await redis.set(f"pipe:{unique}:text", "fine")
        with pytest.raises(RedisConnectionError):
            await read([("GET", f"pipe:{unique}:bytes")])
        assert await read([("GET", f"pipe:{unique}:text")]) == ["fine"]
    finally:
        read.close()
        await redis.aclose()
