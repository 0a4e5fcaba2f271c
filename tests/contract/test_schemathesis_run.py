"""Schemathesis's own runner, `schemathesis run --checks all`, against the platform served over
HTTP as a client meets it: every route but the clock's, every phase (the document's examples,
boundary values, random valid and invalid requests, and stateful chains along the document's
links from creations to reads), every check (no 5xx, statuses, media types, headers and bodies
conform to the document, invalid input refused, valid input accepted, no route open without
a key). It must find nothing; its report is the failure message otherwise.

`PUT /v1/clock` is left out: moving the manual clock years ahead bills every period in
between, which is the billing tests' subject, not this one's. The settings it runs with are
in `schemathesis.toml` beside this file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.stack import free_port
from tests.conftest import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN_KEY = "contract-admin"
RUN_TIMEOUT_S = 900


def test_schemathesis_run_with_every_check_finds_nothing(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
           "ADMIN_API_KEY": ADMIN_KEY, "CLOCK": "manual",
           "CLOCK_START": "2027-01-01T00:00:00Z"}
    log = tmp_path / "platform.log"  # a file: a pipe nobody reads would block the platform
    with log.open("wb") as output:
        platform = subprocess.Popen([sys.executable, "-m", "services.embedded", "--no-demo"],
                                    cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        wait_until_ready(base, platform)
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG),
             "run", f"{base}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {ADMIN_KEY}",
             "--exclude-name", "PUT /v1/clock", "--max-examples", "30", "--seed", "20261129",
             "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert run.returncode == 0, \
            f"{run.stdout[-30000:]}\n{run.stderr[-3000:]}\n{_errors(log)}"
        assert "API Links:" in run.stdout, run.stdout[-5000:]
        assert "0 covered" not in run.stdout, run.stdout[-5000:]  # the links were followed
    finally:
        os.killpg(platform.pid, signal.SIGTERM)
        platform.wait(60)


def _errors(log: Path) -> str:
    """The platform's error lines (a 5xx's trace), for the failure message."""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if '"level":"error"' in line)[-10000:]
