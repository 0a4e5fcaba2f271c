"""Entitlement check benchmark. Prints JSON lines
`{"metric": ..., "value": ..., "unit": ...}`.

Starts the embedded stack (tansu, valkey, chDB), then, in child processes, one uvicorn worker
of the app (the entitlements part, wall clock) and, served the same way, the ceiling: a bare
Starlette route doing one Redis GET. A bare keep-alive HTTP/1.1 client (httpx would cost more
CPU than the server it measures) at concurrency 32 drives each for
`--seconds`: single checks (`module=crm&user=…`, the R6.3 path), metered-limit checks
(`feature=api_calls&quantity=…` on a `professional` tenant created now, R10.4: two MGETs of
the period's days so far, one day here), the ceiling, and batches of `--batch` decisions.
The app runs with `ACCESS_LOG=false`, like the ceiling, which logs nothing per request.
Repeated `--runs` times; the medians are printed last.

    .venv/bin/python bench/checks.py [--seconds 5] [--runs 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_KEY = "bench-admin-key"
TENANT = "bench"
METERED = "bench-metered"  # on professional, whose usage charge prices api_calls (R10.4)
USERS = 200


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 3), "unit": unit, **extra}),
          flush=True)


# --- the two servers (run in child processes) ------------------------------------------------


def serve_app(port: int, env: dict[str, str]) -> None:
    import uvicorn

    from services.entitlements.part import EntitlementsPart
    from shared.app import create_app
    from shared.observability import configure_logging
    from shared.settings import CommonSettings

    settings = CommonSettings(**env)  # type: ignore[arg-type]
    # Logging as in production (standalone_app), to /dev/null to keep the bench's own output
    # readable; the per-request access log is off (ACCESS_LOG=false, see `main`).
    configure_logging(settings.log_level)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    app = create_app(settings, [EntitlementsPart(dict(env))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                workers=1)


def serve_ceiling(port: int, redis_url: str) -> None:
    import uvicorn
    from redis.asyncio import Redis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from shared.redis import ReadMany

    redis = Redis.from_url(redis_url, decode_responses=True)
    lean = ReadMany(redis)

    async def one_get(_: Request) -> Response:
        value = await redis.get("bench:ceiling")
        return Response(json.dumps({"value": value}), media_type="application/json")

    async def one_lean_get(_: Request) -> Response:
        # The same GET through the lean script client the check fast path uses: a stricter
        # ceiling, so the ratio does not credit the client change alone.
        (value,) = await lean([("GET", "bench:ceiling")])
        return Response(json.dumps({"value": value}), media_type="application/json")

    app = Starlette(routes=[Route("/ceiling", one_get), Route("/ceiling-lean", one_lean_get)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                workers=1)


# --- the client --------------------------------------------------------------------------------


class Connection:
    """A bare HTTP/1.1 keep-alive connection: httpx costs more CPU per request than the
    server under test, which would make the client the thing measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def raw_request(method: str, path: str, headers: dict[str, str], body: Any) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in
                                                           headers.items())]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def drive(base: str, paths: list[str], headers: dict[str, str], seconds: float,
                concurrency: int, body: Any = None) -> tuple[int, list[float]]:
    method = "GET" if body is None else "POST"
    requests = [raw_request(method, path, headers, body) for path in paths]
    connections = [await Connection.open(base) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    try:
        # Warm up connections and caches.
        for n, connection in enumerate(connections):
            await connection.request(requests[n % len(requests)])
        deadline = time.perf_counter() + seconds

        async def worker(connection: Connection, offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                raw = requests[i % len(requests)]
                i += concurrency
                started = time.perf_counter()
                status = await connection.request(raw)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(c, n) for n, c in enumerate(connections)))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return int(len(latencies) / elapsed), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(base: str) -> str:

    async with httpx.AsyncClient(base_url=base, timeout=30.0,
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        response = await client.post("/v1/tenants", json={
            "id": TENANT, "plan": "essentials", "cycle": "P1M", "time_zone": "Europe/Paris",
            "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-0"})
        if response.status_code not in (201, 409):
            raise RuntimeError(response.text)
        metered = await client.post("/v1/tenants", json={
            "id": METERED, "plan": "professional", "cycle": "P1M", "time_zone": "UTC",
            "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-0"})
        if metered.status_code not in (201, 409):
            raise RuntimeError(metered.text)
        for _ in range(5):
            await client.post(f"/v1/tenants/{TENANT}/purchases", json={
                "actor": {"user_id": "u-0", "role": "owner"}, "item": "seats-crm",
                "quantity": 20, "confirm": True})
        minted = await client.post("/v1/api-keys", json={"role": "ingest", "tenant": None})
        key: str = minted.json()["key"]
    return key


async def seed_users(redis_url: str) -> None:
    from redis.asyncio import Redis

    from shared import keys

    redis = Redis.from_url(redis_url)
    await redis.zadd(keys.users_key(TENANT, "crm"),
                     {f"u-{i}": 1_767_225_600_000_000 + i for i in range(USERS)})
    await redis.set("bench:ceiling", "x")
    await redis.aclose()


def start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, *argv], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{argv} exited with {process.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"{argv} did not start")


