"""Starting valkey waits until it has replayed its append-only file: a probe it leaves
unanswered (a long replay keeps it busy) means "not yet", never a failed start."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from shared.stack import ValkeyServer


def silent_then_answering(listener: socket.socket, silent_for: float) -> None:
    """Accept probes; leave them unanswered for `silent_for` seconds, then answer +PONG."""
    started = time.monotonic()
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # the listener was closed: the test is over
            return
        with connection:
            connection.recv(64)
            if time.monotonic() - started < silent_for:
                time.sleep(1.5)  # past the probe's 1 s timeout
            else:
                connection.sendall(b"+PONG\r\n")


def test_a_probe_left_unanswered_is_retried_until_valkey_answers(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=silent_then_answering, args=(listener, 2.5), daemon=True).start()
    valkey = ValkeyServer(port, tmp_path / "data", tmp_path / "valkey.log")
    started = time.monotonic()
    try:
        valkey._wait_until_loaded(timeout=20.0)  # the start's wait, on our fake server
    finally:
        listener.close()
    # Two probes time out (about 1 s each) before one is answered.
    assert 2.0 <= time.monotonic() - started < 10.0
