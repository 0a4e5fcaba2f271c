"""`make run`'s process tree: children die with the launcher, even on SIGKILL; a second
launcher on the same DATA_DIR refuses to start; a restart keeps valkey and ClickHouse data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.stack import free_port
from tests.conftest import wait_until_ready

ADMIN = "tree-admin-key"
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> dict[int, str]:
    children: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # a thread or a child may end while we read
            for child in (task / "children").read_text().split():
                children[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
        except FileNotFoundError:
            continue
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has already died


class Launcher:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def spawn(self, **settings: str) -> subprocess.Popen[bytes]:
        """`make run` without its demo, on this launcher's DATA_DIR and port."""
        # Its output is a pipe read only once it exits: INFO lines (an access line per
        # request) would fill the pipe and block the platform under a long test.
        env = {**os.environ, "DATA_DIR": str(self.data_dir), "PORT": str(self.port),
               "ADMIN_API_KEY": ADMIN, "LOG_LEVEL": "WARNING", "KAFKA_SESSION_TIMEOUT_MS": "1000",
               "KAFKA_HEARTBEAT_INTERVAL_MS": "200", **settings}
        for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "CLICKHOUSE_DSN"):
            env.pop(name, None)
        return subprocess.Popen([sys.executable, "-m", "services.embedded", "--no-demo"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)


@pytest.fixture
def launcher(tmp_path: Path) -> Launcher:
    return Launcher(tmp_path / "data")


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def test_sigkill_leaves_no_broker_or_valkey_and_a_restart_keeps_the_data(
        launcher: Launcher) -> None:
    first = launcher.spawn()
    try:
        wait_until_ready(launcher.base, first)
        children = _children(first.pid)
        assert sorted(children.values()) == ["tansu", "valkey-server"]

        headers = {"Authorization": f"Bearer {ADMIN}"}
        minted = httpx.post(f"{launcher.base}/v1/api-keys", json={"role": "dashboard"},
                            headers=headers).json()
        event = {"specversion": "1.0", "id": "e-1", "source": "tree", "type": "email.sent",
                 "subject": "tree-tenant", "time": "2026-11-02T10:00:00Z", "data": {"count": 7}}
        assert httpx.post(f"{launcher.base}/v1/events", json=event,
                          headers=headers).status_code == 202
        usage_url = (f"{launcher.base}/v1/usage?tenant=tree-tenant&meter=emails_sent"
                     "&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z")
        dashboard = {"Authorization": f"Bearer {minted['key']}"}
        deadline = time.monotonic() + 20
        while httpx.get(usage_url, headers=dashboard).json()["data"] == []:
            assert time.monotonic() < deadline, "the event was never counted"
            time.sleep(0.1)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        _kill_tree(first)

    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"orphans left: {children}"
        time.sleep(0.05)

    second = launcher.spawn()
    try:
        wait_until_ready(launcher.base, second)
        second_children = _children(second.pid)
        # valkey's append-only file kept the key; chDB kept the event.
        response = httpx.get(usage_url, headers=dashboard)
        assert response.status_code == 200
        assert [p["value"] for p in response.json()["data"]] == [7]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert second.returncode == 0  # a graceful stop, children stopped in order
    assert not any(_alive(pid) for pid in second_children)


def test_a_second_launcher_on_the_same_data_dir_refuses(launcher: Launcher) -> None:
    first = launcher.spawn()
    try:
        wait_until_ready(launcher.base, first)
        second = launcher.spawn()
        output, _ = second.communicate(timeout=30)
        assert second.returncode == 1
        assert b"already running" in output
        assert httpx.get(f"{launcher.base}/readyz").status_code == 200  # the first one is fine
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
