"""A move of the manual clock never holds the platform: SIGTERM in the middle of a long move
stops `make run` (the launcher and its children) within 10 s, and a move too long is
refused at once."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import wait_until_ready
from tests.foundation.test_process_tree import ADMIN as LAUNCHER_KEY
from tests.foundation.test_process_tree import Launcher, _alive, _children

ADMIN = {"Authorization": f"Bearer {LAUNCHER_KEY}"}
TENANTS = 150


def _create_tenants(base: str) -> None:
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as client:
        for n in range(TENANTS):
            response = client.post("/v1/tenants", json={
                "id": f"clk-{n}", "plan": "essentials", "cycle": "P1M",
                "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
                "admin_user": "u-admin"})
            assert response.status_code == 201, response.text


def test_sigterm_during_a_clock_move_stops_the_platform_within_10_s(tmp_path: Path) -> None:
    platform = Launcher(tmp_path / "data")
    base = platform.base
    launcher = platform.spawn(CLOCK="manual", CLOCK_START="2027-01-01T00:00:00Z")
    try:
        wait_until_ready(base, launcher)
        started = time.monotonic()
        far = httpx.put(f"{base}/v1/clock", json={"now": "3027-01-01T00:00:00Z"},
                        headers=ADMIN, timeout=5)
        assert far.status_code == 422, far.text
        assert far.json()["error"]["field"] == "now"
        assert time.monotonic() - started < 1.0
        _create_tenants(base)
        children = _children(launcher.pid)
        # 36 billing dates of 150 tenants: far longer than the 10 s allowed to stop.
        mover = threading.Thread(target=lambda: _move_quietly(base), daemon=True)
        mover.start()
        time.sleep(2.0)
        assert mover.is_alive(), "the move ended before SIGTERM: it proves nothing"
        launcher.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        launcher.wait(timeout=10)
        assert time.monotonic() - stopping < 10
        deadline = time.monotonic() + 2
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in children), children
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def _move_quietly(base: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the platform stops under it, as intended
        httpx.put(f"{base}/v1/clock", json={"now": "2029-12-31T00:00:00Z"}, headers=ADMIN,
                  timeout=120)
