"""Webhook delivery benchmark. Prints JSON lines `{"metric": ..., "value": ..., "unit": ...}`.

Starts the embedded stack (tansu, valkey, chDB) and, in this process, the platform's
webhooks part (wall clock, loopback endpoints allowed); in a child process, a receiver (a
bare uvicorn ASGI app) that answers 204 and records each delivery's latency. Then:

- throughput: `--events` events on `subscription-events` across `--tenants` tenants, for
  one endpoint listing their type, written while the platform is stopped (so the producer's
  work is not counted against it), then the platform started: deliveries/s from the first
  delivery's arrival to the last's;
- latency: `--probes` events sent one at a time, `--gap-ms` apart; from the moment each is
  handed to the producer to its arrival at the receiver (p50, p99);
- the ceiling, in the same run: a bare loop signing each event with `standardwebhooks`
  and POSTing it to the same receiver with httpx, at the endpoint's concurrency (the
  setting `WEBHOOKS_ENDPOINT_CONCURRENCY`), no broker, no store; its deliveries/s (first
  arrival to last, as above) and its per-POST latency; and the ratio.
Repeated `--runs` times; the medians are printed last.

    .venv/bin/python bench/webhooks.py [--events 3000] [--tenants 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_KEY = "bench-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TOPIC = "subscription-events"
UNITS = {"deliveries_per_s": "deliveries/s", "ceiling_deliveries_per_s": "deliveries/s",
         "throughput_ratio": "ratio", "latency_p50_ms": "ms", "latency_p99_ms": "ms",
         "ceiling_latency_p50_ms": "ms", "ceiling_latency_p99_ms": "ms"}


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 3), "unit": unit, **extra}),
          flush=True)


# --- the receiver (a child process) ----------------------------------------------------------


def serve_receiver(port: int) -> None:
    import uvicorn

    from services.demo_webhooks import request_body

    seen: list[tuple[float, float]] = []  # (arrival, latency since the event was sent)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        status, answer = 204, b""
        if scope["path"] == "/hook":
            now = time.time()
            seen.append((now, now - orjson.loads(body)["data"]["sent"]))
        elif scope["path"] == "/stats":
            status, answer = 200, orjson.dumps(seen)
            seen.clear()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off")


# One client for every poll of the receiver: a client per poll costs a TLS context each
# (milliseconds of this process's CPU, which the platform under test shares).
POLL = httpx.AsyncClient(verify=False)


async def stats(base: str) -> list[tuple[float, float]]:
    found: list[tuple[float, float]] = orjson.loads((await POLL.get(f"{base}/stats")).content)
    return found


# --- the measurements ------------------------------------------------------------------------


def event(n: int, tenants: int, run: int) -> tuple[bytes, bytes]:
    tenant = f"bench-{n % tenants}"
    return tenant.encode(), orjson.dumps({
        "specversion": "1.0", "id": f"run{run}-{n}", "source": "bench", "type": "bench.tick",
        "subject": tenant, "time": "2026-11-29T00:00:00Z",
        "data": {"tenant": tenant, "sent": time.time()}})


async def wait_for(base: str, count: int, within: float = 300) -> list[tuple[float, float]]:
    """(arrival, latency) of the next `count` deliveries."""
    seen: list[tuple[float, float]] = []
    deadline = time.monotonic() + within
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {count} deliveries within {within:.0f} s")
        seen += await stats(base)
        await asyncio.sleep(0.05)
    return seen


def arrival_rate(seen: list[tuple[float, float]]) -> float:
    arrivals = sorted(arrival for arrival, _ in seen)
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


async def produce(producer: Any, first: int, count: int, args: argparse.Namespace,
                  run: int) -> None:
    futures = [await producer.send(TOPIC, value, key=key)
               for key, value in (event(first + n, args.tenants, run) for n in range(count))]
    await asyncio.gather(*futures)


async def platform_run(values: dict[str, Any], producer: Any, base: str,
                       args: argparse.Namespace, run: int) -> dict[str, float]:
    from services.webhooks.part import WebhooksPart
    from shared.app import create_app
    from shared.settings import CommonSettings

    await produce(producer, 0, args.events, args, run)  # while the platform is stopped
    app = create_app(CommonSettings(**values), [WebhooksPart(values)])
    async with app.router.lifespan_context(app):
        rate = arrival_rate(await wait_for(base, args.events))
        for n in range(args.probes):
            key, value = event(args.events + n, args.tenants, run)
            await (await producer.send(TOPIC, value, key=key))
            await asyncio.sleep(args.gap_ms / 1000)
        latencies = [latency for _, latency in await wait_for(base, args.probes)]
    return {"deliveries_per_s": rate, **percentiles(latencies, "latency")}


async def ceiling_run(base: str, secret: str, args: argparse.Namespace, run: int
                      ) -> dict[str, float]:
    from services.webhooks.sender import signed_headers

    bodies = [event(n, args.tenants, run)[1] for n in range(args.events)]
    durations: list[float] = []
    async with httpx.AsyncClient() as client:
        async def worker(share: list[bytes]) -> None:
            for n, body in enumerate(share):
                started = time.perf_counter()
                headers = signed_headers(secret, f"msg_ceiling_{run}_{n}", body)
                answer = await client.post(f"{base}/hook", content=body, headers=headers)
                answer.raise_for_status()
                durations.append(time.perf_counter() - started)

        lanes = args.concurrency
        await asyncio.gather(*(worker(bodies[i::lanes]) for i in range(lanes)))
    rate = arrival_rate(await wait_for(base, args.events))
    return {"ceiling_deliveries_per_s": rate, **percentiles(durations, "ceiling_latency")}


def percentiles(seconds: list[float], name: str) -> dict[str, float]:
    ordered = sorted(seconds)
    return {f"{name}_p50_ms": 1000 * ordered[len(ordered) // 2],
            f"{name}_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


async def measure(endpoints: Any, receiver_base: str, args: argparse.Namespace
                  ) -> list[dict[str, float]]:
    from aiokafka import AIOKafkaProducer

    from services.webhooks.part import WebhooksPart
    from shared.app import create_app
    from shared.settings import CommonSettings

    values = {"kafka_bootstrap": endpoints.kafka_bootstrap, "redis_url": endpoints.redis_url,
              "clickhouse_dsn": endpoints.clickhouse_dsn, "admin_api_key": ADMIN_KEY,
              "clock": "wall", "access_log": False, "log_level": "WARNING",
              "webhooks_allow_http_loopback": True,
              "webhooks_endpoint_concurrency": args.concurrency}
    app = create_app(CommonSettings(**values), [WebhooksPart({**values,
                                                              "webhooks_worker": False})])
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
        created = (await client.post("/v1/webhooks", headers=ADMIN, json={
            "url": f"{receiver_base}/hook", "events": ["bench.tick"]})).json()
        await client.aclose()
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all",
                                linger_ms=1)
    await producer.start()
    try:
        runs = []
        for run in range(args.runs):
            result = await platform_run(values, producer, receiver_base, args, run)
            result.update(await ceiling_run(receiver_base, created["secret"], args, run))
            result["throughput_ratio"] = \
                result["deliveries_per_s"] / result["ceiling_deliveries_per_s"]
            for metric, value in result.items():
                emit(metric, value, UNITS[metric], run=run + 1)
            runs.append(result)
        return runs
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve-receiver", type=int, default=0)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return

    from shared.stack import EmbeddedStack, free_port

    stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="bench-webhooks-")))
    endpoints = stack.start()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--serve-receiver", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{base}/stats")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        # uvloop, as the platform runs (services/embedded.py, uvicorn): both sides alike.
        runs = uvloop.run(measure(endpoints, base, args))
        for metric in UNITS:
            emit(metric, statistics.median(r[metric] for r in runs), UNITS[metric],
                 run="median", cpus=os.cpu_count())
    finally:
        receiver.terminate()
        receiver.wait(10)
        stack.stop()


if __name__ == "__main__":
    main()
