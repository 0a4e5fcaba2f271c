"""Writes sent again by the Redis client after a broken connection (shared.redis.make_redis
retries connection errors) are no-ops when the first one ran: the scripts recognise their own
call instead of applying it twice."""

from __future__ import annotations

from services.entitlements.store import Change, EntitlementsStore
from services.invoicing.store import _CREDIT
from shared.redis import make_redis
from shared.stack import Endpoints


async def test_a_commit_sent_twice_is_written_once(endpoints: Endpoints, unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    store = EntitlementsStore(redis, prefix=f"resent-{unique}")
    change = Change(history=[b'{"what":"bought"}'], events=[("ev-1", "t", b'{"e":1}')])
    try:
        first = await store.commit("t", 0, b'{"v":1}', change, idempotency_ttl_s=60)
        again = await store.commit("t", 0, b'{"v":1}', change, idempotency_ttl_s=60)
        assert (first.outcome, again.outcome) == ("committed", "committed")
        assert await redis.xlen(store.history_key("t")) == 1
        assert await redis.xlen(store.outbox_key) == 1
        # Another writer's document at that version is still a conflict.
        other = await store.commit("t", 0, b'{"v":"other"}', change, idempotency_ttl_s=60)
        assert other.outcome == "conflict"
    finally:
        await redis.aclose()


async def test_a_credit_call_sent_twice_issues_one_note(endpoints: Endpoints,
                                                        unique: str) -> None:
    redis = make_redis(endpoints.redis_url)
    keys = [f"resent-{unique}:seq", f"resent-{unique}:credited", f"resent-{unique}:pending",
            f"resent-{unique}:call"]
    args = ["INV-1", "1000", "400", "CN-2026-", '{"number":"@@NUMBER@@"}']
    try:
        first = await redis.eval(_CREDIT, 4, *keys, *args)
        again = await redis.eval(_CREDIT, 4, *keys, *args)
        assert first == again == [1, "CN-2026-000001"]
        assert await redis.hget(keys[1], "INV-1") == "400"
        assert await redis.hlen(keys[2]) == 1
    finally:
        await redis.aclose()
