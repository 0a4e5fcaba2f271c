"""Live counters rebuilt from ClickHouse, the record of truth.

Claims and counters are updated together, so they agree with what is stored as long as every
claimed message is eventually stored. Two things break that: a broker that forgets messages
(the embedded one remembers nothing across a restart) and a crash between the claims and the
insert. Either way the counters may count events ClickHouse does not hold. So when metering
meets a new incarnation of the broker it recomputes every counter from the stored events,
with the same per-event effects the consumer applies (`live_ops`), and replaces them in one
transaction; claims of the old incarnation are then settled against ClickHouse one by one
(store.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.exceptions import WatchError

from services.metering.service import live_ops, local_day
from shared import events
from shared.clickhouse.client import ClickHouse
from shared.events import UsageEvent
from shared.keys import LIVE_INCARNATION, LIVE_PATTERN, live_key
from shared.meters import value_expression
from shared.redis import text
from shared.resources import NO_RESOURCE_EVENTS, ResourceEvent
from shared.times import as_utc
from shared.usage_limits import LiveMeters, meter_ops

log = logging.getLogger(__name__)

_NOTHING: Final[MappingProxyType[str, Any]] = MappingProxyType({})

# Per tenant and 15-minute bucket: every zone's offset is a multiple of 15 minutes, so a
# bucket never straddles a local midnight.
_EMAILS: Final = (
    "SELECT tenant, toStartOfFifteenMinutes(time), sum(toInt128(JSONExtractUInt(data, 'count')))"
    " FROM (SELECT tenant, time, data FROM usage_events WHERE type = {type:String}"
    " LIMIT 1 BY source, id) GROUP BY tenant, toStartOfFifteenMinutes(time)")
_SUPPORT: Final = (
    "SELECT tenant, time, JSONExtractInt(data, 'minutes'), JSONExtractInt(data, 'level')"
    " FROM usage_events WHERE type = {type:String} LIMIT 1 BY source, id")
_COMPANIES: Final = (
    "SELECT tenant, countIf(type = {created:String}) - countIf(type = {deleted:String})"
    " FROM (SELECT tenant, type FROM usage_events WHERE type IN ({created:String},"
    " {deleted:String}) LIMIT 1 BY source, id) GROUP BY tenant")
_ACCESS: Final = (
    "SELECT tenant, module, user_id, time, type FROM usage_events"
    " WHERE type IN ({granted:String}, {revoked:String}) LIMIT 1 BY source, id")
# A counted resource's instances (R7.4): the set after SADD/SREM in stream order holds the ids
# whose last event was a creation. The stream order, as stored: the broker's timestamp, then
# the partition and offset (one tenant's events share a partition).
_RESOURCE: Final = (
    "SELECT tenant, member FROM (SELECT tenant, member,"
    " argMax(type, (ingested_at, kafka_partition, kafka_offset)) AS last FROM ("
    "SELECT tenant, type, JSONExtractString(data, {key:String}) AS member, ingested_at,"
    " kafka_partition, kafka_offset FROM usage_events"
    " WHERE type IN ({created:String}, {deleted:String}) LIMIT 1 BY source, id)"
    " GROUP BY tenant, member) WHERE last = {created:String} AND member != ''")
# A priced meter (R10.4) per tenant and 15-minute bucket; `{value}` is the meter's aggregate
# (shared.meters.value_expression: COUNT or SUM, the only ones counted live).
_METER: Final = (
    "SELECT tenant, toStartOfFifteenMinutes(time) AS bucket, {value}"
    " FROM (SELECT tenant, time, data FROM usage_events WHERE type = {{type:String}}"
    " LIMIT 1 BY source, id) GROUP BY tenant, bucket")
# Members per SADD when a set is written back: one command stays small whatever the set.
_SADD_CHUNK: Final = 10_000
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)  # any instant: sets ignore time


@dataclass
class LiveState:
    """The counters as the consumer would have left them after every stored event."""

    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # access state hash -> user -> order of the last grant or revoke
    access: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    # users zset -> user -> grant instant (µs) of the unbroken access
    users: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    # counted resource set -> its instance ids (R7.4)
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def apply(self, ops: Iterable[list[Any]]) -> None:
        for op in ops:
            if op[0] == "incr":
                self.counters[op[1]] += int(op[2])
                continue
            if op[0] == "touch":
                # Not kept: thresholds are looked at when the next event of the meter comes.
                continue
            if op[0] == "member":
                if op[3]:
                    self.members[op[1]].add(op[2])
                else:
                    self.members[op[1]].discard(op[2])
                continue
            _, state_key, users_key, user, order, micros, granted = op
            previous = self.access[state_key].get(user)
            if previous is not None and int(previous) >= int(order):
                continue
            self.access[state_key][user] = order
            members = self.users[users_key]
            if granted:
                members[user] = min(members.get(user, int(micros)), int(micros))
            else:
                members.pop(user, None)


def _event(tenant: str, kind: str, time: datetime, data: dict[str, Any]) -> UsageEvent:
    return UsageEvent(id="", source="", type=kind, tenant=tenant, time=as_utc(time), data=data,
                      extensions=_NOTHING)


class LiveRebuild:
    def __init__(self, clickhouse: ClickHouse, redis: Redis,
                 resources: Mapping[str, ResourceEvent] = NO_RESOURCE_EVENTS,
                 meters: LiveMeters | None = None) -> None:
        self._ch = clickhouse
        self._redis = redis
        self._resources = resources
        self._meters = meters

    async def needed(self, incarnation: str) -> bool:
        marker = await self._redis.get(LIVE_INCARNATION)
        return marker is None or text(marker) != incarnation

    async def run(self, incarnation: str, zones: dict[str, ZoneInfo]) -> LiveState:
        """Recompute every counter and replace the stored ones; `zones` of every tenant."""
        state = await self.compute(zones)
        await self._replace(state, incarnation)
        log.info("live counters rebuilt from ClickHouse for incarnation %s: %d counters, "
                 "%d access sets", incarnation, len(state.counters), len(state.users))
        return state

    async def tenants(self) -> set[str]:
        rows = await self._ch.rows("SELECT DISTINCT tenant FROM usage_events")
        return {str(t) for (t,) in rows}

    async def compute(self, zones: dict[str, ZoneInfo]) -> LiveState:
        state = LiveState()
        for tenant, bucket, total in await self._ch.rows(_EMAILS, {"type": events.EMAIL_SENT}):
            state.apply(live_ops(_event(tenant, events.EMAIL_SENT, bucket,
                                        {"count": int(total)}), zones[tenant]))
        for tenant, time, minutes, level in await self._ch.rows(
                _SUPPORT, {"type": events.SUPPORT_SESSION_COMPLETED}):
            state.apply(live_ops(_event(tenant, events.SUPPORT_SESSION_COMPLETED, time,
                                        {"minutes": int(minutes), "level": int(level)}),
                                 zones[tenant]))
        for tenant, net in await self._ch.rows(_COMPANIES, {
                "created": events.COMPANY_CREATED, "deleted": events.COMPANY_DELETED}):
            state.counters[live_key(str(tenant), "companies")] += int(net)
        access = [_event(tenant, kind, time, {"module": module, "user_id": user})
                  for tenant, module, user, time, kind in await self._ch.rows(_ACCESS, {
                      "granted": events.USER_ACCESS_GRANTED,
                      "revoked": events.USER_ACCESS_REVOKED})]
        # In time order, a revocation after a grant at the same instant: what the consumer
        # leaves when events arrive in order (R6.3 ranks by the earliest unbroken grant).
        access.sort(key=lambda e: (e.time, e.type == events.USER_ACCESS_REVOKED))
        for event in access:
            state.apply(live_ops(event, zones[event.tenant]))
        await self._compute_resources(state, zones)
        await self._compute_meters(state, zones)
        return state

    async def _compute_meters(self, state: LiveState, zones: dict[str, ZoneInfo]) -> None:
        """Each priced meter's day counters (R10.4), through the consumer's own effect."""
        if self._meters is None:
            return
        for meter in self._meters.meters.values():
            params: dict[str, Any] = {"type": meter.event_type}
            sql = _METER.format(value=value_expression(meter, params))
            for tenant, bucket, total in await self._ch.rows(sql, params):
                if total is None:
                    continue
                day = local_day(as_utc(bucket), zones[str(tenant)])
                state.apply(meter_ops(str(tenant), meter, day, Decimal(total),
                                      self._meters.touched))

    async def _compute_resources(self, state: LiveState, zones: dict[str, ZoneInfo]) -> None:
        """Each declared resource's sets, through the consumer's own effect (`live_ops`)."""
        created = {e.resource: (t, e.key) for t, e in self._resources.items() if e.created}
        deleted = {e.resource: t for t, e in self._resources.items() if not e.created}
        for resource, (created_type, key) in sorted(created.items()):
            rows = await self._ch.rows(_RESOURCE, {"key": key, "created": created_type,
                                                   "deleted": deleted[resource]})
            for tenant, member in rows:
                state.apply(live_ops(_event(str(tenant), created_type, _EPOCH,
                                            {key: str(member)}), zones[str(tenant)],
                                     self._resources))

    async def _replace(self, state: LiveState, incarnation: str) -> None:
        """One transaction; skipped when another metering process rebuilt for the same
        incarnation meanwhile (it may already count new claims on top)."""
        stale = [key async for key in self._redis.scan_iter(match=LIVE_PATTERN, count=1000)]
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(LIVE_INCARNATION)
            marker = await pipe.get(LIVE_INCARNATION)
            if marker is not None and text(marker) == incarnation:
                return
            pipe.multi()  # type: ignore[no-untyped-call]
            if stale:
                pipe.unlink(*stale)
            if state.counters:
                pipe.mset({key: value for key, value in state.counters.items()})
            for key, users in state.access.items():
                orders: dict[Any, Any] = users
                pipe.hset(key, mapping=orders)
            for key, members in state.users.items():
                if members:
                    pipe.zadd(key, members)
            for key, ids in state.members.items():
                listed = sorted(ids)
                for start in range(0, len(listed), _SADD_CHUNK):
                    pipe.sadd(key, *listed[start:start + _SADD_CHUNK])
            pipe.set(LIVE_INCARNATION, incarnation)
            with contextlib.suppress(WatchError):
                await pipe.execute()
