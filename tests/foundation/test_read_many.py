"""shared.redis.ReadMany: several reads in one script call, whatever the arguments hold."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.redis import ReadMany, make_redis
from shared.stack import Endpoints, TansuBroker, ValkeyServer
from tests.conftest import redis_db_url


async def test_read_many_answers_each_command_in_order(endpoints: Endpoints,
                                                       unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    try:
        awkward = f"é\nü {unique}\x00"  # non-ASCII, a newline, a NUL: lengths are bytes
        await redis.set(f"rm:{unique}:a", "1")
        await redis.hset(f"rm:{unique}:h", mapping={awkward: "x", "": "empty"})
        await redis.zadd(f"rm:{unique}:z", {"u-1": 1, awkward: 2})
        replies = await ReadMany(redis)([
            ("GET", f"rm:{unique}:a"),
            ("GET", f"rm:{unique}:missing"),
            ("HGET", f"rm:{unique}:h", awkward),
            ("HGET", f"rm:{unique}:h", ""),
            ("ZRANK", f"rm:{unique}:z", awkward),
            ("ZRANK", f"rm:{unique}:z", "nobody"),
            ("MGET", f"rm:{unique}:a", f"rm:{unique}:missing"),
        ])
    finally:
        await redis.aclose()
    assert replies == ["1", None, "x", "empty", 1, None, ["1", None]]


async def test_read_many_uses_the_clients_database(endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(redis_db_url(endpoints, 9))
    try:
        await redis.set(f"rm:{unique}:db", "nine")
        assert await ReadMany(redis)([("GET", f"rm:{unique}:db")]) == ["nine"]
    finally:
        await redis.aclose()


async def test_read_many_outlives_a_restart_and_names_an_outage(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    _, valkey = private_parts
    redis = make_redis(valkey.url)
    read = ReadMany(redis)
    try:
        await redis.set("rm:k", "v")
        assert await read([("GET", "rm:k")]) == ["v"]
        valkey.stop()
        with pytest.raises(RedisConnectionError):
            await read([("GET", "rm:k")])
        valkey.start()
        # The pooled connection died with the server: a fresh one answers (AOF kept the key).
        assert await read([("GET", "rm:k")]) == ["v"]
        with pytest.raises(ResponseError):
            await read([("NOSUCHCOMMAND", "x")])
        assert await read([("GET", "rm:k")]) == ["v"]
    finally:
        await redis.aclose()


async def test_read_many_closes_its_connections(endpoints: Endpoints) -> None:
    redis = make_redis(endpoints.redis_url)
    read = ReadMany(redis)

    async def addresses() -> set[str]:
        return {client["addr"] for client in await redis.client_list()}

    try:
        before = await addresses()
        await read([("GET", "rm:none")])
        ours = await addresses() - before
        assert len(ours) == 1  # one keep-alive connection, held for the next call
        read.close()
        await asyncio.sleep(0.1)
        assert not ours & await addresses()
    finally:
        await redis.aclose()
