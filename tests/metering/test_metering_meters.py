"""Meters declared in configuration (OpenMeter/Lago style): a product meters something new
without a release; an invalid definition stops the start, naming the field."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.metering.part import MeteringPart
from shared.meters import MeterError
from shared.stack import Endpoints
from tests.conftest import RunningApp, cloud_event, eventually, serving, settings_for

# `api_calls` too: the demo catalog prices it, and every service refuses a catalog pricing a
# meter it does not know (R10.1).
METERS = """
meters:
  - {slug: api_calls, event_type: api.calls, aggregation: SUM, value_property: count}
  - slug: ai_tokens
    event_type: ai.completion
    aggregation: SUM
    value_property: usage.tokens
    group_by: {model: model}
  - slug: ai_users
    event_type: ai.completion
    aggregation: UNIQUE_COUNT
    value_property: user
  - slug: ai_slowest_ms
    event_type: ai.completion
    aggregation: MAX
    value_property: latency_ms
  - slug: storage_gb
    event_type: storage.measured
    aggregation: LATEST
    value_property: gb
"""


@pytest.fixture(scope="module")
async def metered(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[RunningApp]:
    """A metering app of its own, on its own topics and group, with the meters above."""
    path = tmp_path_factory.mktemp("meters") / "meters.yaml"
    path.write_text(METERS)
    name = uuid.uuid4().hex[:8]
    values = settings_for(endpoints, meters=path, consumer_group=f"metering-{name}",
                          usage_events_topic=f"usage-{name}",
                          usage_events_dlq_topic=f"usage-{name}.dlq",
                          subscription_events_topic=f"subscriptions-{name}")
    async with serving(values, [MeteringPart(values)]) as running:
        yield running


async def _usage(app: RunningApp, tenant: str, meter: str, **params: str) -> list[Any]:
    response = await app.client.get("/v1/usage", headers=app.as_admin(), params={
        "tenant": tenant, "meter": meter, "from": "2026-05-01T00:00:00Z",
        "to": "2026-06-01T00:00:00Z", **params})
    assert response.status_code == 200, response.text
    return [(p["group"], p["value"]) for p in response.json()["data"]]


async def test_configured_meters_aggregate_a_new_event_type(metered: RunningApp) -> None:
    tenant = f"ai-{uuid.uuid4().hex[:8]}"
    completions = [("gpt", 120, "u-1", 300, "2026-05-02T10:00:00Z"),
                   ("gpt", 80, "u-2", 900, "2026-05-03T10:00:00Z"),
                   ("mini", 15.5, "u-1", 50, "2026-05-04T10:00:00Z")]
    events = [cloud_event(tenant, "ai.completion",
                          {"model": model, "usage": {"tokens": tokens}, "user": user,
                           "latency_ms": latency}, event_id=f"{tenant}-{i}", time=when)
              for i, (model, tokens, user, latency, when) in enumerate(completions)]
    events += [cloud_event(tenant, "storage.measured", {"gb": gb}, event_id=f"{tenant}-s{i}",
                           time=when)
               for i, (gb, when) in enumerate([("7", "2026-05-01T00:00:00Z"),
                                               (3, "2026-05-20T00:00:00Z"),
                                               (9, "2026-05-10T00:00:00Z")])]
    response = await metered.client.post("/v1/events", json=events, headers=metered.as_admin())
    assert response.json() == {"accepted": 6, "rejected": []}

    await eventually(lambda: _usage(metered, tenant, "storage_gb"))
    assert await _usage(metered, tenant, "ai_tokens", group_by="model") == [
        ({"model": "gpt"}, 200), ({"model": "mini"}, 15.5)]
    assert await _usage(metered, tenant, "ai_users") == [({}, 2)]
    assert await _usage(metered, tenant, "ai_slowest_ms") == [({}, 900)]
    # LATEST is by event time, not arrival: the 20th's measure wins.
    assert await _usage(metered, tenant, "storage_gb") == [({}, 3)]


async def test_an_event_missing_the_value_property_is_rejected(metered: RunningApp) -> None:
    event = cloud_event("ai-x", "ai.completion", {"model": "gpt", "user": "u"},
                        event_id=f"ai-{uuid.uuid4().hex}")
    response = await metered.client.post("/v1/events", json=event, headers=metered.as_admin())
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "data.usage.tokens"


@pytest.mark.parametrize(("definition", "field"), [
    ("- {slug: Bad-Slug, event_type: x, aggregation: COUNT}", "meters[0].slug"),
    ("- {slug: s, event_type: x, aggregation: AVERAGE}", "meters[0].aggregation"),
    ("- {slug: s, event_type: x, aggregation: SUM}", "meters[0].value_property"),
    ("- {slug: s, event_type: x, aggregation: COUNT, value_property: v}",
     "meters[0].value_property"),
    ("- {slug: emails_sent, event_type: x, aggregation: COUNT}", "meters[0].slug"),
    ("- {slug: s, event_type: x, aggregation: SEATS}", "meters[0].aggregation"),
    ("- {slug: s, event_type: x, aggregation: COUNT, group_by: {g: 'a..b'}}",
     "meters[0].group_by"),
    ("- {slug: s, event_type: x, aggregation: COUNT, colour: red}", "meters[0].colour"),
])
def test_an_invalid_meter_definition_stops_the_start(tmp_path: Path, definition: str,
                                                     field: str) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text(f"meters:\n  {definition}\n")
    with pytest.raises(MeterError) as raised:
        MeteringPart({"meters": path})
    assert raised.value.field == field
