"""The hardening review's stream test: a stream of 10,000 events with 1 % poison (each kind of
bad message the review found) produced straight to Kafka. Every valid event is counted exactly
once, in ClickHouse and in the live counters; every poison message is in the DLQ with its
reason; the consumer never stops. And a property: events at the edges of the contract (counts
at 1 and 10^9, times at 2000 and just before 2100 at any offset, unicode everywhere, big
floats, nesting up to 32) are valid, are counted, and never disturb the events after them."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clickhouse.client import connect
from shared.stack import Endpoints
from tests.conftest import ADMIN, RunningApp, cloud_event, create_tenant, eventually, produce

DLQ = "usage-events.dlq"
TENANTS = 20
VALID = 9_900
POISON = 100
DUPLICATES = 495  # 5 % of the valid events, sent twice
MAX_QUANTITY = 10**9

Message = tuple[bytes | None, bytes]


def nested(depth: int) -> str:
    """JSON text of objects nested `depth` deep, written by hand: orjson writes at most 254."""
    return '{"a":' * depth + "1" + "}" * depth


def poison_kinds(tenant: str, marker: str, day: str) -> list[tuple[bytes, str, str]]:
    """Each kind of bad message: (value, error.code, error.field) the DLQ must name."""
    def event(**changes: Any) -> bytes:
        body = cloud_event(tenant, "email.sent", {"count": 1}, event_id=marker,
                           time=f"{day}T08:00:00Z")
        body.update(changes)
        return orjson.dumps({k: v for k, v in body.items() if v is not None})

    def count(value: Any) -> tuple[bytes, str, str]:
        return event(data={"count": value}), "invalid_field", "data.count"

    def when(value: str) -> tuple[bytes, str, str]:
        return event(time=value), "invalid_field", "time"

    shallow = event()[:-1]
    return [
        when("0001-01-01T00:00:00Z"),
        when("9999-12-31T23:30:00Z"),
        when("0001-01-01T00:00:00+01:00"),
        when("1999-12-31T23:59:59.999999Z"),
        when("2100-01-01T00:00:00Z"),
        when("2099-12-31T23:00:00-01:00"),  # 2100-01-01T00:00Z
        count(0), count(-1), count(2**63 - 1), count(MAX_QUANTITY + 1), count(1.5),
        count("12"), count(True),
        (shallow + f',"ext":{nested(300)}}}'.encode(), "too_deep", "ext"),
        (shallow + f',"ext":{nested(33)}}}'.encode(), "too_deep", "ext"),
        (event(data={"count": 1, "x": orjson.loads(nested(32))}), "too_deep", "data"),
        (b"\xff not json " + marker.encode(), "invalid_json", "body"),
        (orjson.dumps([marker, tenant]), "not_an_object", "body"),
        (event(id=None, source=marker), "missing_field", "id"),
        (event(type="email.received"), "unknown_type", "type"),
        (event(id=marker + "x" * 300), "invalid_field", "id"),
    ]


async def _usage(client: httpx.AsyncClient, tenant: str, start: str, end: str) -> int:
    response = await client.get("/v1/usage", headers=ADMIN, params={
        "tenant": tenant, "meter": "emails_sent", "from": start, "to": end})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return int(data[0]["value"]) if data else 0


async def _used(client: httpx.AsyncClient, tenant: str) -> int:
    response = await client.get(f"/v1/tenants/{tenant}/check", headers=ADMIN,
                                params={"feature": "emails", "quantity": 1})
    assert response.status_code == 200, response.text
    return int(response.json()["used"])


async def _platform_day(client: httpx.AsyncClient) -> datetime:
    """Midnight UTC of the platform's today (the session's manual clock, never moved here)."""
    response = await client.get("/v1/clock", headers=ADMIN)
    assert response.status_code == 200, response.text
    now = datetime.fromisoformat(response.json()["now"]).astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


async def _dead_letters(bootstrap: str, prefix: bytes, wanted: set[bytes]
                        ) -> tuple[Counter[bytes], dict[bytes, dict[str, str]]]:
    """How often each key under `prefix` is in the DLQ, and its headers: the topic read to
    its end once each wanted key was seen."""
    reader = AIOKafkaConsumer(DLQ, bootstrap_servers=bootstrap,
                              group_id=f"poison-stream-{uuid.uuid4().hex}",
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              session_timeout_ms=1000, heartbeat_interval_ms=200)
    await reader.start()
    seen: Counter[bytes] = Counter()
    headers: dict[bytes, dict[str, str]] = {}

    async def read() -> None:
        batch = await reader.getmany(timeout_ms=200, max_records=5_000)
        for records in batch.values():
            for record in records:
                if record.key is not None and record.key.startswith(prefix):
                    seen[record.key] += 1
                    headers[record.key] = {k: v.decode() for k, v in record.headers}

    async def all_wanted() -> bool:
        await read()
        return wanted <= set(seen)

    async def at_end() -> bool:
        await read()
        positions = {tp: await reader.position(tp) for tp in ends}
        return all(positions[tp] >= end for tp, end in ends.items())

    try:
        await eventually(all_wanted, within=60)
        ends = await reader.end_offsets(list(reader.assignment()))
        await eventually(at_end, within=30)
    finally:
        await reader.stop()
    return seen, headers


async def test_a_stream_with_one_percent_poison_counts_every_valid_event_once(
        platform: RunningApp, endpoints: Endpoints, unique: str) -> None:
    prefix = f"stream-{unique}"
    rng = random.Random(f"poison-stream-{unique}")
    tenants = [f"{prefix}-t{n:02d}" for n in range(TENANTS)]
    for tenant in tenants:
        # UTC and anchored today: the check's period is the platform's today.
        await create_tenant(platform.client, tenant, time_zone="UTC")
    midnight = await _platform_day(platform.client)
    day = midnight.date().isoformat()

    valid: list[Message] = []
    expected: Counter[str] = Counter()
    distinct: Counter[str] = Counter()
    for n in range(VALID):
        tenant = tenants[n % TENANTS]
        count = rng.choice([1, 2, MAX_QUANTITY - 1, MAX_QUANTITY]) if n % 50 == 0 \
            else rng.randint(1, MAX_QUANTITY)
        instant = midnight + timedelta(microseconds=rng.randrange(86_400 * 10**6))
        event = cloud_event(tenant, "email.sent", {"count": count}, event_id=f"{tenant}-{n}",
                            time=instant.isoformat().replace("+00:00", "Z"),
                            source=f"{prefix}-src-{n % 3}")
        valid.append((tenant.encode(), orjson.dumps(event)))
        expected[tenant] += count
        distinct[tenant] += 1
    copies = rng.sample(valid, DUPLICATES)

    poison: dict[bytes, tuple[bytes, str, str]] = {}
    for n in range(POISON):
        key = f"{prefix}-poison-{n:03d}"
        kinds = poison_kinds(tenants[n % TENANTS], key, day)
        poison[key.encode()] = kinds[n % len(kinds)]
    assert len({field for _, _, field in poison.values()}) > 5  # each kind, several times

    stream = valid + copies + [(key, value) for key, (value, _, _) in poison.items()]
    rng.shuffle(stream)
    await produce(endpoints.kafka_bootstrap, "usage-events", stream)

    # ClickHouse: each tenant's total is the sum over its distinct valid events.
    start, end = day + "T00:00:00Z", (midnight + timedelta(days=1)).isoformat()

    async def totals() -> dict[str, int]:
        return {t: await _usage(platform.client, t, start, end) for t in tenants}

    async def all_counted() -> bool:
        return await totals() == dict(expected)

    await eventually(all_counted, within=120, interval=0.5)
    rows = await connect(endpoints.clickhouse_dsn).rows(
        "SELECT tenant, count(), uniqExact(source, id) FROM usage_events "
        "WHERE startsWith(tenant, {p:String}) GROUP BY tenant", {"p": prefix + "-t"})
    assert {str(r[0]): (int(r[1]), int(r[2])) for r in rows} == {
        t: (distinct[t], distinct[t]) for t in tenants}

    # Live counters: what the check reads for the tenant's period.
    assert {t: await _used(platform.client, t) for t in tenants} == dict(expected)

    # The DLQ: exactly the poison messages, once each, with their reasons; no valid event.
    seen, headers = await _dead_letters(endpoints.kafka_bootstrap, prefix.encode(), set(poison))
    assert seen == Counter(set(poison)), {k: n for k, n in seen.items()
                                          if k not in poison or n != 1}
    for marker, (_, code, field) in poison.items():
        assert headers[marker]["error.code"] == code, (marker, headers[marker])
        assert headers[marker]["error.field"] == field, (marker, headers[marker])
        assert headers[marker]["error.message"]

    # The consumer goes on, and says it is ready.
    last = cloud_event(tenants[0], "email.sent", {"count": 7}, event_id=f"{prefix}-last",
                       time=f"{day}T23:59:59Z")
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [(tenants[0].encode(), orjson.dumps(last))])
    await eventually(lambda: _equals(_usage(platform.client, tenants[0], start, end),
                                     expected[tenants[0]] + 7), within=20)
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# --- edges of the contract, generated -------------------------------------------------------

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LAST_SECOND = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]  # +14:00 and -12:00, the extremes
texts = st.text(min_size=1, max_size=200).filter(lambda s: not s.isspace())


@st.composite
def instants(draw: st.DrawFn) -> str:
    """An instant near either end of the domain (or anywhere in it), at an extreme offset."""
    # hypothesis takes naive bounds and attaches the zone itself.
    first, last = EARLIEST.replace(tzinfo=None), LAST_SECOND.replace(tzinfo=None)
    instant = draw(st.one_of(
        st.just(EARLIEST), st.just(LAST_SECOND),
        st.datetimes(first, first + timedelta(days=2), timezones=st.just(UTC)),
        st.datetimes(last - timedelta(days=2), last, timezones=st.just(UTC)),
        st.datetimes(first, last, timezones=st.just(UTC))))
    hours = draw(st.sampled_from([0, 14, -12, 5]))
    return instant.astimezone(timezone(timedelta(hours=hours))).isoformat()


@st.composite
def chains(draw: st.DrawFn, depth: int) -> Any:
    """Objects and arrays nested exactly `depth` deep, around a unicode leaf."""
    value: Any = draw(st.one_of(texts, st.floats(allow_nan=False, allow_infinity=False)))
    for as_list in draw(st.lists(st.booleans(), min_size=depth, max_size=depth)):
        value = [value] if as_list else {"k": value}
    return value


@st.composite
def edge_events(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"count": draw(st.one_of(
        st.sampled_from([1, 2, MAX_QUANTITY - 1, MAX_QUANTITY]),
        st.integers(1, MAX_QUANTITY)))}
    if draw(st.booleans()):
        data["campaign_id"] = draw(st.text(min_size=1, max_size=256).filter(
            lambda s: not s.isspace()))
    if draw(st.booleans()):
        data["weight"] = draw(st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308,
                                               5e-324, -0.0]) | st.floats(allow_nan=False,
                                                                          allow_infinity=False))
    if draw(st.booleans()):
        data["big"] = draw(st.integers(-(2**63), 2**64 - 1))
    if draw(st.booleans()):  # `data` itself is the first level
        data["nested"] = draw(chains(draw(st.integers(1, 31))))
    extensions = draw(st.dictionaries(
        st.sampled_from(["ext", "myext", "x1"]),
        st.one_of(st.booleans(), texts, st.integers(-(2**63), 2**63 - 1),
                  st.floats(allow_nan=False, allow_infinity=False),
                  st.integers(1, 32).flatmap(chains)),
        max_size=3))
    return {**extensions, "specversion": "1.0", "id": draw(texts), "source": draw(texts),
            "type": "email.sent", "time": draw(instants()), "data": data,
            "zone": draw(st.sampled_from(ZONES))}


async def test_events_at_the_edges_of_the_contract_are_counted_with_those_after_them(
        platform: RunningApp, endpoints: Endpoints, unique: str) -> None:
    drawn: list[dict[str, Any]] = []

    # The examples are drawn first, then sent in one stream and checked once: one wait for
    # all of them instead of one per example.
    # On an inner function, not the test: no fixture is shared between examples.
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(event=edge_events())
    def draw(event: dict[str, Any]) -> None:
        drawn.append(event)

    draw()
    assert drawn
    midnight = await _platform_day(platform.client)
    messages: list[Message] = []
    for n, body in enumerate(drawn):
        tenant = f"edge-{unique}-{n}"
        await create_tenant(platform.client, tenant, time_zone=body.pop("zone"))
        # A distinct identity per example: hypothesis may draw the same id twice.
        body.update(subject=tenant, id=f"{n}-{body['id']}"[:256])
        after = cloud_event(tenant, "email.sent", {"count": 1}, event_id=f"{tenant}-after",
                            time=midnight.isoformat())
        messages += [(tenant.encode(), orjson.dumps(body)),
                     (tenant.encode(), orjson.dumps(after))]
    await produce(endpoints.kafka_bootstrap, "usage-events", messages)

    expected = {f"edge-{unique}-{n}": body["data"]["count"] + 1 for n, body in enumerate(drawn)}

    async def totals() -> dict[str, int]:
        return {t: await _usage(platform.client, t, "2000-01-01T00:00:00Z",
                                "2099-12-31T23:59:59.999999Z") for t in expected}

    async def all_counted() -> bool:
        return await totals() == expected

    try:
        await eventually(all_counted, within=30, interval=0.2)
    except AssertionError:
        got = await totals()
        wrong = {n: drawn[n] for n, t in enumerate(expected) if got[t] != expected[t]}
        raise AssertionError(f"not counted as expected: {wrong!r}; got {got}") from None
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200, ready.text