async def one_run(app_base: str, ceiling_base: str, key: str, args: argparse.Namespace
                  ) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"}
    ceiling_rps, _ = await drive(ceiling_base, ["/ceiling"], {}, args.seconds,
                                 args.concurrency)
    lean_rps, _ = await drive(ceiling_base, ["/ceiling-lean"], {}, args.seconds,
                              args.concurrency)
    paths = [f"/v1/tenants/{TENANT}/check?module=crm&user=u-{i}" for i in range(USERS + 20)]
    rps, latencies = await drive(app_base, paths, headers, args.seconds, args.concurrency)
    checks = [{"tenant": TENANT, "module": "crm", "user": f"u-{i % (USERS + 20)}"}
              for i in range(args.batch)]
    metered = [f"/v1/tenants/{METERED}/check?feature=api_calls&quantity={q}"
               for q in range(1, 101)]
    metered_rps, metered_latencies = await drive(app_base, metered, headers, args.seconds,
                                                 args.concurrency)
    batch_rps, batch_latencies = await drive(app_base, ["/v1/check"], headers, args.seconds,
                                             args.batch_concurrency, {"checks": checks})
    return {"ceiling_rps": ceiling_rps, "ceiling_lean_rps": lean_rps,
            "ratio_to_lean_ceiling": rps / lean_rps, "check_rps": rps,
            "check_p50_ms": percentile(latencies, 0.50) * 1000,
            "check_p99_ms": percentile(latencies, 0.99) * 1000,
            "ratio": rps / ceiling_rps,
            "metered_check_rps": metered_rps,
            "metered_check_p99_ms": percentile(metered_latencies, 0.99) * 1000,
            "metered_ratio": metered_rps / ceiling_rps,
            "batch_decisions_per_s": batch_rps * args.batch,
            "batch_p99_ms": percentile(batch_latencies, 0.99) * 1000}


UNITS = {"ceiling_rps": "req/s", "ceiling_lean_rps": "req/s", "ratio_to_lean_ceiling":
         "fraction", "check_rps": "req/s", "check_p50_ms": "ms",
         "check_p99_ms": "ms", "ratio": "fraction", "metered_check_rps": "req/s",
         "metered_check_p99_ms": "ms", "metered_ratio": "fraction",
         "batch_decisions_per_s": "decisions/s",
         "batch_p99_ms": "ms"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--serve", choices=["app", "ceiling"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--env", default="{}")
    args = parser.parse_args()
    if args.serve == "app":
        serve_app(args.port, json.loads(args.env))
        return
    if args.serve == "ceiling":
        serve_ceiling(args.port, json.loads(args.env)["redis_url"])
        return

    from shared.stack import EmbeddedStack, free_port

    data = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    stack = EmbeddedStack(data)
    endpoints = stack.start()
    env = {"kafka_bootstrap": endpoints.kafka_bootstrap, "redis_url": endpoints.redis_url,
           "clickhouse_dsn": endpoints.clickhouse_dsn, "admin_api_key": ADMIN_KEY,
           "clock": "wall", "entitlements_invoice_wait_s": "0",
           # ACCESS_LOG=false: the ceiling writes no log line per request, so the check path
           # is measured without one too (the README says what the log costs on top).
           "access_log": "false"}
    app_port, ceiling_port = free_port(), free_port()
    children = []
    try:
        children.append(start(["--serve", "app", "--port", str(app_port),
                               "--env", json.dumps(env)], app_port))
        children.append(start(["--serve", "ceiling", "--port", str(ceiling_port), "--env",
                               json.dumps({"redis_url": endpoints.redis_url})], ceiling_port))
        app_base, ceiling_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{ceiling_port}"
        key = asyncio.run(seed(app_base))
        asyncio.run(seed_users(endpoints.redis_url))
        runs = []
        for n in range(args.runs):
            result = asyncio.run(one_run(app_base, ceiling_base, key, args))
            runs.append(result)
            for metric, value in result.items():
                emit(metric, value, UNITS[metric], run=n + 1)
        for metric in UNITS:
            emit(metric, statistics.median(r[metric] for r in runs), UNITS[metric],
                 run="median", cpus=os.cpu_count())
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
        stack.stop()


if __name__ == "__main__":
    main()
