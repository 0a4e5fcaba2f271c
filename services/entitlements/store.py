"""Entitlements' Redis store: tenant documents, history, outbox, due index, idempotency.

Every change is one Lua call (`_COMMIT`): compare the tenant's version, write the new
document, append its history entries (R4.9) and its outbox events (R4.8), index when it falls
due next, and remember the Idempotency-Key answer, all or nothing. A crash can therefore never
leave a change without its event, nor an event without its change.

The keys (`shared.keys.EntitlementsKeys`) and what each holds:
- `tenant`     hash `doc` (JSON of TenantState), `ver` (int, compare-and-set)
- `history`    stream, one `entry` (JSON) per change, append-only (R4.9)
- `idempotency` string: the first answer to an Idempotency-Key, with a TTL
- `outbox`     stream of events not yet acked by the broker (`id`, `key`, `value`)
- `outbox_lease` the publisher lease (one draining replica at a time)
- `due`        sorted set: tenant -> µs of its next lifecycle instant
- `commit_call` the version one `_COMMIT` call wrote (10 minutes), so the client's resend
               of that call answers "committed" again
- `tenant-zones` hash tenant -> IANA zone, for metering and key minting
- `meter_touched` hash written by metering: the (tenant, meter) pairs whose thresholds
               need a look (R10.4); `thresholds` the reached ones of a period, each once
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from shared.keys import TENANT_ZONES, EntitlementsKeys, InvoicingKeys, users_key
from shared.outbox import OutboxStream
from shared.redis import ReadMany, text
from shared.subscription import TenantState

# KEYS[7] marks this very call: the client sends a call again when its connection broke, and
# if the first one ran (another writer may have committed since) it must answer the same.
_COMMIT = """
local done = redis.call('GET', KEYS[7])
if done then return {1, done} end
local p = cjson.decode(ARGV[4])
if p.idem ~= '' then
  local previous = redis.call('GET', KEYS[5])
  if previous then return {2, previous} end
end
local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
if ver ~= ARGV[1] then return {0, ver} end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'ver', ARGV[2])
for _, entry in ipairs(p.history) do
  redis.call('XADD', KEYS[2], '*', 'entry', entry)
end
for _, ev in ipairs(p.events) do
  redis.call('XADD', KEYS[3], '*', 'id', ev[1], 'key', ev[2], 'value', ev[3])
end
if p.due ~= '' then
  redis.call('ZADD', KEYS[4], p.due, p.tenant)
else
  redis.call('ZREM', KEYS[4], p.tenant)
end
if p.idem ~= '' then
  redis.call('SET', KEYS[5], p.idem, 'EX', p.ttl)
end
if p.zone ~= '' then
  redis.call('HSET', KEYS[6], p.tenant, p.zone)
end
redis.call('SET', KEYS[7], ARGV[2], 'EX', 600)
return {1, ARGV[2]}
"""

# R10.4: mark each threshold reached and queue its event in one call, so a threshold is never
# marked without its event nor published twice; then drop the touch of the (tenant, meter)
# that was looked at, unless metering touched it again meanwhile (another look is due).
# KEYS: the period's marker hash, the outbox, the touched hash. ARGV: the touched member,
# the touch counter seen, the markers' lifetime (s), [[threshold, event id, key, value], ...].
_THRESHOLDS = """
local published = 0
for _, item in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('HSETNX', KEYS[1], item[1], item[2]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'id', item[2], 'key', item[3], 'value', item[4])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    published = published + 1
  end
