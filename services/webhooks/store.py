"""Webhooks' Redis store: endpoints, their secrets, and the deliveries, durable in valkey
(AOF on) so that a restart, or a SIGKILL, loses none (docs/webhooks.md, "Storage").

The keys (`shared.keys.WebhooksKeys`, prefix `WEBHOOKS_KEY_PREFIX`) and what each holds:
- `endpoints`          hash: endpoint id -> JSON {id, url, events, tenant, created_at}
- `secret(id)`         the endpoint's signing secret, read only to sign (never listed)
- `delivery(id)`       hash: one delivery of one event to one endpoint (`Delivery`)
- `queue(q)`           list: the deliveries of one endpoint for one tenant, oldest first;
                       only the head is ever attempted, so a tenant's events arrive in order
- `queues(endpoint)`   set: the tenants the endpoint has a queue for
- `due`                sorted set: queue -> µs of the platform clock its head is due at
- `log(endpoint)`      sorted set: delivery id -> its sequence number (the delivery log)
- `seq`                counter numbering deliveries
- `backlog`            counter: deliveries not yet delivered or failed
- `lease(q)`           which delivery loop drains the queue now (wall-clock expiry)
A queue id `q` is `{endpoint}/{tenant}`: endpoint ids have no `/`.

Every script is safe to run twice (the Redis client resends a call whose connection broke):
a delivery is enqueued once per id, and an attempt is recorded only against the attempt
count it was made at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.keys import WebhooksKeys
from shared.outbox import LEASE_SCRIPT

_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'endpoint', ARGV[2], 'tenant', ARGV[3], 'body', ARGV[4],
           'type', ARGV[5], 'event', ARGV[6], 'status', 'pending', 'attempts', 0,
           'created', ARGV[7], 'seq', seq)
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], 'NX', ARGV[7], ARGV[8])
redis.call('ZADD', KEYS[5], seq, ARGV[1])
redis.call('INCR', KEYS[6])
return 1
"""

# ARGV: id, outcome (delivered|retry|failed), now, next (retry), status, body, error, queue,
# log size, attempts made before this one, window start, delivery key prefix. Answers 0 (not
# recorded), 1, or, once the head left the queue, {1, next head's id, its fields}.
_FINISH = """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[10] then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_at', ARGV[3], 'last_status', ARGV[5], 'last_body', ARGV[6],
           'last_error', ARGV[7], 'window', ARGV[11])
if ARGV[2] == 'retry' then
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'next', ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[8])
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'next', '')
redis.call('LPOP', KEYS[2])
redis.call('DECR', KEYS[5])
if redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[8])
else
  redis.call('ZREM', KEYS[3], ARGV[8])
end
-- The log keeps the newest entries: finished ones beyond its size are forgotten.
local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[9])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[4], 0, extra - 1)) do
    local key = ARGV[12] .. old
    if redis.call('HGET', key, 'status') ~= 'pending' then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[4], old)
    end
  end
end
-- The queue's next head, read in the same round trip: the drainer sends it next.
local head = redis.call('LINDEX', KEYS[2], 0)
if head then return {1, head, redis.call('HGETALL', ARGV[12] .. head)} end
return 1
"""

