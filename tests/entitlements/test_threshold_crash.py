"""Thresholds (R10.4) with the platform killed by SIGKILL between a live counter's update and
the publication of the threshold it reached: each `usage.threshold_reached` is published,
and exactly once, with one event id.

The platform process (`python -m services.embedded --no-demo`) runs against a broker and a
valkey that outlive it, as Kafka and Redis do in production. The catalog's `metered` plan
allows 1,000 API calls a period with thresholds at every tenth of it (100, 200, … 1,000
calls). Four rounds of 250 calls cross 2, 3, 2 and 3 thresholds (by hand: 250 → 0.1, 0.2;
500 → 0.3–0.5; 750 → 0.6, 0.7; 1,000 → 0.8–1.0); after each round the platform is killed,
alternately the moment the counter shows the round's calls (before the watcher has looked)
and the moment the first of the round's thresholds is marked (its event in the outbox,
perhaps not yet on the broker), then started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from shared import keys
from shared.stack import TansuBroker, ValkeyServer, free_port
from tests.conftest import cloud_event, produce, wait_until_ready
from tests.entitlements.ent_support import events_for
from tests.entitlements.test_metered_limits import METERED, write_catalog

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "threshold-crash-admin"
TENANT = "threshold-crash"
DAY = date(2027, 1, 10)
TENTHS = [f"0.{n}" for n in range(1, 10)] + ["1.0"]
ROUNDS = [(250, ["0.1", "0.2"]), (500, ["0.3", "0.4", "0.5"]), (750, ["0.6", "0.7"]),
          (1000, ["0.8", "0.9", "1"])]
PLAN = {**METERED, "usage": [
    {"meter": "api_calls", "included": "100", "model": "per_unit", "unit_price": "0.01",
     "limit": {"per_period": "1000", "mode": "hard"}, "thresholds": TENTHS}]}


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.embedded", "--no-demo"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(process: subprocess.Popen[bytes], ready: object, within: float = 30.0) -> None:
    """SIGKILL the platform as soon as `ready()` holds (polled every millisecond)."""
    deadline = time.monotonic() + within
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.mark.slow
def test_r10_4_each_threshold_is_published_once_across_sigkills(
        private_parts: tuple[TansuBroker, ValkeyServer], tmp_path: Path) -> None:
    broker, valkey = private_parts
    catalog, meters = write_catalog(tmp_path, PLAN)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap, "REDIS_URL": valkey.url,
           "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}", "PORT": str(port),
           "ADMIN_API_KEY": ADMIN, "DATA_DIR": str(tmp_path / "data"),
           "CATALOG": str(catalog), "METERS": str(meters), "CLOCK": "manual",
           "CLOCK_START": "2027-01-10T00:00:00Z", "KAFKA_SESSION_TIMEOUT_MS": "1000",
           "KAFKA_HEARTBEAT_INTERVAL_MS": "200"}
    store = redis.Redis.from_url(valkey.url, decode_responses=True)
    counter = keys.meter_key(TENANT, "api_calls", DAY)
    marks = keys.EntitlementsKeys().thresholds(TENANT, "api_calls", DAY)
    published_at_kill: list[bool] = []

    process = _spawn(env)
    try:
        wait_until_ready(base, process)
        created = httpx.post(f"{base}/v1/tenants", timeout=10,
                             headers={"Authorization": f"Bearer {ADMIN}"},
                             json={"id": TENANT, "plan": "metered", "cycle": "P1M",
                                   "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20",
                                   "admin_user": "u-1"})
        assert created.status_code == 201, created.text
        for n, (total, crossed) in enumerate(ROUNDS):
            event = cloud_event(TENANT, "api.calls", {"count": 250}, event_id=f"calls-{n}",
                                time="2027-01-10T09:00:00Z")
            asyncio.run(produce(broker.bootstrap, "usage-events",
                                [(TENANT.encode(), orjson.dumps(event))]))
            if n % 2 == 0:
                _kill_when(process, lambda t=total: int(store.get(counter) or 0) >= t)
            else:
                _kill_when(process, lambda c=crossed: store.hexists(marks, c[0]))
            published_at_kill.append(all(store.hexists(marks, c) for c in crossed))
            process = _spawn(env)
            wait_until_ready(base, process)
        events = asyncio.run(events_for(broker.bootstrap, TENANT, want=len(TENTHS),
                                        within=30.0))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    reached = [e for e in events if e["type"] == "usage.threshold_reached"]
    by_threshold = Counter(e["data"]["threshold"] for e in reached)
    assert by_threshold == Counter({c: 1 for _, crossed in ROUNDS for c in crossed})
    assert len({e["id"] for e in reached}) == len(TENTHS)
    # The kills right after the counter moved came before any of the round's marks.
    assert published_at_kill[0] is False or published_at_kill[2] is False