end
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return published
"""


@dataclass(frozen=True, slots=True)
class Change:
    """Everything one commit writes besides the document itself."""

    history: Sequence[bytes] = ()
    # (event id, Kafka key, value)
    events: Sequence[tuple[str, str, bytes]] = ()
    due_us: int | None = None
    idem_key: str | None = None
    idem_answer: bytes | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class CommitResult:
    outcome: Literal["committed", "conflict", "replay"]
    answer: bytes | None = None


@dataclass(slots=True)
class CheckReads:
    """What one check pipeline read back."""

    doc: str | None
    values: list[Any] = field(default_factory=list)


class EntitlementsStore:
    def __init__(self, redis: Redis, prefix: str = "ent",
                 outbox_retention_s: int = 86_400) -> None:
        self.redis = redis
        self.keys = EntitlementsKeys(prefix)
        self._commit = redis.register_script(_COMMIT)
        self._read_many = ReadMany(redis)
        self.outbox = OutboxStream(redis, self.keys, outbox_retention_s)
        self._thresholds = redis.register_script(_THRESHOLDS)

    # --- tenant documents --------------------------------------------------------------

    async def load(self, tenant: str) -> tuple[str | None, int]:
        doc, ver = await self.redis.hmget(self.keys.tenant(tenant), ["doc", "ver"])
        return (str(doc) if doc is not None else None), int(ver or 0)

    async def document(self, tenant: str) -> TenantState | None:
        """The tenant's document as last committed (not yet brought up to "now")."""
        raw, _ = await self.load(tenant)
        return None if raw is None else TenantState.model_validate_json(raw)

    async def commit(self, tenant: str, expected: int, doc: bytes, change: Change,
                     idempotency_ttl_s: int) -> CommitResult:
        """Write `doc` as version expected+1 if the stored version is still `expected`."""
        payload = {
            "tenant": tenant,
            "history": [h.decode() for h in change.history],
            "events": [[i, k, v.decode()] for i, k, v in change.events],
            "due": "" if change.due_us is None else str(change.due_us),
            "idem": change.idem_answer.decode() if change.idem_answer is not None else "",
            "ttl": str(idempotency_ttl_s),
            "zone": change.zone or "",
        }
        idem = change.idem_key or self.keys.no_idempotency
        touched = [self.keys.tenant(tenant), self.keys.history(tenant), self.keys.outbox,
                   self.keys.due, idem, TENANT_ZONES, self.keys.commit_call(uuid.uuid4().hex)]
        code, value = await self._commit(
            keys=touched, args=[str(expected), str(expected + 1), doc, orjson.dumps(payload)])
        if int(code) == 1:
            return CommitResult("committed")
        if int(code) == 2:
            return CommitResult("replay", str(value).encode())
        return CommitResult("conflict")

    async def idempotent_answer(self, key: str) -> bytes | None:
        raw = await self.redis.get(key)
        return None if raw is None else str(raw).encode()

    async def invoice_of_event(self, invoicing: InvoicingKeys, event_id: str) -> str | None:
        """The number invoicing gave an event's immediate invoice (its key, read-only)."""
        number = await self.redis.hget(invoicing.events, event_id)
        return None if number is None else str(number)

    # --- history -----------------------------------------------------------------------

    async def history(self, tenant: str, after: str | None, count: int
                      ) -> list[tuple[str, dict[str, Any]]]:
        start = "-" if after is None else f"({after}"
        rows: Any = await self.redis.xrange(self.keys.history(tenant), min=start, count=count)
        return [(str(entry_id), orjson.loads(fields["entry"])) for entry_id, fields in rows]

    # --- lifecycle index ---------------------------------------------------------------

    async def next_due_us(self) -> int | None:
        first = await self.redis.zrange(self.keys.due, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def due_tenants(self, until_us: int) -> list[str]:
        rows = await self.redis.zrangebyscore(self.keys.due, "-inf", until_us)
        return [str(t) for t in rows]

    # --- thresholds (R10.4) ------------------------------------------------------------

    async def touched(self, cursor: int, count: int) -> tuple[int, list[tuple[str, str]]]:
        """One page of the (tenant, meter) pairs metering touched: member, touch counter."""
        reply: Any = await self.redis.hscan(self.keys.meter_touched, cursor, count=count)
        following, pairs = reply
        return int(following), [(text(m), text(v)) for m, v in dict(pairs).items()]

    async def settle_touch(self, member: str, seen: str) -> None:
        """Clear a touch that announces nothing (no charge, no threshold, no tenant)."""
        await self.mark_thresholds(self.keys.meter_touched, member, seen, (), 0)

    async def mark_thresholds(self, markers: str, member: str, seen: str,
                              events: Sequence[tuple[str, str, str, bytes]],
                              ttl_s: int) -> int:
        """Queue the events of thresholds not yet marked, mark them and settle the touch
        (`_THRESHOLDS`); how many were queued."""
        items = [[threshold, event_id, key, value.decode()]
                 for threshold, event_id, key, value in events]
        return int(await self._thresholds(
            keys=[markers, self.keys.outbox, self.keys.meter_touched],
            args=[member, seen, str(ttl_s), orjson.dumps(items)]))

    # --- licences (R4.12) --------------------------------------------------------------

    async def live_users(self, tenant: str, modules: Sequence[str]) -> dict[str, frozenset[str]]:
        """Per module, the users holding access now: metering's live counters, read in one
        pipeline before a purchase of a pack priced per licence is decided."""
        pipe = self.redis.pipeline(transaction=False)
        for module in modules:
            pipe.zrange(users_key(tenant, module), 0, -1)
        rows = await pipe.execute()
        return {module: frozenset(str(user) for user in users)
                for module, users in zip(modules, rows, strict=True)}

    # --- checks: one round trip --------------------------------------------------------

    async def check_reads(self, tenant: str, commands: Sequence[tuple[str, ...]]) -> CheckReads:
        """The tenant document plus the live reads a check needs, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.tenant(tenant), "doc")
        for command in commands:
            pipe.execute_command(*command)
        results = await pipe.execute()
        doc = results[0]
        return CheckReads(None if doc is None else str(doc), list(results[1:]))

    async def batch_reads(self, tenants: Sequence[str],
                          commands: Sequence[tuple[str, ...]]) -> tuple[list[Any], list[Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hget(self.keys.tenant(tenant), "doc")
        for command in commands:
            pipe.execute_command(*command)
        results = await pipe.execute()
        return list(results[:len(tenants)]), list(results[len(tenants):])

    def close(self) -> None:
        self._read_many.close()

    async def read_in_one_call(self, commands: Sequence[tuple[str, ...]]) -> list[Any]:
        """Several reads as one command: the single-check hot path (fastpath.py)."""
        return await self._read_many(commands)

    async def run(self, commands: Sequence[tuple[str, ...]]) -> list[Any]:
        if not commands:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())