# A manual retry: a pending delivery's queue is due now; a finished one is queued again at
# its queue's tail, with a new window. ARGV: id, now, queue, tenant.
_RETRY = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
redis.call('HSET', KEYS[1], 'next', '')
if status ~= 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'pending', 'window', '', 'failures', 0)
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('SADD', KEYS[5], ARGV[4])
  redis.call('INCR', KEYS[4])
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# An endpoint goes with its secret, its queues, its log and every delivery of them.
# KEYS: endpoints, secret, queues, log, due, backlog. ARGV: id, queue key prefix, delivery
# key prefix.
_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for _, tenant in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local queue = ARGV[1] .. '/' .. tenant
  local pending = redis.call('LRANGE', ARGV[2] .. queue, 0, -1)
  for _, id in ipairs(pending) do redis.call('DEL', ARGV[3] .. id) end
  redis.call('DECRBY', KEYS[6], #pending)
  redis.call('DEL', ARGV[2] .. queue)
  redis.call('ZREM', KEYS[5], queue)
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  redis.call('DEL', ARGV[3] .. id)
end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""

_HEAD = """
local id = redis.call('LINDEX', KEYS[1], 0)
if not id then return false end
return {1, id, redis.call('HGETALL', ARGV[1] .. id)}
"""

_CREATE = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    events: tuple[str, ...]
    tenant: str | None
    created_at: str

    def wants(self, event_type: str, tenant: str) -> bool:
        return event_type in self.events and self.tenant in (None, tenant)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events),
                "tenant": self.tenant, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One event for one endpoint, as the consumer writes it."""

    id: str
    endpoint: str
    tenant: str
    event_type: str
    event_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivery(NewDelivery):
    """A delivery as stored: what the consumer wrote, and how its attempts went."""

    status: str  # pending, delivered, failed
    attempts: int
    failures: int  # failed attempts since its window opened
    created_us: int
    window_us: int | None  # when its first attempt (since a manual retry) was made
    next_us: int | None
    last_us: int | None
    last_status: int | None
    last_body: str
    last_error: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result, as recorded: `delivered`, `retry` (at `next_us`) or `failed`."""

    result: str
    now_us: int
    next_us: int | None
    status: int | None
    body: str
    error: str


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _delivery(delivery_id: str, raw: dict[str, Any]) -> Delivery:
    return Delivery(
        id=delivery_id, endpoint=raw["endpoint"], tenant=raw["tenant"],
        event_type=raw["type"], event_id=raw["event"], body=raw["body"].encode(),
        status=raw["status"], attempts=int(raw["attempts"]),
        failures=int(raw.get("failures") or 0), created_us=int(raw["created"]),
        window_us=_int(raw.get("window")), next_us=_int(raw.get("next")),
        last_us=_int(raw.get("last_at")), last_status=_int(raw.get("last_status")),
        last_body=raw.get("last_body", ""), last_error=raw.get("last_error", ""))


def _head(reply: Any) -> Delivery | None:
    """A delivery as `_HEAD` and `_FINISH` answer it: {1, id, [field, value, ...]}."""
    if not isinstance(reply, list) or len(reply) < 3 or not reply[2]:
        return None
    flat = [str(v) for v in reply[2]]
    return _delivery(str(reply[1]), dict(zip(flat[::2], flat[1::2], strict=True)))


def queue_id(endpoint: str, tenant: str) -> str:
    return f"{endpoint}/{tenant}"


