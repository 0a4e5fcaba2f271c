"""Bad input never crashes the consumer and never yields a 500: every message that cannot be
accepted lands in `usage-events.dlq` unchanged with headers naming the error and the field
(docs/events.md); over HTTP each rejected event is named with its field (docs/api.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.stack import Endpoints
from tests.conftest import RunningApp, cloud_event, create_tenant, eventually, produce

DLQ = "usage-events.dlq"


@pytest.fixture
async def dlq_reader(endpoints: Endpoints) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(DLQ, bootstrap_servers=endpoints.kafka_bootstrap,
                                group_id=f"dlq-reader-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=1000, heartbeat_interval_ms=200)
    await consumer.start()
    yield consumer
    await consumer.stop()


async def _dead_letters(reader: AIOKafkaConsumer, values: set[bytes | None],
                        found: dict[bytes | None, dict[str, str]]) -> bool:
    batch = await reader.getmany(timeout_ms=200)
    for records in batch.values():
        for record in records:
            if record.value in values:
                found[record.value] = {k: v.decode() for k, v in record.headers}
    return set(found) == values


def _valid(tenant: str, marker: str) -> dict[str, Any]:
    return cloud_event(tenant, "email.sent", {"count": 1}, event_id=marker)


async def test_each_kind_of_bad_message_lands_in_the_dlq_with_its_reason(
        platform: RunningApp, endpoints: Endpoints, dlq_reader: AIOKafkaConsumer,
        unique: str) -> None:
    tenant = f"dlq-{unique}"

    def event(**changes: Any) -> bytes:
        body = _valid(tenant, f"{unique}-{uuid.uuid4().hex}")
        body.update(changes)
        return orjson.dumps({k: v for k, v in body.items() if v is not None})

    cases: dict[bytes, tuple[str, str]] = {
        b"\xff\xfe not json " + unique.encode(): ("invalid_json", "body"),
        orjson.dumps([1, 2, unique]): ("not_an_object", "body"),
        event(specversion=None): ("not_cloudevents", "specversion"),
        event(type="weird.thing"): ("unknown_type", "type"),
        event(data={"count": 0}): ("invalid_field", "data.count"),
        event(data={"count": "3"}): ("invalid_field", "data.count"),
        event(type="user.access.granted", data={"user_id": "u-1"}): ("missing_field",
                                                                      "data.module"),
        event(time="yesterday"): ("invalid_field", "time"),
        event(time="2026-01-15T10:00:00"): ("invalid_field", "time"),
        event(subject=""): ("invalid_field", "subject"),
        event(data={"count": 1, "pad": "x" * 70_000}): ("too_large", "body"),
        event(type="support.session.completed", data={"minutes": 10, "level": 4}): (
            "invalid_field", "data.level"),
    }
    sentinel = _valid(tenant, f"{unique}-sentinel")
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [(None, value) for value in cases] + [(None, orjson.dumps(sentinel))])

    found: dict[bytes | None, dict[str, str]] = {}
    await eventually(lambda: _dead_letters(dlq_reader, set(cases), found), within=20)
    for value, (code, field) in cases.items():
        headers = found[value]
        assert (headers["error.code"], headers["error.field"]) == (code, field), value[:80]
        assert headers["error.message"]
        assert headers["source.topic"] == "usage-events"
    # The consumer kept going: the valid event after them all was counted.
    usage = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
        "tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00Z"})
    assert [p["value"] for p in usage.json()["data"]] == [1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)

envelope_keys = st.sampled_from(["specversion", "id", "source", "type", "subject", "time",
                                 "data"])


@st.composite
def damaged_events(draw: st.DrawFn) -> Any:
    """A valid event with some attributes dropped or replaced by arbitrary JSON."""
    body: dict[str, Any] = _valid("fuzz-tenant", f"fuzz-{draw(st.uuids())}")
    for key in draw(st.lists(envelope_keys, max_size=3)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(json_values)
    if draw(st.booleans()):
        body["data"] = draw(st.dictionaries(st.sampled_from(["count", "campaign_id", "x"]),
                                            json_values, max_size=3))
    return body


corpus = st.one_of(json_values, damaged_events())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=corpus)
async def test_http_ingest_never_answers_500(platform: RunningApp, body: Any) -> None:
    # The stdlib encoder, so integers beyond 64 bits reach the server too.
    response = await platform.client.post("/v1/events", content=json.dumps(body),
                                          headers={**platform.as_admin(),
                                                   "Content-Type": "application/json"})
    assert response.status_code in (202, 400, 413, 422), response.text
    if response.status_code != 202:
        assert response.json()["error"]["field"]


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.one_of(corpus.map(lambda v: json.dumps(v).encode()),
                                   st.binary(max_size=64)), min_size=20, max_size=40))
async def test_a_fuzzed_stream_never_stops_the_consumer(
        platform: RunningApp, endpoints: Endpoints, messages: list[bytes]) -> None:
    marker = uuid.uuid4().hex
    tenant = f"fuzz-{marker}"
    sentinel = orjson.dumps(_valid(tenant, f"sentinel-{marker}"))
    await produce(endpoints.kafka_bootstrap, "usage-events",
                  [(None, m) for m in messages] + [(None, sentinel)])

    async def sentinel_counted() -> bool:
        usage = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
            "tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
            "to": "2026-02-01T00:00:00Z"})
        return bool(usage.json()["data"])

    await eventually(sentinel_counted, within=20)


async def test_http_rejections_name_index_field_and_reason(platform: RunningApp,
                                                           unique: str) -> None:
    tenant = f"http-bad-{unique}"
    good = _valid(tenant, f"{unique}-good")
    bad_count = {**_valid(tenant, f"{unique}-bad"), "data": {"count": -1}}
    no_type = {k: v for k, v in _valid(tenant, f"{unique}-nt").items() if k != "type"}
    response = await platform.client.post(
        "/v1/events", content=orjson.dumps([good, bad_count, no_type]),
        headers={**platform.as_admin(), "Content-Type": "application/cloudevents-batch+json"})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"], r["code"]) for r in body["rejected"]] == [
        (1, "data.count", "invalid_field"), (2, "type", "missing_field")]

    single = await platform.client.post("/v1/events", json=bad_count, headers=platform.as_admin())
    assert single.status_code == 422
    assert single.json()["error"]["field"] == "data.count"

    not_json = await platform.client.post("/v1/events", content=b"{oops",
                                          headers=platform.as_admin())
    assert not_json.status_code == 400
    assert not_json.json()["error"] == {"code": "invalid_json", "field": "body",
                                        "message": "the body is not valid JSON"}

    batch_of_object = await platform.client.post(
        "/v1/events", json=good,
        headers={**platform.as_admin(), "Content-Type": "application/cloudevents-batch+json"})
    assert batch_of_object.status_code == 422

    huge = await platform.client.post("/v1/events", content=b"[" + b" " * 6_000_000 + b"]",
                                      headers=platform.as_admin())
    assert huge.status_code == 413
    assert huge.json()["error"]["field"] == "body"


async def test_a_tenant_limited_ingest_key_cannot_write_for_another_tenant(
        platform: RunningApp, unique: str) -> None:
    await create_tenant(platform.client, f"mine-{unique}")
    minted = await platform.client.post("/v1/api-keys", json={"role": "ingest",
                                                              "tenant": f"mine-{unique}"},
                                        headers=platform.as_admin())
    key = {"Authorization": f"Bearer {minted.json()['key']}"}
    theirs = _valid(f"theirs-{unique}", f"{unique}-x")
    response = await platform.client.post("/v1/events", json=theirs, headers=key)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "subject"
    mine = _valid(f"mine-{unique}", f"{unique}-y")
    assert (await platform.client.post("/v1/events", json=mine, headers=key)).status_code == 202
