"""`POST /v1/events` on the embedded platform (`make run`) while the platform is killed and
restarted under it: with `INGEST_ACK=stored` (the embedded default) a 202 means "stored in
ClickHouse, offsets committed", so clients that re-send every batch until it is answered 202
lose nothing and double nothing, whatever the broker (memory only) forgot.

Each platform runs as `python -m services.embedded --no-demo` in a session of its own, so the
whole process tree (launcher, tansu, valkey) can be killed at once with `os.killpg`. ClickHouse
rows are counted afterwards by a separate process: chDB allows one engine per process.

Knobs (defaults keep CI fast): `INGEST_EVENTS` (20,000; 100,000 were run by hand),
`INGEST_KILLS` (3 SIGKILLs; 10 were run by hand with 100,000 events), `INGEST_RESTARTS`
(2 graceful restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shared.stack import free_port
from tests.foundation.test_process_tree import _children

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "restarts-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BATCH_HEADERS = {**ADMIN, "Content-Type": "application/cloudevents-batch+json"}
EVENTS = int(os.environ.get("INGEST_EVENTS", "20000"))
KILLS = int(os.environ.get("INGEST_KILLS", "3"))
RESTARTS = int(os.environ.get("INGEST_RESTARTS", "2"))
CLIENTS = 20
BATCH = 100
TENANTS = [f"restart-{n}" for n in range(8)]
# Longer than the platform's own wait for a store (ingest_ack_timeout_s, 30 s): its 503
# comes first.
REQUEST_TIMEOUT_S = 45.0


def _wall_now() -> datetime:
    return datetime.now(UTC)  # noqa: TID251 - the platform under test runs on the wall clock


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the platform as a process tree ----------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


async def _poll(check: Callable[[], bool], within: float, what: str,
                interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(interval)


def _broker_of(launcher: int) -> tuple[int, int]:
    """The launcher's tansu child: its pid and its port."""
    tansu = [pid for pid, name in _children(launcher).items() if name == "tansu"]
    assert len(tansu) == 1, _children(launcher)
    argv = Path(f"/proc/{tansu[0]}/cmdline").read_bytes().split(b"\0")
    return tansu[0], int(argv[argv.index(b"--listener-url") + 1].decode().rsplit(":", 1)[1])


