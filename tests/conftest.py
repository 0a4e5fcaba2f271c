"""Fixtures on the real embedded parts: one tansu broker, one valkey and one chDB engine for
the session (chDB allows one engine per process), and the platform app served in-process."""

from __future__ import annotations

import asyncio
import builtins
import io
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from redis.asyncio import Redis

from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from services.webhooks.part import WebhooksPart
from shared.app import Runtime, ServicePart, create_app
from shared.settings import CommonSettings
from shared.stack import EmbeddedStack, Endpoints, TansuBroker, ValkeyServer, free_port

# Examples are drawn afresh each run; none is kept on disk (unit tests may not write files).
hypothesis_settings.register_profile("meterbill", database=None)
hypothesis_settings.load_profile("meterbill")

ADMIN_KEY = "test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OWNER = {"user_id": "u-owner", "role": "owner"}
CLOCK_START = datetime(2026, 1, 1, tzinfo=UTC)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m unit` reads only the files that declare unit tests: importing the others (browser,
    contract and real-parts tests) would take longer than the unit tests take to run."""
    if config.getoption("markexpr") != "unit" or not collection_path.name.startswith("test_"):
        return None
    return "mark.unit" not in collection_path.read_text(encoding="utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A test ended by pytest-timeout: where each asyncio task was waiting, added to its
    report. The timeout's own traceback shows only the event loop's poll."""
    outcome: Any = yield
    if call.excinfo is None or "Timeout" not in str(call.excinfo.value):
        return
    try:
        tasks = asyncio.all_tasks(asyncio.get_event_loop())
    except RuntimeError:  # no loop: a synchronous test, whose traceback says it all
        return
    text = "\n".join(f"{task.get_name()}:\n" + "\n".join(_awaiting(task)) for task in tasks)
    outcome.get_result().sections.append(("asyncio tasks at the timeout", text))


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines a task is suspended in, outermost first."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in "
                         f"{frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


@pytest.fixture(autouse=True)
def _no_io_in_unit_tests(request: pytest.FixtureRequest,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked `unit` checks pure rules: any network or file access fails it."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test does no network or file I/O")

    real_open = builtins.open

    def open_code_only(file: Any, *args: Any, **kwargs: Any) -> Any:
        # Python's own imports (a module first used by the test) still read code.
        if str(file).endswith((".py", ".pyc")):
            return real_open(file, *args, **kwargs)
        refuse()

    for owner, name in ((socket.socket, "connect"), (socket, "create_connection"),
                        (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(builtins, "open", open_code_only)
    monkeypatch.setattr(io, "open", open_code_only)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="session")
def stack(data_dir: Path) -> Iterator[EmbeddedStack]:
    embedded = EmbeddedStack(data_dir)
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="module")
def private_parts(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[TansuBroker, ValkeyServer]]:
    """A broker and a valkey of the module's own, for tests that stop them or move time."""
    root = tmp_path_factory.mktemp("private")
    broker = TansuBroker(free_port(), root / "tansu.log")
    valkey = ValkeyServer(free_port(), root / "valkey", root / "valkey.log")
    broker.start()
    valkey.start()
    yield broker, valkey
    broker.stop()
    valkey.stop()


@pytest.fixture(scope="session")
def endpoints(stack: EmbeddedStack, data_dir: Path) -> Endpoints:
    return Endpoints(kafka_bootstrap=stack.broker.bootstrap, redis_url=stack.valkey.url,
                     clickhouse_dsn=f"chdb://{data_dir.resolve() / 'clickhouse'}")


def redis_db_url(endpoints: Endpoints, db: int) -> str:
    """The session's valkey, another database: stores of a private app's own."""
    base, _, last = endpoints.redis_url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{endpoints.redis_url.rstrip('/')}/{db}"


def settings_for(endpoints: Endpoints, **extra: Any) -> dict[str, Any]:
    """Settings values for the app under test: fast group joins, the manual clock."""
    values: dict[str, Any] = {
        "kafka_bootstrap": endpoints.kafka_bootstrap, "redis_url": endpoints.redis_url,
        "clickhouse_dsn": endpoints.clickhouse_dsn, "admin_api_key": ADMIN_KEY,
        "clock": "manual", "clock_start": CLOCK_START, "kafka_session_timeout_ms": 1000,
        "kafka_heartbeat_interval_ms": 200, "batch_max_wait_ms": 20, "retry_initial_s": 0.05,
        "retry_max_s": 0.5,
    }
    values.update(extra)
    return values


class RunningApp:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, parts: list[ServicePart]):
        self.app = app
        self.client = client
        self.parts = parts

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def as_admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


async def start_app(values: dict[str, Any],
                    parts: list[ServicePart] | None = None) -> tuple[RunningApp, Any]:
    common = {k: v for k, v in values.items() if k in CommonSettings.model_fields}
    settings = CommonSettings(**common)
    if parts is None:
        parts = [MeteringPart(values), EntitlementsPart(common), InvoicingPart(common),
                 WebhooksPart(values)]
    app = create_app(settings, parts)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return RunningApp(app, client, parts), lifespan


@asynccontextmanager
async def serving(values: dict[str, Any], parts: list[ServicePart] | None = None
                  ) -> AsyncIterator[RunningApp]:
    """The app of these parts (`start_app`'s default: all four), stopped on the way out."""
    running, lifespan = await start_app(values, parts)
    try:
        yield running
    finally:
        await running.client.aclose()
        await lifespan.__aexit__(None, None, None)


async def flush_database(redis_url: str) -> None:
    """Empty the Redis database of `redis_url`, one a test keeps to itself."""
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()


@pytest.fixture(scope="session")
async def platform(endpoints: Endpoints) -> AsyncIterator[RunningApp]:
    async with serving(settings_for(endpoints)) as running:
        yield running


@pytest.fixture
def unique() -> str:
    """A fresh suffix, so tests sharing the session's stores never see each other's data."""
    return os.urandom(4).hex()


async def settles(fetch: Callable[[], Awaitable[Any]], expected: Any,
                  within: float = 10.0) -> None:
    """Poll until `fetch()` returns `expected`."""
    async def equal() -> bool:
        return bool(await fetch() == expected)

    await eventually(equal, within)


async def eventually(check: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns a truthy value; fail after `within` seconds."""
    result: Any = None
    try:
        async with asyncio.timeout(within):
            while not (result := await check()):
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"condition not met within {within} s (last: {result!r})") from None
    return result


def cloud_event(tenant: str, event_type: str, data: dict[str, Any], *, event_id: str,
                time: str = "2026-01-15T10:00:00Z", source: str = "tests") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": source, "type": event_type,
            "subject": tenant, "time": time, "data": data}


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
                  ) -> None:
    """Write raw (key, value) messages straight to a topic, as a product backend would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def wait_until_ready(base: str, process: subprocess.Popen[bytes], within: float = 60) -> None:
    """Poll a platform process's /readyz; fail if it exits or is not ready in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"exited with {process.returncode}:\n{output[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} was not ready within {within} s")


async def set_clock(client: httpx.AsyncClient, instant: str) -> None:
    response = await client.put("/v1/clock", json={"now": instant}, headers=ADMIN)
    assert response.status_code == 200, response.text


async def create_tenant(client: httpx.AsyncClient, tenant: str, **fields: Any) -> dict[str, Any]:
    """A tenant through the API, essentials monthly in Paris unless `fields` say otherwise."""
    body: dict[str, Any] = {"id": tenant, "plan": "essentials", "cycle": "P1M",
                            "time_zone": "Europe/Paris", "currency": "EUR",
                            "vat_rate": "0.20", "admin_user": "u-admin"}
    body.update(fields)
    response = await client.post("/v1/tenants", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
