"""systemd readiness: ``serve`` says READY=1 on $NOTIFY_SOCKET once it answers, STOPPING=1 when
SIGTERM starts the drain, and nothing (no error) without a notify socket."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import time
from pathlib import Path

from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.xgbmodels import BIN


def test_serve_notifies_systemd_when_ready_and_when_stopping(
    tmp_path: Path, keys: KeyFiles
) -> None:
    store = Store.init(tmp_path / "store", [keys.public])
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(60)
        proc = subprocess.Popen(
            [str(BIN / "bundle-runtime"), "serve", "--store", str(store.root), "--port", "0"],
            env={"NOTIFY_SOCKET": address, "PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert listener.recv(4096) == b"READY=1"
            assert proc.stderr is not None
            line = proc.stderr.readline().decode()
            port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", "/v2/health/live")
                assert connection.getresponse().status == 200  # ready meant answering
            finally:
                connection.close()
            proc.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
        finally:
            _reap(proc)


def test_sigterm_the_moment_the_port_accepts_drains_rather_than_kills(
    tmp_path: Path, keys: KeyFiles
) -> None:
    """The signal handlers are in place before the socket listens: a SIGTERM sent as soon as a
    connection is accepted stops the server cleanly (exit 0), never by the default action."""
    store = Store.init(tmp_path / "store", [keys.public])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [str(BIN / "bundle-runtime"), "serve", "--store", str(store.root), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        assert b"Traceback" not in _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> bytes:
    """Kill ``proc`` if it still runs; what is left of its stderr."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=15)
    assert proc.stderr is not None
    with proc.stderr:
        return proc.stderr.read()
