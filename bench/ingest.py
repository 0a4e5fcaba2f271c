"""Ingest benchmark: metering's end-to-end throughput against a ceiling measured in
the same run on the same machine.

    python bench/ingest.py [--events 200000] [--runs 3]

Each run, on a fresh embedded broker and valkey:
1. **metering**: N events (about 5 % sent twice) are produced to `usage-events`, then the
   metering service starts as its own process (uvicorn, production entry point). Throughput
   is events consumed, validated, deduplicated, written to chDB and committed per second,
   timed from its first commit to the commit of the last offset (the first batch, which
   includes the group join, is left out of both the count and the time).
2. **latency**: with metering caught up, events are sent at a steady rate below capacity;
   event-to-queryable latency is `stored_at - ingested_at` of each stored row (both taken on
   this machine's clock: the broker timestamp at produce, and the row's insert time).
3. **ceiling**: the same events on another topic, read by a bare process doing aiokafka
   consume + orjson decode + the same columnar insert into the same table + commit; no
   validation, no dedupe, no Redis. Timed the same way.
4. **HTTP ingest**: 32 clients post batches of 100 events to a metering process answering
   202 once the broker acked them (`INGEST_ACK=broker`), then to one answering once they are
   stored and committed (`stored`); events/s and the p99 of a request, and their ratio.
Peak RSS is the metering process's VmHWM. Every figure is printed as a JSON line; the last
lines give the medians over the runs and the ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.stack import TansuBroker, ValkeyServer, free_port  # noqa: E402

PARTITIONS = 4
GROUP = "metering"


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    print(orjson.dumps({"metric": metric, "value": round(value, 3), "unit": unit, **extra})
          .decode(), flush=True)


def make_events(count: int, seed: int, tag: str) -> list[tuple[bytes, bytes]]:
    """`count` distinct events over 1,000 tenants and all types, plus ~5 % copies."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        tenant = f"t{n % 1000}"
        kind = rng.random()
        if kind < 0.7:
            event_type, data = "email.sent", {"count": rng.randint(1, 50), "campaign_id": "c1"}
        elif kind < 0.85:
            event_type = "user.access.granted" if rng.random() < 0.7 else "user.access.revoked"
            data = {"user_id": f"u{rng.randint(1, 40)}", "module": rng.choice(["crm", "sales"])}
        elif kind < 0.95:
            event_type = "company.created"
            data = {"company_id": f"c{n}"}
        else:
            event_type = "support.session.completed"
            data = {"minutes": rng.randint(1, 90), "level": rng.randint(1, 3)}
        body = {"specversion": "1.0", "id": f"{tag}-{n}", "source": "bench", "type": event_type,
                "subject": tenant, "time": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
                "data": data}
        events.append((tenant.encode(), orjson.dumps(body)))
    events += rng.sample(events, count // 20)
    rng.shuffle(events)
    return events


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_progress(bootstrap: str, topic: str, group: str, total: int,
                             timeout_s: float) -> tuple[float, int, float]:
    """Watch a group's commits until they cover `total` messages: (first commit time,
    messages it covered, time of the last). The total is counted, not read from the broker:
    tansu reports a partition's end as the first record of its last batch + 1."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = 0
            for tp in tps:
                done += await probe.committed(tp) or 0
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= total:
                assert first is not None
                return first[0], first[1], now
            await asyncio.sleep(0.005)
        raise TimeoutError(f"{group} did not finish {topic} in {timeout_s} s")
    finally:
        await probe.stop()


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn_metering(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.metering.main:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spawn_ceiling(bootstrap: str, dsn: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--ceiling-worker", bootstrap, dsn],
                            cwd=ROOT)


async def latency_phase(bootstrap: str, rate: int, seconds: float, tag: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    sent = 0
    try:
        step = 0.02
        per_step = max(1, int(rate * step))
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            futures = []
            for _ in range(per_step):
                body = {"specversion": "1.0", "id": f"{tag}-{sent}", "source": "bench-latency",
                        "type": "email.sent", "subject": "latency", "time": "2026-11-20T10:00:00Z",
                        "data": {"count": 1}}
                futures.append(await producer.send("usage-events", orjson.dumps(body),
                                                   key=b"latency"))
                sent += 1
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, started + (sent / per_step) * step - time.perf_counter()))
    finally:
        await producer.stop()
    return sent


def query_chdb(dsn: str, sql: str) -> tuple[Any, ...]:
    """Rows from a chDB directory no other process holds any more (one engine per process)."""
    out = subprocess.run(
        [sys.executable, "-c", "import clickhouse_connect, sys, orjson; "
         "c = clickhouse_connect.get_client(dsn=sys.argv[1]); "
         "print(orjson.dumps([list(r) for r in c.query(sys.argv[2]).result_rows]).decode())",
         dsn, sql], capture_output=True, text=True, check=True, cwd=ROOT)
    rows: list[list[Any]] = orjson.loads(out.stdout)
    return tuple(rows[0])


async def run_once(run: int, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        broker = TansuBroker(free_port(), root / "tansu.log")
        valkey = ValkeyServer(free_port(), root / "valkey", root / "valkey.log")
        broker.start()
        valkey.start()
        try:
            return await _measure(run, count, root, broker, valkey)
        finally:
            broker.stop()
            valkey.stop()


async def _measure(run: int, count: int, root: Path, broker: TansuBroker,
                   valkey: ValkeyServer) -> dict[str, float]:
    bootstrap = broker.bootstrap
    await create_topics(bootstrap, "usage-events", "usage-events.dlq", "subscription-events",
                        "ceiling")
    events = make_events(count, seed=run, tag=f"r{run}")
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "REDIS_URL": valkey.url,
           "CLICKHOUSE_DSN": f"chdb://{root / 'metering-ch'}", "ADMIN_API_KEY": "bench",
           "LOG_LEVEL": "WARNING", "KAFKA_SESSION_TIMEOUT_MS": "6000",
           "KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
    metering = await _metering_phases(run, events, count, env)
    ceiling_rate = await _ceiling_phase(bootstrap, events, root)
    # 4. HTTP ingest, acknowledged by the broker, then only once stored
    http = {ack: await http_phase(env, ack, run) for ack in ("broker", "stored")}
    throughput = metering["throughput"]
    results = {**metering, "ceiling": ceiling_rate, "ratio": throughput / ceiling_rate,
               **{f"http_{ack}_{key}": value for ack, figures in http.items()
                  for key, value in figures.items()},
               "http_stored_to_broker": http["stored"]["rate"] / http["broker"]["rate"]}
    _emit_run(run, len(events), results, http)
    return results


async def _metering_phases(run: int, events: list[tuple[bytes, bytes]], distinct: int,
                           env: dict[str, str]) -> dict[str, float]:
    """1. metering's throughput from a backlog, 2. its latency at a steady rate well below
    capacity; each of the `distinct` events (`events` repeats some) stored exactly once."""
    bootstrap, dsn = env["KAFKA_BOOTSTRAP"], env["CLICKHOUSE_DSN"]
    await produce(bootstrap, "usage-events", events)
    metering = spawn_metering(env, free_port())
    try:
        total = len(events)
        first_t, first_n, last_t = await committed_progress(bootstrap, "usage-events", GROUP,
                                                            total, timeout_s=600)
        throughput = (total - first_n) / (last_t - first_t)
        latency_events = await latency_phase(bootstrap, rate=10_000, seconds=5,
                                             tag=f"lat{run}")
        await committed_progress(bootstrap, "usage-events", GROUP, total + latency_events,
                                 timeout_s=120)
        peak_rss = rss_peak_mb(metering.pid)
    finally:
        metering.send_signal(signal.SIGTERM)
        metering.wait(60)

    stored, unique = query_chdb(dsn, "SELECT count(), uniqExact(source, id) FROM usage_events "
                                     "WHERE source = 'bench'")
    if not stored == unique == distinct:
        raise AssertionError(f"stored {stored} rows, {unique} distinct, expected {distinct}")
    p50, p99, n_latency = query_chdb(
        dsn, "SELECT quantileExact(0.5)(d), quantileExact(0.99)(d), count() FROM ("
             "SELECT dateDiff('millisecond', ingested_at, stored_at) AS d FROM usage_events "
             "WHERE source = 'bench-latency')")
    if n_latency != latency_events:
        raise AssertionError(f"latency phase stored {n_latency} of {latency_events}")
    return {"throughput": throughput, "p50_ms": float(p50), "p99_ms": float(p99),
            "latency_events": float(n_latency), "peak_rss_mb": peak_rss}


async def _ceiling_phase(bootstrap: str, events: list[tuple[bytes, bytes]],
                         root: Path) -> float:
    """3. the ceiling, on its own topic."""
    await produce(bootstrap, "ceiling", events)
    ceiling = spawn_ceiling(bootstrap, f"chdb://{root / 'ceiling-ch'}")
    try:
        first_t, first_n, last_t = await committed_progress(
            bootstrap, "ceiling", "ceiling", len(events), timeout_s=600)
    finally:
        ceiling.send_signal(signal.SIGTERM)
        ceiling.wait(60)
    return (len(events) - first_n) / (last_t - first_t)


def _emit_run(run: int, total: int, results: dict[str, float],
              http: dict[str, dict[str, float]]) -> None:
    n_latency = int(results["latency_events"])
    emit("ingest_throughput", results["throughput"], "events/s", run=run, events=total)
    emit("ingest_ceiling", results["ceiling"], "events/s", run=run)
    emit("ingest_ratio_to_ceiling", results["ratio"], "ratio", run=run)
    emit("event_to_queryable_p50", results["p50_ms"], "ms", run=run, events=n_latency)
    emit("event_to_queryable_p99", results["p99_ms"], "ms", run=run, events=n_latency)
    emit("metering_peak_rss", results["peak_rss_mb"], "MiB", run=run)
    for ack, figures in http.items():
        emit(f"http_ingest_{ack}", figures["rate"], "events/s", run=run,
             clients=HTTP_CLIENTS, batch=HTTP_BATCH)
        emit(f"http_ingest_{ack}_p99", figures["p99_ms"], "ms", run=run)
    emit("http_ingest_stored_to_broker", results["http_stored_to_broker"], "ratio", run=run)


HTTP_CLIENTS = 32
HTTP_BATCH = 100
HTTP_EVENTS = 64_000


async def http_phase(env: dict[str, str], ack: str, run: int) -> dict[str, float]:
    """`POST /v1/events` by 32 clients, batches of 100, against metering answering 202 once
    the broker acked (`broker`) or once the events are stored and committed (`stored`)."""
    port = free_port()
    metering = spawn_metering({**env, "INGEST_ACK": ack}, port)
    base = f"http://127.0.0.1:{port}"
    events = [orjson.loads(value) for _, value in make_events(HTTP_EVENTS, seed=100 + run,
                                                              tag=f"http-{ack}-{run}")]
    batches = [events[i:i + HTTP_BATCH] for i in range(0, len(events), HTTP_BATCH)]
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60,
                                     headers={"Authorization": "Bearer bench"}) as client:
            await wait_ready(client)
            queue = list(reversed(batches))
            started = time.perf_counter()

            async def sender() -> None:
                while queue:
                    batch = queue.pop()
                    sent = time.perf_counter()
                    response = await client.post("/v1/events", content=orjson.dumps(batch),
                                                 headers={"Content-Type": "application/json"})
                    if response.status_code != 202:
                        raise AssertionError(f"{ack}: {response.status_code} {response.text}")
                    latencies.append((time.perf_counter() - sent) * 1000)

            await asyncio.gather(*(sender() for _ in range(HTTP_CLIENTS)))
            elapsed = time.perf_counter() - started
    finally:
        metering.send_signal(signal.SIGTERM)
        metering.wait(60)
    latencies.sort()
    return {"rate": len(events) / elapsed,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1]}


async def wait_ready(client: httpx.AsyncClient, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("metering was not ready")


def ceiling_worker(bootstrap: str, dsn: str) -> None:
    """The ceiling: consume, decode, a columnar insert of the same rows into the same table
    (`usage_events`, by the same migrations), commit; no validation, no dedupe, no Redis."""
    from services.metering.store import EventStore, StoredEvent
    from shared.clickhouse.client import connect
    from shared.clickhouse.migrate import migrate
    from shared.events import UsageEvent

    stopping = asyncio.Event()

    async def loop() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        clickhouse = connect(dsn)
        await migrate(clickhouse)
        store = EventStore(clickhouse)
        consumer = AIOKafkaConsumer("ceiling", bootstrap_servers=bootstrap, group_id="ceiling",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_poll_records=5000, fetch_max_bytes=64 << 20,
                                    max_partition_fetch_bytes=16 << 20)
        await consumer.start()
        try:
            while not stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                if not batch:
                    continue
                rows = []
                for records in batch.values():
                    for record in records:
                        body = orjson.loads(record.value)
                        event = UsageEvent(
                            id=body["id"], source=body["source"], type=body["type"],
                            tenant=body["subject"], time=datetime.fromisoformat(body["time"]),
                            data=body["data"], extensions={})
                        rows.append(StoredEvent(event, record.topic, record.partition,
                                                record.offset, record.timestamp))
                await store.insert(rows, token=f"{rows[0].partition}-{rows[0].offset}",
                                   cluster="ceiling")
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        finally:
            await consumer.stop()

    asyncio.run(loop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ceiling-worker", nargs=2, metavar=("BOOTSTRAP", "DSN"))
    args = parser.parse_args()
    if args.ceiling_worker:
        ceiling_worker(*args.ceiling_worker)
        return
    runs = [asyncio.run(run_once(run, args.events)) for run in range(args.runs)]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    emit("ingest_throughput_median", median("throughput"), "events/s", runs=args.runs,
         target=50_000)
    emit("ingest_ceiling_median", median("ceiling"), "events/s", runs=args.runs)
    emit("ingest_ratio_to_ceiling_median", median("ratio"), "ratio", runs=args.runs,
         target=0.6)
    emit("event_to_queryable_p50_median", median("p50_ms"), "ms", runs=args.runs)
    emit("event_to_queryable_p99_median", median("p99_ms"), "ms", runs=args.runs, target=2000)
    emit("metering_peak_rss_median", median("peak_rss_mb"), "MiB", runs=args.runs)
    for ack in ("broker", "stored"):
        emit(f"http_ingest_{ack}_median", median(f"http_{ack}_rate"), "events/s",
             runs=args.runs)
        emit(f"http_ingest_{ack}_p99_median", median(f"http_{ack}_p99_ms"), "ms",
             runs=args.runs)
    emit("http_ingest_stored_to_broker_median", median("http_stored_to_broker"), "ratio",
         runs=args.runs, target=0.6)


if __name__ == "__main__":
    main()
