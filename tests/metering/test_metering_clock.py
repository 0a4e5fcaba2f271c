"""PUT /v1/clock first waits until metering has counted every event accepted before the call
(docs/api.md), so a demo that sends events and then moves the clock sees them all."""

from __future__ import annotations

import time

import pytest

from services.metering.part import MeteringPart
from shared.errors import Unavailable
from tests.conftest import CLOCK_START, RunningApp, cloud_event


async def test_moving_the_clock_waits_for_a_batch_accepted_just_before(platform: RunningApp,
                                                                       unique: str) -> None:
    tenant = f"barrier-{unique}"
    events = [cloud_event(tenant, "email.sent", {"count": 1}, event_id=f"{tenant}-{n}")
              for n in range(300)]
    accepted = await platform.client.post(
        "/v1/events", json=events,
        headers={**platform.as_admin(), "Content-Type": "application/cloudevents-batch+json"})
    assert accepted.json()["accepted"] == 300
    moved = await platform.client.put("/v1/clock", json={"now": CLOCK_START.isoformat()},
                                      headers=platform.as_admin())
    assert moved.status_code == 200
    # No polling: the answer came only once all 300 were counted.
    usage = await platform.client.get("/v1/usage", headers=platform.as_admin(), params={
        "tenant": tenant, "meter": "emails_sent", "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00Z"})
    assert [p["value"] for p in usage.json()["data"]] == [300]


async def test_a_barrier_metering_cannot_meet_is_a_503_within_its_deadline(
        platform: RunningApp) -> None:
    """An offset no message will ever reach: the wait ends at its deadline as `Unavailable`
    (503 `metering_behind`), never as a hang or a 500."""
    part = platform.parts[0]
    assert isinstance(part, MeteringPart)
    assert part.consumer is not None
    stored = part.consumer.stored
    before = dict(stored.produced)
    stored.sent(0, 10**12)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as raised:
            await part.consumer.caught_up(timeout_s=0.5)
    finally:
        stored.produced.clear()
        stored.produced.update(before)
    assert (raised.value.status, raised.value.error_code) == (503, "metering_behind")
    assert 0.5 <= time.monotonic() - started < 5
