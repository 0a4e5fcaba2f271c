"""Metering logic without I/O frameworks: per-message processing, live-counter effects,
usage windows and seat counting (R6.4). The worker and the routes call into this."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from services.metering.acks import StoredEvents, produced_elsewhere
from services.metering.store import EventStore
from shared import events, keys
from shared.billing.periods import local_midnight
from shared.billing.seats import access_intervals, users_with_access
from shared.billing.support import round_session
from shared.errors import NotFound, ValidationFailed
from shared.events import EventValidator, InvalidEvent, UsageEvent
from shared.meters import Aggregation, MeterRegistry
from shared.resources import NO_RESOURCE_EVENTS, ResourceEvent
from shared.settings import MeteringSettings
from shared.times import as_utc, micros, parse_zone
from shared.usage_limits import LiveMeters, LiveOp, event_value, meter_ops

MAX_BUCKETS = 10_000
# Past the client's own request timeout (40 s), which ends a produce when idempotence is off.
PRODUCE_TIMEOUT_S = 45.0


def claim_key(event: UsageEvent) -> str:
    digest = hashlib.blake2b(f"{event.source}\x00{event.id}".encode(), digest_size=16)
    return "claim:" + digest.hexdigest()


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def live_ops(event: UsageEvent, zone: ZoneInfo,
             resources: Mapping[str, ResourceEvent] = NO_RESOURCE_EVENTS,
             meters: LiveMeters | None = None) -> list[LiveOp]:
    """The Redis counter updates one new event makes (applied atomically with its claim):
    those of the built-in and counted-resource counters, then those of every priced meter
    (`meters`) the event's type moves (R10.4)."""
    ops = _counter_ops(event, zone, resources)
    if meters is None:
        return ops
    for meter in meters.by_type.get(event.type, ()):
        value = event_value(event, meter)
        if value is not None:
            ops += meter_ops(event.tenant, meter, local_day(event.time, zone), value,
                             meters.touched)
    return ops


def _counter_ops(event: UsageEvent, zone: ZoneInfo,
                 resources: Mapping[str, ResourceEvent]) -> list[LiveOp]:
    """The built-in counters' and counted resources' updates of one event.

    E-mails are kept per local day of the tenant, so a check sums its period's days (R7.2);
    companies as one net count (R7.3); access as last-event-wins state per user plus a
    sorted set ranked by grant time (R6.3); a declared counted resource (`resources`, by
    event type) as the set of its instance ids (R7.4): adding an id twice or removing one
    absent changes nothing, so replays never count twice and the count is never negative.
    """
    data = event.data
    if event.type == events.EMAIL_SENT:
        day = local_day(event.time, zone)
        return [["incr", keys.emails_key(event.tenant, day), data["count"]]]
    if event.type == events.COMPANY_CREATED:
        return [["incr", keys.companies_key(event.tenant), 1]]
    if event.type == events.COMPANY_DELETED:
        return [["incr", keys.companies_key(event.tenant), -1]]
    if event.type == events.SUPPORT_SESSION_COMPLETED:
        day = local_day(event.time, zone)
        key = keys.support_minutes_key(event.tenant, day, level_3=data["level"] == 3)
        return [["incr", key, round_session(data["minutes"])]]  # R8.1
    if event.type in (events.USER_ACCESS_GRANTED, events.USER_ACCESS_REVOKED):
        module = str(data["module"])
        instant = micros(event.time)
        granted = event.type == events.USER_ACCESS_GRANTED
        # At the same instant a revocation wins over a grant. Instants travel as text: Lua
        # numbers would print them with 14 significant digits.
        order = instant * 2 + (0 if granted else 1)
        return [["access", keys.access_key(event.tenant, module),
                 keys.users_key(event.tenant, module), str(data["user_id"]), str(order),
                 str(instant), 1 if granted else 0]]
    counted = resources.get(event.type)
    if counted is not None:
        return [["member", keys.resource_key(event.tenant, counted.resource),
                 str(data[counted.key]), 1 if counted.created else 0]]
    return []


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str | None
    error: InvalidEvent


