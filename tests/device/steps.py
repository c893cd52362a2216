"""What the emulated-device tests share: running commands, the demo's bundles and rows, a
server to score over HTTP, and how close two runtimes' answers must be."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tests.device.parity import Record
from tests.device.report import REPORT
from tests.support.xgbmodels import BIN

TIMEOUT = 1800.0
# float32 answers may differ in their last bits (summation order); labels may not differ at all
TOLERANCE = 8 * float(np.finfo(np.float32).eps)
_LISTENING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")
T = TypeVar("T")


@dataclass(frozen=True)
class Model:
    name: str
    bundle: Path  # the version the store serves in the end
    jsonl: str
    csv: str


def timed(label: str, action: Callable[[], T]) -> T:
    start = time.monotonic()
    result = action()
    REPORT.append(f"{label}: {time.monotonic() - start:.0f} s")
    return result


def run(command: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def ok(command: list[str], stdin: str = "") -> str:
    proc = run(command, stdin)
    assert proc.returncode == 0, f"{command}: {proc.stderr[-3000:]}"
    return proc.stdout


def du(path: Path) -> str:
    return ok(["du", "-sh", str(path)]).split()[0]


def demo_bundles(work: Path, private: Path) -> tuple[Path, Model]:
    """The demo's bundle as 1.0.0 and 1.1.0 (same model), and 200 of its rows."""
    folder = work / "demo"
    ok([str(BIN / "python"), "-m", "edgebundle.builder.example", "--out", str(folder)])
    bundles = [build_bundle(folder / "model.json", "credit-score", v, "int8", private,
                            work / "bundles", folder / "data.csv") for v in ("1.0.0", "1.1.0")]
    lines = (folder / "data.csv").read_text().splitlines(keepends=True)[:201]
    rows = csv.DictReader(io.StringIO("".join(lines)))
    objects = [{k: (v if k == "id" else float(v) if v else None) for k, v in r.items()}
               for r in rows]
    jsonl = "".join(json.dumps(o) + "\n" for o in objects)
    return bundles[0], Model("credit-score", bundles[1], jsonl, "".join(lines))


def build_bundle(model: Path, name: str, version: str, precision: str, private: Path, out: Path,
           data: Path | None = None) -> Path:
    args = ["build", str(model), "--name", name, "--version", version, "--key", str(private),
            "--out", str(out), "--precision", precision]
    ok([str(BIN / "bundle"), *args, *(["--data", str(data)] if data else [])])
    return out / f"{name}-{version}.bundle"


def scale(records: list[Record]) -> float:
    return max((abs(v) for r in records for v in numbers(r)), default=1.0)


def numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        yield float(value)


def post(port: int, path: str, body: bytes) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Served:
    """``bundle-runtime serve --port 0`` running until ``stop`` (SIGTERM, then a wait)."""

    def __init__(self, runtime: Path, store: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(runtime), "serve", "--store", str(store), "--port", "0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        self.port = self._wait()

    def _wait(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        port = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            found = _LISTENING.search(self.log.read_text())
            port = port or (int(found.group(1)) if found else None)
            if port is not None and ready(port):
                return port
            time.sleep(0.5)
        raise AssertionError(f"not ready in {TIMEOUT} s: {self.log.read_text()}")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kb) / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


