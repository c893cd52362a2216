"""``bundle build`` shows its stages with timings on a terminal (a real pty) and stays silent
on stderr when it is not one (a pipe, as in CI)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KeyFiles
from tests.support.xgbmodels import Trained, run, train

STAGE = re.compile(r"^(.+)… (\d+\.\d) s$")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=20)


def _args(trained: Trained, keys: KeyFiles, out: Path) -> list[str]:
    return [
        "build", str(trained.path), "--name", "m", "--version", "1.0.0",
        "--key", str(keys.private), "--out", str(out),
    ]  # fmt: skip


def _on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``bundle`` with stderr on a pty and stdout on a pipe; return code, stdout, stderr."""
    primary, secondary = pty.openpty()
    bundle = str(Path(sys.executable).with_name("bundle"))
    proc = subprocess.Popen([bundle, *args], stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(primary, 4096)
        except OSError:  # the pty closes when the child exits (EIO on Linux)
            break
        if not data:
            break
        chunks.append(data)
    stdout, _ = proc.communicate(timeout=120)
    os.close(primary)
    code = proc.returncode
    return code, stdout.decode(), b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_terminal_sees_each_stage_with_its_time(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    code, stdout, stderr = _on_a_terminal(_args(trained, keys, tmp_path))
    assert code == 0, stderr
    stages = [STAGE.match(line) for line in stderr.splitlines()]
    assert all(stages), stderr
    names = [m.group(1) for m in stages if m]
    assert names[0] == "loading model.json"
    assert [n.split(":")[0] for n in names[2:6]] == [
        "float",
        "int8",
        "timing one-row latency of each candidate",
        "signing and writing the bundle",
    ]
    assert stdout.startswith("m 1.0.0 → ")  # the report itself still goes to stdout


def test_a_pipe_gets_no_progress(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    proc = run("bundle", _args(trained, keys, tmp_path))
    assert proc.returncode == 0
    assert proc.stderr == ""