def check_event(validator: EventValidator, body: Any, max_event_bytes: int,
                allowed_tenant: str | None) -> tuple[UsageEvent, bytes]:
    """One HTTP-ingested event, checked as the consumer will check it, plus the key's scope;
    with the bytes to produce. Validated before it is encoded: the depth bound is what keeps
    the encoder from refusing it."""
    event = validator.validate(body)
    raw = orjson.dumps(body)
    if len(raw) > max_event_bytes:
        raise InvalidEvent("too_large", "body",
                           f"event of {len(raw)} bytes is over {max_event_bytes}")
    if allowed_tenant is not None and event.tenant != allowed_tenant:
        # A tenant-limited key sees other tenants as if they did not exist (docs/api.md).
        raise InvalidEvent("unknown_tenant", "subject", f"tenant '{event.tenant}' not found")
    return event, raw


# --- usage windows -------------------------------------------------------------------------

def bucket_bounds(bucket: Any, window: str | None, zone: ZoneInfo, start: datetime,
                  end: datetime) -> tuple[datetime, datetime]:
    """A ClickHouse bucket key turned into its [from, to) instants in the caller's zone."""
    if window is None:
        return start.astimezone(zone), end.astimezone(zone)
    if window == "hour":
        begin = max(as_utc(bucket), start)
        return begin.astimezone(zone), min(begin + timedelta(hours=1), end).astimezone(zone)
    day: date = bucket if not isinstance(bucket, datetime) else bucket.date()
    lower = max(local_midnight(day, zone), start)
    upper = min(local_midnight(_next_window_day(day, window), zone), end)
    return lower.astimezone(zone), upper.astimezone(zone)


def _next_window_day(day: date, window: str) -> date:
    """The local day the next day or month window starts on."""
    if window == "day":
        return day + timedelta(days=1)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def check_range(start: datetime, end: datetime, window: str | None) -> None:
    if end <= start:
        raise ValidationFailed("to: must be after 'from'", field="to")
    span = end - start
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1),
            "month": timedelta(days=28)}.get(window or "")
    if step is not None and span / step > MAX_BUCKETS:
        raise ValidationFailed(f"window: more than {MAX_BUCKETS} {window} buckets; "
                               "use a wider window or a shorter range", field="window")


# --- the service the routes call -----------------------------------------------------------

