"""The production pipeline on real servers: Apache Kafka, a ClickHouse server and Redis in
containers (testcontainers), the metering service in-process in front of them.

Runs wherever a Docker engine answers; elsewhere it is skipped, with the reason. The
testcontainers modules are imported inside the fixture, so collection never needs them.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import httpx
import pytest

from services.metering.part import MeteringPart
from shared.app import create_app
from shared.settings import CommonSettings
from shared.stack import Endpoints

ADMIN_KEY = "k"
CLOCK_START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # the image testcontainers' KafkaContainer drives
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:24.8"
REDIS_IMAGE = "redis:7-alpine"
CH_USER = CH_PASSWORD = CH_DATABASE = "meterbill"


def _docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    try:
        docker = importlib.import_module("docker")
        docker.from_env().ping()
    except Exception as exc:  # no SDK, no socket, no daemon: all mean "cannot run"
        return f"{type(exc).__name__}: {exc}"
    return None


def _testcontainers(name: str) -> ModuleType:
    """`testcontainers.community.<name>` (4.15+), else the older `testcontainers.<name>`."""
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ImportError:
        return importlib.import_module(f"testcontainers.{name}")


@pytest.fixture(scope="module")
def servers() -> Iterator[Endpoints]:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason}")
    try:
        kafka_mod = _testcontainers("kafka")
        clickhouse_mod = _testcontainers("clickhouse")
        redis_mod = _testcontainers("redis")
    except ImportError as exc:
        pytest.skip(f"testcontainers is not installed: {exc}")

    with ExitStack() as stack:
        kafka: Any = kafka_mod.KafkaContainer(KAFKA_IMAGE).with_kraft()
        kafka.start(timeout=180)
        stack.callback(kafka.stop)

        clickhouse: Any = clickhouse_mod.ClickHouseContainer(
            CLICKHOUSE_IMAGE, username=CH_USER, password=CH_PASSWORD, dbname=CH_DATABASE)
        clickhouse.start()
        stack.callback(clickhouse.stop)

        redis: Any = redis_mod.RedisContainer(REDIS_IMAGE)
        redis.start()
        stack.callback(redis.stop)

        ch_host = clickhouse.get_container_host_ip()
        ch_port = clickhouse.get_exposed_port(8123)
        redis_host = redis.get_container_host_ip()
        redis_port = redis.get_exposed_port(6379)
        yield Endpoints(
            kafka_bootstrap=str(kafka.get_bootstrap_server()),
            redis_url=f"redis://{redis_host}:{redis_port}/0",
            clickhouse_dsn=f"http://{CH_USER}:{CH_PASSWORD}@{ch_host}:{ch_port}/{CH_DATABASE}",
        )


@pytest.mark.docker
async def test_an_event_posted_over_http_is_counted_on_real_servers(servers: Endpoints) -> None:
    values: dict[str, Any] = {
        "kafka_bootstrap": servers.kafka_bootstrap, "clickhouse_dsn": servers.clickhouse_dsn,
        "redis_url": servers.redis_url, "admin_api_key": ADMIN_KEY, "clock": "manual",
        "clock_start": CLOCK_START,
        # Apache Kafka supports idempotent producers (the embedded tansu does not).
        "kafka_enable_idempotence": True,
    }
    settings = CommonSettings(**values)
    app = create_app(settings, [MeteringPart({**values, "batch_max_wait_ms": 20})],
                     title="meterbill-metering")
    tenant = f"tc-{uuid.uuid4().hex[:8]}"
    event = {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "crm-backend",
        "type": "email.sent", "subject": tenant, "time": "2026-11-22T09:15:00Z",
        "data": {"count": 3, "campaign_id": "c-1"},
    }
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    query = {"tenant": tenant, "meter": "emails_sent",
             "from": "2026-11-22T00:00:00Z", "to": "2026-11-23T00:00:00Z"}

    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        posted = await client.post("/v1/events", json=event, headers=auth)
        assert posted.status_code == 202, posted.text
        assert posted.json() == {"accepted": 1, "rejected": []}

        last: Any = None
        try:
            async with asyncio.timeout(90):
                while True:
                    response = await client.get("/v1/usage", params=query, headers=auth)
                    assert response.status_code == 200, response.text
                    last = response.json()
                    if [point["value"] for point in last["data"]] == [3]:
                        break
                    await asyncio.sleep(0.25)
        except TimeoutError:
            raise AssertionError(f"usage never showed the event (last: {last!r})") from None
        assert last["tenant"] == tenant
        assert last["meter"] == "emails_sent"
