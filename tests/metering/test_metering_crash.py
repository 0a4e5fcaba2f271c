"""A metering process killed with SIGKILL in the middle of a 50,000-event stream, then
restarted: ClickHouse rows, usage figures and live counters all equal the distinct events
produced, none lost and none doubled.

The process runs against a broker and a valkey that outlive it (as Kafka and Redis do in
production), with its own chDB directory; its rows are counted afterwards by a separate
process, since chDB allows one engine per process."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from shared.stack import TansuBroker, ValkeyServer, free_port
from tests.conftest import cloud_event, produce, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "crash-admin"
DISTINCT = 50_000
TENANTS = [f"crash-{n}" for n in range(8)]


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.embedded", "--no-demo"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _total(base: str) -> int:
    total = 0
    for tenant in TENANTS:
        response = httpx.get(f"{base}/v1/usage", headers={"Authorization": f"Bearer {ADMIN}"},
                             params={"tenant": tenant, "meter": "emails_sent",
                                     "from": "2026-01-01T00:00:00Z",
                                     "to": "2026-02-01T00:00:00Z"}, timeout=10)
        response.raise_for_status()
        total += sum(point["value"] for point in response.json()["data"])
    return total


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
        private_parts: tuple[TansuBroker, ValkeyServer], tmp_path: Path) -> None:
    broker, valkey = private_parts
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap, "REDIS_URL": valkey.url,
           "CLICKHOUSE_DSN": dsn, "PORT": str(port), "ADMIN_API_KEY": ADMIN,
           "DATA_DIR": str(tmp_path / "data"), "KAFKA_SESSION_TIMEOUT_MS": "1000",
           "KAFKA_HEARTBEAT_INTERVAL_MS": "200", "BATCH_MAX_RECORDS": "2000"}

    rng = random.Random(7)
    events = [cloud_event(TENANTS[n % len(TENANTS)], "email.sent", {"count": 1},
                          event_id=f"crash-{n}", time=f"2026-01-{1 + n % 28:02d}T12:00:00Z")
              for n in range(DISTINCT)]
    copies = rng.sample(events, DISTINCT // 20)  # about 5 % sent twice
    stream = [(e["subject"].encode(), orjson.dumps(e)) for e in events + copies]
    rng.shuffle(stream)

    first = _spawn(env)
    try:
        wait_until_ready(base, first)
        asyncio.run(produce(broker.bootstrap, "usage-events", stream[: len(stream) // 2]))
        while (counted_before_kill := _total(base)) == 0:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        # The rest of the stream arrives while metering is down.
        asyncio.run(produce(broker.bootstrap, "usage-events", stream[len(stream) // 2:]))
    finally:
        if first.poll() is None:
            first.kill()

    second = _spawn(env)
    try:
        wait_until_ready(base, second)
        deadline = time.monotonic() + 120
        while (counted := _total(base)) < DISTINCT and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything more would arrive now
        assert _total(base) == DISTINCT, f"counted {counted} of {DISTINCT}"
        # The kill really landed mid-stream.
        assert 0 < counted_before_kill < DISTINCT
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)

    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    live_total = sum(int(client.get(key) or 0) for key in client.scan_iter("live:crash-*:emails:*"))
    assert live_total == DISTINCT

    rows = subprocess.run(
        [sys.executable, "-c",
         "import clickhouse_connect, sys; c = clickhouse_connect.get_client(dsn=sys.argv[1]); "
         "print(c.query('SELECT count(), uniqExact(source, id) FROM usage_events')"
         ".result_rows[0])", dsn], capture_output=True, text=True, check=True, cwd=ROOT)
    assert rows.stdout.strip() == f"({DISTINCT}, {DISTINCT})"