class MeteringService:
    def __init__(self, store: EventStore, registry: MeterRegistry, validator: EventValidator,
                 producer: AIOKafkaProducer, settings: MeteringSettings,
                 stored: StoredEvents, answering: Callable[[], Awaitable[str]]) -> None:
        self.store = store
        self.registry = registry
        self.validator = validator
        self._producer = producer
        self._topic = settings.usage_events_topic
        self._max_event_bytes = settings.max_event_bytes
        self._ack_stored = settings.ingest_ack == "stored"
        self._ack_timeout_s = settings.ingest_ack_timeout_s
        self._stored = stored
        self._answering = answering

    async def ingest(self, bodies: Sequence[Any], allowed_tenant: str | None
                     ) -> tuple[int, list[Rejection]]:
        """Validate each event and produce the valid ones; returns once the broker acked them
        or, with `INGEST_ACK=stored`, once they are stored (acks.py)."""
        accepted: list[tuple[UsageEvent, bytes]] = []
        rejected: list[Rejection] = []
        for index, body in enumerate(bodies):
            try:
                event, raw = check_event(self.validator, body, self._max_event_bytes,
                                         allowed_tenant)
            except InvalidEvent as error:
                event_id = body.get("id") if isinstance(body, dict) else None
                rejected.append(Rejection(index, event_id if isinstance(event_id, str) else None,
                                          error))
                continue
            accepted.append((event, raw))
        if not self._ack_stored or not accepted:
            await self._produce(accepted)
            return len(accepted), rejected
        # The broker before and after: the same cluster id (they are never reused) means
        # the events went to that one, the one the consumer reports from (acks.py).
        broker = await self._answering()
        waiter = self._stored.expect(broker, (event.key for event, _ in accepted))
        try:
            await self._produce(accepted)
            if await self._answering() != broker:
                raise produced_elsewhere()
        except BaseException:
            self._stored.forget(waiter)
            raise
        await self._stored.wait(waiter, self._ack_timeout_s)
        return len(accepted), rejected

    async def _produce(self, accepted: Sequence[tuple[UsageEvent, bytes]]) -> None:
        """Once the broker has acknowledged every message; 503 after `PRODUCE_TIMEOUT_S`
        (an idempotent producer never expires a batch: it would wait out the whole outage).
        A message the broker takes after that is counted once when its caller sends it
        again."""
        try:
            async with asyncio.timeout(PRODUCE_TIMEOUT_S):
                futures = [await self._producer.send(self._topic, raw,
                                                     key=event.tenant.encode())
                           for event, raw in accepted]
                acked = await asyncio.gather(*futures)
        except TimeoutError:  # answered as any broker outage: 503 `kafka_unavailable`
            raise KafkaTimeoutError(f"no acknowledgement within {PRODUCE_TIMEOUT_S:g} s"
                                    ) from None
        for metadata in acked:
            self._stored.sent(metadata.partition, metadata.offset)

    async def usage(self, tenant: str, meter_slug: str, start: datetime, end: datetime,
                    window: str | None, tz: str, group_by: Sequence[str],
                    module: str | None) -> list[dict[str, Any]]:
        """The time series of docs/api.md's usage shape, `data` part."""
        meter = self.registry.get(meter_slug)
        if meter is None:
            raise NotFound(f"meter '{meter_slug}' not found", field="meter")
        zone = parse_zone(tz, "tz")
        check_range(start, end, window)
        for name in group_by:
            if name not in meter.group_by:
                raise ValidationFailed(
                    f"group_by: meter '{meter.slug}' groups by {sorted(meter.group_by)}, "
                    f"not '{name}'", field="group_by")
        if meter.aggregation is Aggregation.SEATS:
            return await self._seats(tenant, start, end, window, zone, group_by, module)
        rows = await self.store.aggregate(meter, tenant, start, end, window, tz, group_by,
                                          module)
        points: list[dict[str, Any]] = []
        for bucket, *groups, value in rows:
            lower, upper = bucket_bounds(bucket, window, zone, start, end)
            points.append({"from": lower.isoformat(), "to": upper.isoformat(),
                           "group": dict(zip(group_by, map(str, groups), strict=True)),
                           "value": _number(value)})
        return points

    async def _seats(self, tenant: str, start: datetime, end: datetime, window: str | None,
                     zone: ZoneInfo, group_by: Sequence[str], module: str | None
                     ) -> list[dict[str, Any]]:
        intervals = access_intervals(await self.store.access_events(tenant, end, module))
        points: list[dict[str, Any]] = []
        for lower, upper in window_bounds(start, end, window, zone):
            per_module = users_with_access(intervals, lower, upper)
            if "module" in group_by:
                groups = [({"module": m}, len(users)) for m, users in sorted(per_module.items())]
            else:
                everyone = set().union(*per_module.values()) if per_module else set()
                groups = [({}, len(everyone))] if everyone else []
            points.extend({"from": lower.astimezone(zone).isoformat(),
                           "to": upper.astimezone(zone).isoformat(), "group": group,
                           "value": value} for group, value in groups)
        return points

    async def event_refs(self, tenant: str, meter_slug: str, start: datetime, end: datetime,
                         module: str | None, limit: int) -> list[dict[str, Any]]:
        meter = self.registry.get(meter_slug)
        if meter is None:
            raise NotFound(f"meter '{meter_slug}' not found", field="meter")
        check_range(start, end, None)
        rows = await self.store.event_refs(meter, tenant, start, end, module, limit)
        return [{"source": s, "id": i, "time": as_utc(t).isoformat(), "topic": topic,
                 "partition": p, "offset": o} for s, i, t, topic, p, o in rows]


def window_bounds(start: datetime, end: datetime, window: str | None,
                  zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The [from, to) windows covering [start, end), aligned to the zone's local calendar."""
    if window is None:
        return [(start, end)]
    bounds: list[tuple[datetime, datetime]] = []
    if window == "hour":
        lower = start.astimezone(zone).replace(minute=0, second=0, microsecond=0)
        lower = lower.astimezone(UTC)
        while lower < end:
            upper = lower + timedelta(hours=1)
            bounds.append((max(lower, start), min(upper, end)))
            lower = upper
        return bounds
    day = start.astimezone(zone).date()
    if window == "month":
        day = day.replace(day=1)
    while (lower := local_midnight(day, zone)) < end:
        day = _next_window_day(day, window)
        upper = local_midnight(day, zone)
        bounds.append((max(lower, start), min(upper, end)))
    return bounds


def _number(value: Any) -> Any:
    """Usage figures as JSON numbers: integral decimals as integers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