class WebhookStore:
    def __init__(self, redis: Redis, keys: WebhooksKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._enqueue = redis.register_script(_ENQUEUE)
        self._finish = redis.register_script(_FINISH)
        self._retry = redis.register_script(_RETRY)
        self._delete = redis.register_script(_DELETE)
        self._create = redis.register_script(_CREATE)
        self._lease = redis.register_script(LEASE_SCRIPT)
        self._head = redis.register_script(_HEAD)

    # --- endpoints -----------------------------------------------------------------------

    async def create(self, endpoint: Endpoint, secret: str, limit: int) -> bool:
        """False when `limit` endpoints exist already."""
        doc = orjson.dumps(endpoint.public())
        return bool(await self._create(keys=[self.keys.endpoints, self.keys.secret(endpoint.id)],
                                       args=[endpoint.id, doc, secret, limit]))

    async def endpoints(self) -> list[Endpoint]:
        raw = await self.redis.hgetall(self.keys.endpoints)
        found = [_endpoint(orjson.loads(doc)) for doc in raw.values()]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        doc = await self.redis.hget(self.keys.endpoints, endpoint_id)
        return None if doc is None else _endpoint(orjson.loads(doc))

    async def secret(self, endpoint_id: str) -> str | None:
        value = await self.redis.get(self.keys.secret(endpoint_id))
        return None if value is None else str(value)

    async def delete(self, endpoint_id: str) -> bool:
        keys = self.keys
        return bool(await self._delete(
            keys=[keys.endpoints, keys.secret(endpoint_id), keys.queues(endpoint_id),
                  keys.log(endpoint_id), keys.due, keys.backlog],
            args=[endpoint_id, keys.queue(""), keys.delivery("")]))

    # --- deliveries ----------------------------------------------------------------------

    async def enqueue(self, deliveries: Sequence[NewDelivery], now_us: int) -> int:
        """Write each delivery not written before, in order; how many were new."""
        if not deliveries:
            return 0
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for d in deliveries:
            queue = queue_id(d.endpoint, d.tenant)
            await self._enqueue(keys=[keys.delivery(d.id), keys.queue(queue),
                                keys.queues(d.endpoint), keys.due, keys.log(d.endpoint),
                                keys.backlog, keys.seq],
                          args=[d.id, d.endpoint, d.tenant, d.body, d.event_type, d.event_id,
                                now_us, queue], client=pipe)
        return sum(int(n) for n in await pipe.execute())

    async def due_queues(self, now_us: int, limit: int) -> list[str]:
        rows = await self.redis.zrangebyscore(self.keys.due, "-inf", now_us, start=0, num=limit)
        return [str(q) for q in rows]

    async def next_due_us(self) -> int | None:
        first = await self.redis.zrange(self.keys.due, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def head(self, queue: str) -> Delivery | None:
        """The queue's oldest delivery, in one round trip."""
        return _head(await self._head(keys=[self.keys.queue(queue)],
                                      args=[self.keys.delivery("")]))

    async def delivery(self, delivery_id: str) -> Delivery | None:
        raw = await self.redis.hgetall(self.keys.delivery(delivery_id))
        return _delivery(delivery_id, {str(k): v for k, v in raw.items()}) if raw else None

    async def drop_queue(self, queue: str) -> None:
        """A queue left without its endpoint (deleted meanwhile) or without deliveries."""
        if not await self.redis.llen(self.keys.queue(queue)) or \
                await self.endpoint(queue.split("/", 1)[0]) is None:
            await self.redis.zrem(self.keys.due, queue)

    async def finish(self, delivery: Delivery, outcome: Outcome, window_us: int,
                     log_size: int) -> tuple[bool, Delivery | None]:
        """Record one attempt made at `delivery.attempts`: (False if it was recorded already
        or the delivery left its queue meanwhile, the queue's next head once this one left
        it)."""
        keys = self.keys
        queue = queue_id(delivery.endpoint, delivery.tenant)
        reply = await self._finish(
            keys=[keys.delivery(delivery.id), keys.queue(queue), keys.due,
                  keys.log(delivery.endpoint), keys.backlog],
            args=[delivery.id, outcome.result, outcome.now_us,
                  "" if outcome.next_us is None else outcome.next_us,
                  "" if outcome.status is None else outcome.status, outcome.body,
                  outcome.error, queue, log_size, delivery.attempts, window_us,
                  keys.delivery("")])
        return bool(reply), _head(reply)

    async def retry(self, delivery: Delivery, now_us: int) -> bool:
        keys = self.keys
        queue = queue_id(delivery.endpoint, delivery.tenant)
        return bool(await self._retry(
            keys=[keys.delivery(delivery.id), keys.queue(queue), keys.due, keys.backlog,
                  keys.queues(delivery.endpoint)],
            args=[delivery.id, now_us, queue, delivery.tenant]))

    async def log(self, endpoint_id: str, limit: int) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""
        ids = [str(i) for i in await self.redis.zrevrange(self.keys.log(endpoint_id), 0,
                                                          limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(self.keys.delivery(delivery_id))
        rows = await pipe.execute() if ids else []
        return [_delivery(i, dict(raw)) for i, raw in zip(ids, rows, strict=True) if raw]

    async def backlog(self) -> int:
        return int(await self.redis.get(self.keys.backlog) or 0)

    # --- leases --------------------------------------------------------------------------

    async def take_lease(self, queue: str, holder: str, ttl_ms: int) -> bool:
        return bool(await self._lease(keys=[self.keys.lease(queue)], args=[holder, ttl_ms]))

    async def release_lease(self, queue: str, holder: str) -> None:
        if await self.redis.get(self.keys.lease(queue)) == holder:
            await self.redis.delete(self.keys.lease(queue))


def _endpoint(doc: dict[str, Any]) -> Endpoint:
    return Endpoint(id=doc["id"], url=doc["url"], events=tuple(doc["events"]),
                    tenant=doc["tenant"], created_at=doc["created_at"])
