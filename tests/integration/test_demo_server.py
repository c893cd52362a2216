"""``make demo``'s last step (``python -m edgebundle.builder.example --serve-demo``): at a
terminal (a real pty) the server it starts stays up and answers the commands it prints until
Ctrl-C; in a pipe (CI) it stops and the step ends, printing how to start one."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import KeyFiles
from tests.support.xgbmodels import run

EXAMPLE = [sys.executable, "-m", "edgebundle.builder.example"]


@pytest.fixture(scope="module")
def demo(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's store, as `make demo` leaves it (a smaller model)."""
    demo = tmp_path_factory.mktemp("demo")
    subprocess.run([*EXAMPLE, "--out", str(demo), "--rounds", "20"], check=True)
    args = ["build", str(demo / "model.json"), "--name", "credit-score", "--version", "1.0.0"]
    proc = run("bundle", [*args, "--key", str(keys.private), "--out", str(demo)])
    assert proc.returncode == 0, proc.stderr
    store = str(demo / "store")
    assert (
        run("bundle-runtime", ["init", "--store", store, "--trust", str(keys.public)]).returncode
        == 0
    )
    bundle = str(demo / "credit-score-1.0.0.bundle")
    assert run("bundle-runtime", ["install", bundle, "--store", store]).returncode == 0
    return demo


def _read_until(fd: int, marker: str, seconds: float) -> str:
    text = ""
    deadline = time.monotonic() + seconds
    while marker not in text:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} in time; got {text!r}"
        text += os.read(fd, 4096).decode()
    return text


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_to_end(fd: int, seconds: float) -> str:
    """What the pty's other side writes until it is closed (EIO on Linux) or ``seconds`` pass."""
    text = ""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            data = os.read(fd, 4096)
        except OSError:  # every writer closed its end
            break
        if not data:
            break
        text += data.decode(errors="replace")
    return text


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def test_at_a_terminal_the_server_stays_up_until_ctrl_c(demo: Path) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*EXAMPLE, "--serve-demo", str(demo)],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        # As a terminal's job has it: a suite started in the background by a shell without job
        # control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=_sigint_as_at_a_terminal,
    )
    os.close(secondary)
    try:
        text = _read_until(primary, "drift stats.json", 60)
        assert "the server stays up: try it (Ctrl-C stops it)" in text
        url = re.search(r"curl -s (http://127\.0\.0\.1:\d+)/v2/models/credit-score\r?\n", text)
        assert url is not None, text
        time.sleep(0.5)
        assert proc.poll() is None  # still up after printing the commands
        assert _get(f"{url.group(1)}/v2/models/credit-score") == 200
        proc.send_signal(signal.SIGINT)
        # A terminal keeps reading: what the demo and its server print while stopping must
        # not fill the pty and hold them up.
        after = _read_to_end(primary, 30)
        assert proc.wait(timeout=5) == 0, after
        with pytest.raises(OSError):
            _get(f"{url.group(1)}/v2/health/live")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def test_in_a_pipe_it_ends_and_prints_how_to_start_a_server(demo: Path) -> None:
    proc = subprocess.run(
        [*EXAMPLE, "--serve-demo", str(demo)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'POST /invocations → {"predictions"' in proc.stdout
    assert f"bundle-runtime serve --store {demo / 'store'} --port 8080" in proc.stdout
    assert "curl -s http://127.0.0.1:8080/invocations" in proc.stdout