class Platform:
    """`python -m services.embedded --no-demo` on one DATA_DIR, started again after each
    stop or kill, each run's output in a log of its own."""

    def __init__(self, root: Path, **env: str) -> None:
        self.data_dir = root / "data"
        self.logs = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATA_DIR": str(self.data_dir), "PORT": str(self.port),
                    "ADMIN_API_KEY": ADMIN_KEY, "KAFKA_SESSION_TIMEOUT_MS": "1000",
                    "KAFKA_HEARTBEAT_INTERVAL_MS": "200", **env}
        for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "CLICKHOUSE_DSN", "CLOCK", "CLOCK_START",
                     "INGEST_ACK"):
            if name not in env:
                self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.events: list[str] = []  # what happened, for failure messages
        self._started = time.monotonic()

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self._started:7.2f} s  {what}")

    def log_path(self, run: int) -> Path:
        return self.logs / f"launcher-{run}.log"

    async def start(self, within: float = 60.0) -> float:
        """Spawn a launcher and wait until it is ready; the seconds that took."""
        self.runs += 1
        began = time.monotonic()
        process = self.process = self._spawn()
        deadline = began + within
        async with httpx.AsyncClient(base_url=self.base, timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"run {self.runs} exited with {process.returncode}:\n"
                                         f"{self.tail(self.runs)}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"run {self.runs} not ready within {within:.0f} s:\n"
                                         f"{self.tail(self.runs)}")
                await asyncio.sleep(0.05)
        took = time.monotonic() - began
        self.note(f"run {self.runs} ready after {took:.1f} s")
        return took

    def _spawn(self) -> subprocess.Popen[bytes]:
        """A launcher in a session of its own: its process group is the whole tree."""
        with self.log_path(self.runs).open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "services.embedded", "--no-demo"], cwd=ROOT,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    async def kill(self) -> None:
        """SIGKILL the whole process tree; return once every process of it is gone (the
        launcher's DATA_DIR lock with it)."""
        process = self._running()
        os.killpg(process.pid, signal.SIGKILL)
        await _poll(lambda: process.poll() is not None, 10, "the killed launcher exits")
        await _poll(lambda: not _group_members(process.pid), 10,
                    f"the killed tree leaves (left: {_group_members(process.pid)})")
        self.note(f"run {self.runs} killed")

    async def stop(self, within: float = 60.0) -> int:
        """SIGTERM to the launcher, which stops its children in order; its exit code."""
        process = self._running()
        os.kill(process.pid, signal.SIGTERM)
        began = time.monotonic()
        try:
            await _poll(lambda: process.poll() is not None, within, "the launcher stops",
                        interval=0.05)
        except AssertionError:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        await _poll(lambda: not _group_members(process.pid), 10,
                    f"the stopped tree leaves (left: {_group_members(process.pid)})")
        self.note(f"run {self.runs} stopped with {process.returncode} in "
                  f"{time.monotonic() - began:.1f} s")
        assert process.returncode is not None
        return process.returncode

    def abandon(self) -> None:
        """Cleanup: whatever is left of the tree goes."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def _running(self) -> subprocess.Popen[bytes]:
        process = self.process
        assert process is not None
        assert process.poll() is None, f"run {self.runs} is not running:\n" \
            f"{self.tail(self.runs)}"
        return process

    def tail(self, run: int, chars: int = 4000) -> str:
        path = self.log_path(run)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def history(self) -> str:
        return "\n".join(self.events)

    async def diagnostics(self) -> str:
        """/readyz and the metering counters of /metrics, as they are now."""
        try:
            async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
                ready = await client.get("/readyz")
                metrics = await client.get("/metrics")
        except httpx.HTTPError as error:
            return f"platform unreachable: {error!r}"
        counters = [line for line in metrics.text.splitlines()
                    if line.startswith("metering_") and "_bucket" not in line
                    and "_created" not in line]
        return f"readyz {ready.status_code} {ready.text}\n" + "\n".join(counters)

    @contextlib.asynccontextmanager
    async def bounded(self, seconds: float) -> AsyncIterator[None]:
        """Fail, with what happened, unless the block is done within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise AssertionError(f"not done within {seconds:.0f} s\n{self.history()}\n"
                                 f"{self.tail(self.runs)}") from None


