"""The README's Python examples and its workstation, device and fleet walk-throughs run as
written (the commands are read from README.md itself), against what ``make demo`` makes
(rebuilt here in a temporary directory with the same commands)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.channelkit import served
from tests.support.xgbmodels import BIN

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files `make demo` leaves: demo/ (model, data, keys, a store) and bundles/."""
    root = tmp_path_factory.mktemp("readme")
    steps = [
        (sys.executable, ["-m", "edgebundle.builder.example", "--out", "demo"]),
        ("bundle", ["keygen", "--out", "demo/keys"]),
        (
            "bundle",
            [
                "build",
                "demo/model.json",
                "--name",
                "credit-score",
                "--version",
                "1.0.0",
                "--key",
                "demo/keys/signing.key",
                "--data",
                "demo/data.csv",
            ],
        ),
        ("bundle-runtime", ["init", "--store", "demo/store", "--trust", "demo/keys/signing.pub"]),
        (
            "bundle-runtime",
            ["install", "bundles/credit-score-1.0.0.bundle", "--store", "demo/store"],
        ),
    ]
    for tool, args in steps:
        command = [tool if tool == sys.executable else str(BIN / tool), *args]
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
    return root


@pytest.mark.parametrize("index", [0, 1], ids=["load-and-score", "build"])
def test_the_python_api_examples_run_as_written(demo: Path, index: int) -> None:
    blocks = python_blocks("Python API")
    assert len(blocks) == 2
    proc = subprocess.run(
        [sys.executable, "-c", blocks[index]], cwd=demo, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    if index == 0:
        lines = proc.stdout.splitlines()
        assert re.fullmatch(r"\[0\.\d+\]", lines[0]), lines[0]
        assert lines[1].startswith("[{'id': 'a-17', 'probability': ")
    else:
        assert "credit-score 1.1.0 → demo/out/credit-score-1.1.0.bundle" in proc.stdout


def shell_lines(section: str) -> list[str]:
    """The commands of a section's ``sh`` blocks, comments dropped."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end], re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def device(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device's working directory as the walk-through assumes it: bundles of credit-score
    1.3.0, 1.4.0 and 1.5.0 copied over with signing.pub, and rows to score."""
    root = tmp_path_factory.mktemp("device")
    for version in ("1.3.0", "1.4.0", "1.5.0"):
        build = [
            str(BIN / "bundle"),
            "build",
            "demo/model.json",
            "--name",
            "credit-score",
            "--version",
            version,
            "--key",
            "demo/keys/signing.key",
            "--out",
            str(root),
        ]
        proc = subprocess.run(build, cwd=demo, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    (root / "signing.pub").write_bytes((demo / "demo/keys/signing.pub").read_bytes())
    (root / "rows.jsonl").write_bytes((demo / "demo/rows.jsonl").read_bytes())
    csv_lines = (demo / "demo/data.csv").read_text().splitlines(keepends=True)
    (root / "rows.csv").write_text("".join(csv_lines[:6]))
    return root


def test_the_device_walk_through_runs_in_order_on_a_fresh_store(device: Path) -> None:
    """Every command of the walk-through, as written but for the store's path, exits as its
    comment says (0 unless "exit N") and prints no traceback and no Python "None"; `serve`
    is started, asked whether it is ready, and stopped with SIGTERM."""
    # The section's other blocks (the device kit, offline install) have tests of their own.
    commands = [c for c in shell_lines("Device walk-through") if c.startswith("bundle-runtime")]
    assert any(c.startswith("bundle-runtime remove") for c in commands)
    store = device / "store"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    expected = {"credit-score-1.3.0.bundle": 4}  # the one the README marks "refused, exit 4"
    for command in commands:
        command = command.replace("/var/lib/edgebundle", str(store))
        if command.startswith("bundle-runtime serve"):
            check_serve(command.replace("--port 8080", "--port 0"), device, env)
            continue
        proc = subprocess.run(
            command, shell=True, cwd=device, env=env, capture_output=True, text=True, timeout=120
        )
        want = next((code for name, code in expected.items() if name in command), 0)
        assert proc.returncode == want, (command, proc.stderr)
        assert "Traceback" not in proc.stderr and "None" not in proc.stdout, command
        if want:
            assert proc.stderr.startswith("error: refusing credit-score 1.3.0: "), proc.stderr


def check_serve(command: str, cwd: Path, env: dict[str, str]) -> None:
    server = subprocess.Popen(
        command.split(), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        # The server logs to stderr; it names its address once it listens.
        lines = iter(server.stderr.readline, "")
        first = next(line for line in lines if "serving on" in line)
        port = int(first.rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=30) as r:
            assert r.status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in err, err


def shell_commands(section: str) -> list[str]:
    """As ``shell_lines``, with lines continued by a backslash joined into one command."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end], re.DOTALL)
    joined = [re.sub(r"\\\n\s*", "", block) for block in blocks]
    lines = [line.split("  #")[0].strip() for block in joined for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (command, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, (command, proc.stderr)
    assert "None" not in proc.stdout + proc.stderr, (command, proc.stdout)
    return proc


def test_the_workstation_walk_through_runs_in_order(demo: Path, tmp_path: Path) -> None:
    """From keygen to inspect, as written but for the interpreter's directory: the README's
    model.json and holdout.csv are the demo's model and data."""
    commands = shell_commands("Workstation walk-through")
    assert commands[0].startswith("python3 -m venv .venv")  # the install: this suite's venv
    (tmp_path / "model.json").write_bytes((demo / "demo/model.json").read_bytes())
    (tmp_path / "holdout.csv").write_bytes((demo / "demo/data.csv").read_bytes())
    outputs = [run_shell(c.replace(".venv/bin/", f"{BIN}/"), tmp_path) for c in commands[1:]]
    assert [c.split()[1] for c in commands[1:]] == ["keygen", "build", "verify", "inspect"]
    assert (tmp_path / "keys/signing.key").stat().st_mode & 0o777 == 0o600
    assert "credit-score 1.4.0 → bundles/credit-score-1.4.0.bundle" in outputs[1].stdout
    assert "verified" in outputs[3].stdout.lower()


class FleetDevice:
    """``bundle-runtime serve --channel``, its stderr collected line by line."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.lines: list[str] = []
        self.server = subprocess.Popen(
            command.split(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.server.stderr is not None
        for line in self.server.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.server.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, (text, "".join(self.lines))
            time.sleep(0.1)

    def stop(self) -> str:
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=30)
        self._reader.join(timeout=30)
        if self.server.stderr is not None:
            self.server.stderr.close()
        assert self.server.returncode == 0, "".join(self.lines)
        return "".join(self.lines)


def test_the_fleet_walk_through_runs_in_order(demo: Path, tmp_path: Path) -> None:
    """The workstation publishes v1, v2, a broken v3, rotates keys and publishes v4 with the
    new key; a device serving the channel installs each, refuses v3 and follows the rotation.
    As written but for: the channel's server (the suite's, on 127.0.0.1), the store's path, a
    1 s poll and port 0; keys/signing.pub is copied to signing.pub, as the block's comment
    says."""
    commands = shell_commands("Fleet walk-through (over-the-air updates)")
    for version in ("v1", "v2", "v4"):
        (tmp_path / f"model-{version}.json").write_bytes((demo / "demo/model.json").read_bytes())
    outcome = {"1.0.0": "installed", "2.0.0": "installed", "3.0.0": "refused and marked bad"}
    outcome["4.0.0"] = "installed"
    store = tmp_path / "device-store"
    device: FleetDevice | None = None
    published: list[str] = []
    with served(tmp_path / "channel") as channel:
        try:
            for command in commands:
                if command.startswith("python3 -m http.server --directory channel"):
                    continue  # the channel's server: `served` above
                command = command.replace("/var/lib/edgebundle", str(store))
                if command.startswith("bundle-runtime"):  # the device's copy of the key
                    pub = (tmp_path / "keys/signing.pub").read_bytes()
                    (tmp_path / "signing.pub").write_bytes(pub)
                if command.startswith("bundle-runtime serve"):
                    command = command.replace("http://updates.example:8000/", channel.url)
                    command = command.replace("--poll 300", "--poll 1") + " --port 0"
                    device = FleetDevice(f"{BIN}/{command}", tmp_path)
                else:
                    run_shell(command, tmp_path)
                if command.startswith("bundle publish"):
                    bundle = command.split()[2]
                    published.append(bundle.rsplit("-", 1)[1].removesuffix(".bundle"))
                if device is not None and published:
                    version = published[-1]
                    device.wait_for(f"credit-score {version}: {outcome[version]}")
        finally:
            log = device.stop() if device is not None else ""
    assert published == ["1.0.0", "2.0.0", "3.0.0", "4.0.0"]
    # the first statement, keys/1.json, replaces the key the device was provisioned with
    assert sorted(p.name for p in (tmp_path / "channel/keys").iterdir()) == ["1.json"]
    assert "now trusting key set version 1" in log, log
    assert "Traceback" not in log and "None" not in log, log
    status = run_shell(f"bundle-runtime status --store {store} --json", tmp_path)
    assert json.loads(status.stdout)["models"]["credit-score"]["active"] == "4.0.0"
