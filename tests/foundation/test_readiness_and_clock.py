"""/readyz against parts that really stop, and the manual clock (R2.4), on a private broker and
valkey so that stopping them, or moving time, touches no other test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.clock import ManualClock, Scheduler
from shared.errors import Unavailable
from shared.redis import make_redis
from shared.stack import Endpoints, TansuBroker, ValkeyServer
from tests.conftest import RunningApp, serving, settings_for


@pytest.fixture(scope="module")
async def bare_app(private_parts: tuple[TansuBroker, ValkeyServer],
                   endpoints: Endpoints) -> AsyncIterator[RunningApp]:
    broker, valkey = private_parts
    private = Endpoints(broker.bootstrap, valkey.url, endpoints.clickhouse_dsn)
    async with serving(settings_for(private), []) as running:
        yield running


async def _ready(app: RunningApp) -> tuple[int, dict[str, Any]]:
    response = await app.client.get("/readyz")
    return response.status_code, response.json()


async def test_readyz_names_valkey_while_it_is_down(
        bare_app: RunningApp, private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    _, valkey = private_parts
    assert (await _ready(bare_app))[0] == 200
    valkey.stop()
    try:
        status, body = await _ready(bare_app)
        assert status == 503
        assert body["checks"]["kafka"] == body["checks"]["clickhouse"] == "ok"
        assert body["checks"]["redis"].startswith("unavailable")
        assert "redis" in body["error"]["message"]
    finally:
        valkey.start()
    assert (await _ready(bare_app))[0] == 200


async def test_readyz_names_the_broker_while_it_is_down(
        bare_app: RunningApp, private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    broker, _ = private_parts
    broker.stop()
    try:
        status, body = await _ready(bare_app)
        assert status == 503
        assert "kafka" in body["error"]["message"]
        assert body["checks"]["redis"] == "ok"
    finally:
        broker.start()
    assert (await _ready(bare_app))[0] == 200


class RecordingJob:
    """A due-job at fixed instants that records when it ran (nothing is due yet in the
    foundation, so this stands in for renewals and billing dates)."""

    def __init__(self, name: str, dues: list[datetime], log: list[tuple[str, datetime]]):
        self.name = name
        self._dues = sorted(dues)
        self._log = log

    async def next_due(self) -> datetime | None:
        return self._dues[0] if self._dues else None

    async def run_due(self, now: datetime) -> None:
        while self._dues and self._dues[0] <= now:
            self._log.append((self.name, now))
            self._dues.pop(0)


async def test_r2_4_moving_the_manual_clock_runs_due_jobs_in_time_order(
        bare_app: RunningApp) -> None:
    ran: list[tuple[str, datetime]] = []
    t = [datetime(2026, m, 1, tzinfo=UTC) for m in (2, 3, 4, 5)]
    bare_app.runtime.scheduler.register(RecordingJob("renewals", [t[0], t[2]], ran))
    bare_app.runtime.scheduler.register(RecordingJob("billing", [t[1], t[3]], ran))
    response = await bare_app.client.put("/v1/clock", json={"now": "2026-04-15T00:00:00Z"},
                                         headers=bare_app.as_admin())
    assert response.status_code == 200
    assert response.json()["now"] == "2026-04-15T00:00:00Z"
    # Each job ran at its own instant, interleaved by time, and nothing beyond the target.
    assert ran == [("renewals", t[0]), ("billing", t[1]), ("renewals", t[2])]
    clock = await bare_app.client.get("/v1/clock", headers=bare_app.as_admin())
    assert clock.json() == {"now": "2026-04-15T00:00:00Z", "manual": True}


async def test_r2_4_the_clock_never_moves_backwards(bare_app: RunningApp) -> None:
    response = await bare_app.client.put("/v1/clock", json={"now": "2025-01-01T00:00:00Z"},
                                         headers=bare_app.as_admin())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "clock_backwards"


async def test_clock_refuses_a_time_without_offset(bare_app: RunningApp) -> None:
    response = await bare_app.client.put("/v1/clock", json={"now": "2027-01-01T00:00:00"},
                                         headers=bare_app.as_admin())
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "now"


class StuckJob:
    """Due at a fixed instant, and still due after it ran: a job that cannot do its work."""

    name = "stuck"

    def __init__(self, due: datetime) -> None:
        self.due = due
        self.runs = 0

    async def next_due(self) -> datetime | None:
        return self.due

    async def run_due(self, now: datetime) -> None:
        self.runs += 1


async def test_r2_4_a_job_that_leaves_its_work_undone_stops_the_clock_there(
        private_parts: tuple[TansuBroker, ValkeyServer]) -> None:
    """By hand: the clock at 2026-01-01, a job due on 2026-02-01 that never does its work. A
    move to 2026-03-01 runs it once, then stops on 2026-02-01 with 503 `clock_stuck`, where
    it used to run it again for ever (and the request never answered)."""
    _, valkey = private_parts
    redis = make_redis(valkey.url.removesuffix("/0") + "/9")  # a database of this test's own
    await redis.flushdb()
    try:
        clock = ManualClock(redis, datetime(2026, 1, 1, tzinfo=UTC))
        await clock.init()
        scheduler = Scheduler(clock, timedelta(days=100))
        job = StuckJob(datetime(2026, 2, 1, tzinfo=UTC))
        scheduler.register(job)
        with pytest.raises(Unavailable) as raised:
            await scheduler.advance_to(datetime(2026, 3, 1, tzinfo=UTC))
        assert (raised.value.status, raised.value.error_code) == (503, "clock_stuck")
        assert job.runs == 1
        assert await clock.now() == datetime(2026, 2, 1, tzinfo=UTC)
    finally:
        await redis.aclose()