def count_rows(data_dir: Path, tenants: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per tenant: rows in usage_events and distinct (source, id) among them, read by a process
    of its own (chDB: one engine per process) once the platform is stopped."""
    script = (
        "import json, sys, clickhouse_connect\n"
        "client = clickhouse_connect.get_client(dsn=sys.argv[1])\n"
        "rows = client.query('SELECT tenant, count(), uniqExact(source, id) FROM usage_events"
        " WHERE tenant IN {tenants:Array(String)} GROUP BY tenant',"
        " parameters={'tenants': json.loads(sys.argv[2])}).result_rows\n"
        "print(json.dumps({t: [int(n), int(u)] for t, n, u in rows}))\n")
    done = subprocess.run(
        [sys.executable, "-c", script, f"chdb://{data_dir.resolve() / 'clickhouse'}",
         json.dumps(list(tenants))], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, list[int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return {t: (n, u) for t, (n, u) in found.items()}


# --- clients ---------------------------------------------------------------------------------


def event_batches(prefix: str, total: int, when: datetime) -> list[list[dict[str, Any]]]:
    """`total` distinct `email.sent` events of count 1 in batches of 100, round-robin over
    the tenants."""
    stamp = _iso(when)
    events = [{"specversion": "1.0", "id": f"{prefix}-{n}", "source": "restarts",
               "type": "email.sent", "subject": TENANTS[n % len(TENANTS)], "time": stamp,
               "data": {"count": 1}} for n in range(total)]
    return [events[i:i + BATCH] for i in range(0, total, BATCH)]


STALL_S = 20.0  # no batch acked for this long while the platform is up: metering is stuck


@dataclass
class Ingest:
    """The clients' shared state: what was acked, and whether the platform is up."""

    base: str
    up: asyncio.Event = field(default_factory=asyncio.Event)
    acked: Counter[str] = field(default_factory=Counter)  # tenant -> distinct ids acked
    acked_ids: set[str] = field(default_factory=set)
    acked_total: int = 0
    finished: bool = False
    in_flight: int = 0  # requests sent and not yet answered
    resends: Counter[str] = field(default_factory=Counter)  # why a batch was sent again
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    last_progress: float = field(default_factory=time.monotonic)

    def mark_up(self) -> None:
        self.last_progress = time.monotonic()
        self.up.set()

    async def reached(self, events: int) -> bool:
        """Until `events` are acked: False when the stream ended first."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.finished or self.acked_total >= events)
            return not self.finished

    async def until_ready(self, client: httpx.AsyncClient) -> None:
        """Until the platform is up (as the test knows it) and answers /readyz with 200."""
        while True:
            await self.up.wait()
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    async def send(self, client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        """The same batch, same ids, until it is answered 202."""
        body = orjson.dumps(batch)
        while True:
            self.in_flight += 1
            try:
                response = await client.post("/v1/events", content=body,
                                             headers=BATCH_HEADERS)
            except httpx.TransportError as error:  # refused, reset, timed out
                self.resends[type(error).__name__] += 1
                await self.until_ready(client)
                continue
            finally:
                self.in_flight -= 1
            if response.status_code == 503:
                self.resends[f"503 {response.json().get('error', {}).get('code')}"] += 1
                await self.until_ready(client)
                continue
            assert response.status_code == 202, (response.status_code, response.text)
            assert response.json() == {"accepted": len(batch), "rejected": []}, response.text
            break
        async with self.progress:
            for event in batch:
                if event["id"] not in self.acked_ids:
                    self.acked_ids.add(event["id"])
                    self.acked[event["subject"]] += 1
            self.acked_total = len(self.acked_ids)
            self.last_progress = time.monotonic()
            self.progress.notify_all()

    async def client(self, batches: list[list[dict[str, Any]]]) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=REQUEST_TIMEOUT_S) as client:
            for batch in batches:
                await self.send(client, batch)

    async def run(self, batches: list[list[dict[str, Any]]], clients: int) -> None:
        await asyncio.gather(*(self.client(batches[i::clients]) for i in range(clients)))
        async with self.progress:
            self.finished = True
            self.progress.notify_all()

    async def watchdog(self, platform: Platform) -> None:
        """Fail when the platform is up but no batch has been acked for `STALL_S`."""
        while True:
            await asyncio.sleep(0.5)
            if self.up.is_set() and time.monotonic() - self.last_progress > STALL_S:
                raise AssertionError(
                    f"no batch acked for {STALL_S:.0f} s while the platform is up: "
                    f"{self.acked_total} acked, resends {dict(self.resends)}\n"
                    f"{await platform.diagnostics()}\n{platform.history()}\n"
                    f"{platform.tail(platform.runs)}")

    async def drive(self, platform: Platform, batches: list[list[dict[str, Any]]],
                    clients: int, controller: Coroutine[Any, Any, None]) -> None:
        """The clients, the controller (kills, restarts) and the watchdog at once; the first
        failure of any of them fails the whole."""
        work = asyncio.create_task(self.run(batches, clients))
        tasks = {work, asyncio.create_task(controller),
                 asyncio.create_task(self.watchdog(platform))}
        pending = set(tasks)
        try:
            while len(pending) > 1 or work in pending:  # the watchdog never ends by itself
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def create_tenants(base: str, tenants: Sequence[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for tenant in tenants:
            response = await client.post("/v1/tenants", headers=ADMIN, json={
                "id": tenant, "plan": "essentials", "cycle": "P1M", "time_zone": "UTC",
                "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-admin"})
            assert response.status_code == 201, response.text


async def counted(base: str, tenants: Sequence[str], start: datetime, end: datetime
                  ) -> tuple[dict[str, int], dict[str, int]]:
    """Per tenant: the usage API's e-mails (ClickHouse) and the check's `used` (valkey)."""
    usage: dict[str, int] = {}
    used: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=ADMIN) as client:
        for tenant in tenants:
            response = await client.get("/v1/usage", params={
                "tenant": tenant, "meter": "emails_sent", "from": _iso(start),
                "to": _iso(end)})
            assert response.status_code == 200, response.text
            usage[tenant] = sum(int(point["value"]) for point in response.json()["data"])
            response = await client.get(f"/v1/tenants/{tenant}/check",
                                        params={"feature": "emails", "quantity": 1})
            assert response.status_code == 200, response.text
            used[tenant] = int(response.json()["used"])
    return usage, used


async def assert_counted_once(platform: Platform, ingest: Ingest, when: datetime) -> None:
    """ClickHouse (usage API), the live counters (check) and, once the platform is stopped,
    the raw rows all equal the distinct events acked 202, per tenant."""
    acked = {t: ingest.acked[t] for t in TENANTS}
    context = (f"\nacked {sum(acked.values())}, resends {dict(ingest.resends)}\n"
               f"{platform.history()}")
    usage, used = await counted(platform.base, TENANTS, when - timedelta(hours=1),
                                when + timedelta(hours=1))
    assert usage == acked, f"usage API (ClickHouse) {usage} != acked {acked}{context}"
    assert used == acked, f"live counters (check used) {used} != acked {acked}{context}"
    assert await platform.stop() == 0, platform.tail(platform.runs)
    rows = count_rows(platform.data_dir, TENANTS)
    assert rows == {t: (n, n) for t, n in acked.items()}, \
        f"rows (count, distinct) {rows} != acked {acked}{context}"


# --- 1. kills and restarts of the whole platform under load ------------------------------------


@pytest.mark.parametrize(("how", "times"), [("sigkill", KILLS), ("sigterm", RESTARTS)])
async def test_sigkill_during_http_ingest_loses_and_doubles_nothing(
        tmp_path: Path, how: str, times: int) -> None:
    """20 clients send `INGEST_EVENTS` e-mails in batches of 100, each batch re-sent with the
    same ids until answered 202, while the whole platform is killed (SIGKILL to its process
    group) or stopped (SIGTERM to the launcher) `times` times at random points of the stream
    and started again on the same DATA_DIR. 10 SIGKILLs with 100,000 events were run by hand
    (`INGEST_KILLS=10 INGEST_EVENTS=100000`)."""
    rng = random.Random(20_260_101 + times)
    platform = Platform(tmp_path)
    try:
        async with platform.bounded(90 + EVENTS / 500 + times * 30):
            await platform.start()
            await create_tenants(platform.base, TENANTS)
            when = _wall_now()
            ingest = Ingest(platform.base)
            ingest.mark_up()
            # Kill points: random, within the stream, each after some progress of the run.
            points = sorted(rng.sample(range(EVENTS // 20, EVENTS * 85 // 100, BATCH), times))
            acked_at_kill: list[int] = []

            async def restarts() -> None:
                since = 0
                for point in points:
                    assert await ingest.reached(max(point, since + CLIENTS * BATCH // 2)), \
                        f"only {len(acked_at_kill)} of {times} {how}s landed before the " \
                        f"stream ended\n{platform.history()}"
                    ingest.up.clear()
                    acked_at_kill.append(ingest.acked_total)
                    platform.note(f"{how} with {ingest.acked_total} acked, "
                                  f"{ingest.in_flight} requests in flight")
                    if how == "sigkill":
                        await platform.kill()
                    else:
                        assert await platform.stop() == 0, platform.tail(platform.runs)
                    await platform.start()
                    since = ingest.acked_total
                    ingest.mark_up()

            began = time.monotonic()
            await ingest.drive(platform, event_batches(how, EVENTS, when), CLIENTS, restarts())
            platform.note(f"all {EVENTS} acked in {time.monotonic() - began:.1f} s, "
                          f"resends {dict(ingest.resends)}")
            assert len(acked_at_kill) == times
            assert all(0 < n < EVENTS for n in acked_at_kill), acked_at_kill
            assert ingest.acked_total == EVENTS
            await assert_counted_once(platform, ingest, when)
            print(f"\n{how} x{times}:\n{platform.history()}")
    finally:
        platform.abandon()


# --- 2. a restart with events, then new ones, on the manual clock -----------------------------


async def _move_clock(platform: Platform, instant: datetime, what: str) -> float:
    """PUT /v1/clock; the seconds it took to answer 200."""
    async with httpx.AsyncClient(base_url=platform.base, timeout=30) as client:
        began = time.monotonic()
        response = await client.put("/v1/clock", headers=ADMIN, json={"now": _iso(instant)})
        took = time.monotonic() - began
    platform.note(f"PUT /v1/clock {what}: {response.status_code} in {took:.3f} s")
    assert response.status_code == 200, response.text
    return took


async def _nothing() -> None:
    return None


async def test_restart_with_unconsumed_events_and_then_new_ones(tmp_path: Path) -> None:
    """1,000 events acked, a graceful restart, 1,000 new ones acked: all 2,000 counted, and
    the manual clock moves (its barrier waits for every accepted event) within a second of
    the restart.

    (With `INGEST_ACK=broker` on the embedded broker, events acked but not yet stored when
    the platform stops are lost by design, so that mode is not asserted here.)"""
    start = _wall_now().replace(minute=0, second=0, microsecond=0)
    platform = Platform(tmp_path, CLOCK="manual", CLOCK_START=_iso(start))
    try:
        async with platform.bounded(90):
            await platform.start()
            await create_tenants(platform.base, TENANTS)
            ingest = Ingest(platform.base)
            ingest.mark_up()
            await ingest.drive(platform, event_batches("before", 1_000, start), 5, _nothing())
            assert await platform.stop() == 0, platform.tail(platform.runs)
            await platform.start()

            took = await _move_clock(platform, start + timedelta(minutes=30),
                                     "right after the restart")
            assert took < 1.0, platform.history()

            ingest = Ingest(platform.base, acked=ingest.acked, acked_ids=ingest.acked_ids)
            ingest.mark_up()
            await ingest.drive(platform, event_batches("after", 1_000, start), 5, _nothing())
            assert len(ingest.acked_ids) == 2_000
            await _move_clock(platform, start + timedelta(minutes=45), "after the new events")
            await assert_counted_once(platform, ingest, start)
            print(f"\n{platform.history()}")
    finally:
        platform.abandon()


# --- 3. the broker alone killed -----------------------------------------------------------------


async def test_broker_killed_alone_loses_nothing_acked(tmp_path: Path) -> None:
    """tansu (memory only) SIGKILLed mid-ingest while the launcher lives on: the launcher
    starts a new, empty broker on the same port, metering meets a new cluster id, drops what
    was in flight, rebuilds its counters and reads the new broker from its beginning; callers
    waiting on the old one get a 503 and send again. Every event answered 202 must then be
    counted exactly once.

    A new tansu has been seen to acknowledge produces under load whose records no fetch
    returns: their requests are answered 503 once `INGEST_ACK_TIMEOUT_S` has passed, here
    shorter than the watchdog's `STALL_S`."""
    platform = Platform(tmp_path, INGEST_ACK_TIMEOUT_S="5")
    try:
        async with platform.bounded(120):
            await platform.start()
            await create_tenants(platform.base, TENANTS)
            assert platform.process is not None
            launcher = platform.process.pid
            tansu, _ = _broker_of(launcher)

            when = _wall_now()
            total = min(EVENTS, 10_000)
            ingest = Ingest(platform.base)
            ingest.mark_up()

            async def kill_broker() -> None:
                assert await ingest.reached(total // 3), "the stream ended first"
                platform.note(f"tansu {tansu} SIGKILLed with {ingest.acked_total} acked, "
                              f"{ingest.in_flight} requests in flight")
                os.kill(tansu, signal.SIGKILL)

                def replaced() -> bool:
                    children = _children(launcher)
                    return tansu not in children and "tansu" in children.values()

                await _poll(replaced, 10, "the launcher starts a new broker")
                platform.note(f"a new tansu {_broker_of(launcher)[0]}")

            await ingest.drive(platform, event_batches("broker", total, when), CLIENTS,
                               kill_broker())
            platform.note(f"all {total} acked, resends {dict(ingest.resends)}")
            await assert_counted_once(platform, ingest, when)
            print(f"\n{platform.history()}")
    finally:
        platform.abandon()


async def _poll_async(client: httpx.AsyncClient, path: str, within: float) -> None:
    """Until GET `path` answers 200."""
    deadline = time.monotonic() + within
    last = ""
    while True:
        try:
            response = await client.get(path)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as error:
            last = repr(error)
        assert time.monotonic() < deadline, f"{path} not 200 within {within:.0f} s: {last}"
        await asyncio.sleep(0.1)
