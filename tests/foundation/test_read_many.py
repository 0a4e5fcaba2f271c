"""shared.redis.ReadMany: several reads in one script call, whatever the arguments hold."""

from __future__ import annotations

from shared.redis import ReadMany, make_redis
from shared.stack import Endpoints


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
