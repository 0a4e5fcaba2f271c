"""Metering's storage: usage events in ClickHouse, live counters and dedupe claims in Redis.

Every ClickHouse value travels as a bound parameter; the only SQL text assembled here comes
from fixed fragments chosen by enum (window, aggregation) and parameter names we generate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Final, TypeVar

import orjson
from redis.asyncio import Redis

from shared.clickhouse.client import ClickHouse
from shared.events import UsageEvent
from shared.meters import Aggregation, Meter, json_text, value_expression
from shared.redis import ScriptPipe
from shared.times import as_utc, micros

EVENT_COLUMNS: Final = ("tenant", "type", "time", "source", "id", "module", "user_id", "data",
                        "extensions", "kafka_topic", "kafka_cluster", "kafka_partition",
                        "kafka_offset", "ingested_at")

# Events per claim script call: small enough that valkey starts early, big enough that the
# round trips stay few (1,000 and 500 measured alike; 5,000, one call a batch, was slower).
CLAIM_CHUNK: Final = 1_000

T = TypeVar("T")

_BUCKETS: Final = {
    None: "toDateTime64(0, 6, 'UTC')",
    "hour": "toStartOfHour(time, {tz:String})",
    "day": "toDate(time, {tz:String})",
    "month": "toStartOfMonth(time, {tz:String})",
}


@dataclass(slots=True)  # not frozen: one per event on the hot path
class StoredEvent:
    """A validated event and where it was read from (R9.6)."""

    event: UsageEvent
    topic: str
    partition: int
    offset: int
    ingested_ms: int  # the broker timestamp, ms since the epoch


# A batch may hold events of any month of the time domain (late events are welcome), one
# partition each: ClickHouse's default refuses an insert touching more than 100 partitions,
# which would stop the consumer on a batch of valid events.
_INSERT_SETTINGS: Final = {"max_partitions_per_insert_block": 0}
_NO_EXTENSIONS: Final = "{}"


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


class EventStore:
    def __init__(self, clickhouse: ClickHouse) -> None:
        self._ch = clickhouse

    async def insert(self, rows: Sequence[StoredEvent], token: str, cluster: str) -> None:
        """One INSERT, so one part: all rows land or none. The token makes a retry a no-op.
        `cluster` names the broker cluster the rows were read from."""
        # Times go as integer ticks: the driver's datetime conversion is per value in Python.
        events = [row.event for row in rows]
        columns: list[list[Any]] = [
            [e.tenant for e in events],
            [e.type for e in events],
            [micros(e.time) for e in events],
            [e.source for e in events],
            [e.id for e in events],
            [_text_or_empty(e.data.get("module")) for e in events],
            [_text_or_empty(e.data.get("user_id")) for e in events],
            [orjson.dumps(e.data).decode() for e in events],
            [orjson.dumps(e.extensions).decode() if e.extensions else _NO_EXTENSIONS
             for e in events],
            [row.topic for row in rows],
            [cluster] * len(rows),
            [row.partition for row in rows],
            [row.offset for row in rows],
            [row.ingested_ms for row in rows],
        ]
        await self._ch.insert_columns("usage_events", EVENT_COLUMNS, columns,
                                      settings=_INSERT_SETTINGS | {
                                          "insert_deduplication_token": token})

    async def resume_offsets(self, topic: str, cluster: str) -> dict[int, int]:
        """The next offset to read per partition, from what is stored (the record of truth),
        of the broker cluster now serving the topic: another cluster's offsets point into a
        log that no longer exists."""
        rows = await self._ch.rows(
            "SELECT kafka_partition, max(kafka_offset) FROM usage_events "
            "WHERE kafka_topic = {topic:String} AND kafka_cluster = {cluster:String} "
            "GROUP BY kafka_partition", {"topic": topic, "cluster": cluster})
        return {int(p): int(o) + 1 for p, o in rows}

    async def existing(self, events: Iterable[UsageEvent]) -> set[tuple[str, str]]:
        """Which of these (source, id) are already stored, whatever the time or data of the
        stored copy (a resend may carry another time: it is still the same event).

        A resend carries the same subject, so the tenant, first in the sort key, lets the
        primary index skip every other tenant's granules.
        """
        found = list(events)
        if not found:
            return set()
        rows = await self._ch.rows(
            "SELECT source, id FROM usage_events WHERE tenant IN {tenants:Array(String)} "
            "AND (source, id) IN {keys:Array(Tuple(String, String))}",
            {"tenants": sorted({e.tenant for e in found}), "keys": [e.key for e in found]})
        return {(str(s), str(i)) for s, i in rows}

    async def aggregate(self, meter: Meter, tenant: str, start: datetime, end: datetime,
                        window: str | None, tz: str, group_by: Sequence[str],
                        module: str | None) -> list[tuple[Any, ...]]:
        """Rows of (bucket, *groups, value) for a non-SEATS meter, deduplicated at read time."""
        params: dict[str, Any] = {"tenant": tenant, "type": meter.event_type, "start": start,
                                  "end": end, "tz": tz}
        value = value_expression(meter, params)
        groups = [json_text("data", meter.group_by[name], params, f"g{i}")
                  for i, name in enumerate(group_by)]
        select_groups = "".join(f", {g} AS g{i}" for i, g in enumerate(groups))
        group_keys = "".join(f", g{i}" for i in range(len(groups)))
        module_filter = ""
        if module is not None:
            params["module"] = module
            module_filter = " AND module = {module:String}"
        sql = (
            f"SELECT {_BUCKETS[window]} AS bucket{select_groups}, {value} AS value "
            "FROM (SELECT time, data FROM usage_events "
            "WHERE tenant = {tenant:String} AND type = {type:String} "
            "AND time >= {start:DateTime64(6, 'UTC')} AND time < {end:DateTime64(6, 'UTC')}"
            f"{module_filter} LIMIT 1 BY source, id) "
            f"GROUP BY bucket{group_keys} ORDER BY bucket{group_keys}")
        return await self._ch.rows(sql, params)

    async def access_events(self, tenant: str, end: datetime,
                            module: str | None) -> list[tuple[str, str, datetime, str]]:
        """(module, user_id, time, type) of every grant/revoke before `end`, deduplicated."""
        params: dict[str, Any] = {"tenant": tenant, "end": end}
        module_filter = ""
        if module is not None:
            params["module"] = module
            module_filter = " AND module = {module:String}"
        rows = await self._ch.rows(
            "SELECT module, user_id, time, type FROM usage_events "
            "WHERE tenant = {tenant:String} "
            "AND type IN ('user.access.granted', 'user.access.revoked') "
            "AND time < {end:DateTime64(6, 'UTC')}" + module_filter +
            " LIMIT 1 BY source, id", params)
        return [(str(m), str(u), as_utc(t), str(k)) for m, u, t, k in rows]

    async def event_refs(self, meter: Meter, tenant: str, start: datetime, end: datetime,
                         module: str | None, limit: int) -> list[tuple[Any, ...]]:
        """The events behind a figure (R9.6): source, id, time, topic, partition, offset."""
        params: dict[str, Any] = {"tenant": tenant, "start": start, "end": end, "limit": limit}
        types = [meter.event_type]
        if meter.aggregation is Aggregation.SEATS:
            types.append("user.access.revoked")
        params["types"] = types
        module_filter = ""
        if module is not None:
            params["module"] = module
            module_filter = " AND module = {module:String}"
        return await self._ch.rows(
            "SELECT source, id, time, kafka_topic, kafka_partition, kafka_offset "
            "FROM usage_events "
            "WHERE tenant = {tenant:String} AND type IN {types:Array(String)} "
            "AND time >= {start:DateTime64(6, 'UTC')} AND time < {end:DateTime64(6, 'UTC')}"
            + module_filter + " ORDER BY time, source, id LIMIT 1 BY source, id "
            "LIMIT {limit:UInt32}", params)



# --- Redis: claims and live counters -------------------------------------------------------

# One call per chunk of a batch, atomic: claim each event's (source, id) for the message that
# carries it and apply its counter updates only when the claim is new. A claim is
# "incarnation/partition:offset". One held by the same message is that message read again
# after a crash or a seek: counted once, stored again only if ClickHouse lacks it (worker).
# One taken under another incarnation of the broker may belong to an event that was never
# stored (the broker forgot it): the worker asks ClickHouse, and claims again with `force`
# the events it does not hold, whose counters were rebuilt without them.
# A `touch` bumps the (tenant, meter) of a priced meter in a hash entitlements watches for
# thresholds (R10.4); written in the same call, so a counter never moves unseen.
# Verdicts: 1 new, 2 replay of our own claim, 0 duplicate, 3 claimed under another
# incarnation (not written unless forced), -1 refused: a counter key holds
# another type (written by hand), so the event is dead-lettered rather than half applied.
# Types are checked before anything is written: valkey keeps the writes of a script that
# fails half-way, so a failure after the claims would leave claims without their counters.
REPLAY: Final = 2
FOREIGN_CLAIM: Final = 3
_APPLY_BATCH = """
local ttl = ARGV[1]
local batch = cjson.decode(ARGV[2])
local incarnation = ARGV[3]
local force = ARGV[4] == '1'
local function foreign(claim)
  return string.sub(claim, 1, #incarnation) ~= incarnation
end
local verdicts = {}
local increments = {}
local touches = {}
local types = {}
local function is_type(key, wanted)
  local found = types[key]
  if not found then
    found = redis.call('TYPE', key)['ok']
    types[key] = found
  end
  return found == 'none' or found == wanted
end
local function applicable(ev)
  if not is_type(ev[1], 'string') then return false end
  for j = 3, #ev do
    local op = ev[j]
    if op[1] == 'incr' then
      if not is_type(op[2], 'string') then return false end
    elseif op[1] == 'member' then
      if not is_type(op[2], 'set') then return false end
    elseif op[1] == 'touch' then
      if not is_type(op[2], 'hash') then return false end
    elseif not (is_type(op[2], 'hash') and is_type(op[3], 'zset')) then
      return false
    end
  end
  return true
end
local refused = {}
for i, ev in ipairs(batch) do
  refused[i] = not applicable(ev)
end
for i, ev in ipairs(batch) do
  -- Claim and read in one call: nil means the claim is new and now ours.
  local current = (not refused[i]) and redis.call('SET', ev[1], ev[2], 'NX', 'GET', 'EX', ttl)
  if current and force and foreign(current) then
    redis.call('SET', ev[1], ev[2], 'EX', ttl)
    current = false
  end
  if refused[i] then
    verdicts[i] = -1
  elseif not current then
    verdicts[i] = 1
    for j = 3, #ev do
      local op = ev[j]
      if op[1] == 'incr' then
        if math.abs(op[3]) < 4294967296 then
          increments[op[2]] = (increments[op[2]] or 0) + op[3]
        else
          -- A large amount (a priced meter's value, R10.4) goes at once: a Lua number sums
          -- integers exactly only below 2^53.
          redis.call('INCRBY', op[2], string.format('%d', op[3]))
        end
      elseif op[1] == 'touch' then
        -- a priced meter moved (R10.4): hash, tenant + meter
        touches[op[2] .. '\0' .. op[3]] = {op[2], op[3]}
      elseif op[1] == 'member' then
        -- a counted resource (R7.4): set, id, created (1/0), applied in stream order
        if op[4] == 1 then
          redis.call('SADD', op[2], op[3])
        else
          redis.call('SREM', op[2], op[3])
        end
      else
        -- access: state hash, users zset, user, order, score, granted (1/0)
        local previous = redis.call('HGET', op[2], op[4])
        if (not previous) or tonumber(previous) < tonumber(op[5]) then
          redis.call('HSET', op[2], op[4], op[5])
          if op[7] == 1 then
            -- LT keeps the earliest grant time of an unbroken access (R6.3 ranks by it).
            redis.call('ZADD', op[3], 'LT', op[6], op[4])
          else
            redis.call('ZREM', op[3], op[4])
          end
        end
      end
    end
  elseif current == ev[2] then
    verdicts[i] = 2
  elseif foreign(current) then
    verdicts[i] = 3
  else
    verdicts[i] = 0
  end
end
-- One INCRBY per counter for the whole batch, the amount written as an integer (Lua would
-- print a double above 10^14 in exponent form, which INCRBY refuses).
for key, amount in pairs(increments) do
  redis.call('INCRBY', key, string.format('%d', amount))
end
for _, touch in pairs(touches) do
  redis.call('HINCRBY', touch[1], touch[2], 1)
end
return verdicts
"""


SentClaims = list[asyncio.Future[Any]]


class LiveCounters:
    """Claims and counters in Redis, updated together by `_APPLY_BATCH`."""

    def __init__(self, redis: Redis, claim_ttl_s: int) -> None:
        self._claim_ttl_s = claim_ttl_s
        self._pipe = ScriptPipe(redis, _APPLY_BATCH, timeout_s=30.0)
        # The claims' prefix: the incarnation of the broker the messages come from.
        self.incarnation = ""

    async def send(self, entries: Iterable[list[Any]], *, force: bool = False) -> SentClaims:
        """Send the claims now, in chunks, each chunk one script call: valkey works through a
        chunk while the next is being built, and the calls run in the order sent, so a batch
        can be sent before the previous one has answered. A chunk is atomic: a claim never
        lands without its counters, nor they without it."""
        args = (str(self._claim_ttl_s), self.incarnation + "/", "1" if force else "0")
        return await self._pipe.send(
            (args[0], orjson.dumps(chunk), *args[1:]) for chunk in _chunks(entries, CLAIM_CHUNK))

    async def claim_forced(self, entries: Iterable[list[Any]]) -> list[int]:
        """Claim again, taking over claims of earlier incarnations (see the script)."""
        return await self.verdicts(await self.send(entries, force=True))

    async def verdicts(self, sent: SentClaims) -> list[int]:
        """Each entry's verdict, in order."""
        return [int(verdict) for reply in await self._pipe.replies(sent) for verdict in reply]

    def close(self) -> None:
        self._pipe.close()


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
