"""HTTP, stdin and cold-start measurements: `bundle-runtime` against the usual baselines.

Load comes from wrk (Debian's package; `make bench` installs it), the same for both servers,
single-row requests over keep-alive connections on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgebundle.runtime.scoring import to_python

BIN = Path(sys.executable).parent
_WRK_SECONDS = 3
_ROUNDS = 3  # wrk runs per server and concurrency; the median is reported
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def post(url: str, body: bytes, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        return int(response.status)


def start(command: list[str], url: str, body: bytes) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; return it and the cold start: spawn → first answered request."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + 60
    while time.perf_counter() < deadline:
        try:
            if post(url, body) == 200:
                return proc, time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.005)
    proc.kill()
    raise RuntimeError(f"server did not answer: {' '.join(command)}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak: what the device must have room for
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def wrk(url: str, body: bytes, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            # a level-1 long bracket: the JSON body itself ends in "]]"
            f"wrk.body = [=[{body.decode()}]=]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{_WRK_SECONDS}s",
         "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout
    Path(script.name).unlink()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate: {out}")
    return {
        "requests_per_s": float(rate.group(1)),
        "p50_us": _latency(out, "50%"),
        "p99_us": _latency(out, "99%"),
        "failed": float(errors.group(1)) if errors else 0.0,
        "socket_errors": float(sum(map(int, socket_errors.groups()))) if socket_errors else 0.0,
    }


def _combined(runs: Iterable[dict[str, float]]) -> dict[str, float]:
    """The rounds' median rate and latencies, and all their failures."""
    listed = list(runs)
    return {
        key: (sum if key in _COUNTS else statistics.median)(run[key] for run in listed)
        for key in listed[0]
    }


_COUNTS = ("failed", "socket_errors")


def _latency(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no {percentile} latency")
    return float(match.group(1)) * _UNITS[match.group(2)]


def http_section(bundle: Path, source: Path, pub: Path, row: list[float | None]) -> dict[str, Any]:
    """Our server and the Flask + XGBoost server on the same model, same load, same rows."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs Debian's wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        subprocess.run([str(BIN / "bundle-runtime"), "init", "--store", str(store),
                        "--trust", str(pub)], check=True, capture_output=True)
        subprocess.run([str(BIN / "bundle-runtime"), "install", str(bundle), "--store",
                        str(store)], check=True, capture_output=True)
        ours_port, nomon_port, flask_port = free_port(), free_port(), free_port()
        fleet_port, broker_port = free_port(), free_port()
        servers = {
            "bundle-runtime serve": (
                [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port",
                 str(ours_port)],
                f"http://127.0.0.1:{ours_port}/invocations",
            ),
            "bundle-runtime --no-monitor": (
                [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port",
                 str(nomon_port), "--no-monitor"],
                f"http://127.0.0.1:{nomon_port}/invocations",
            ),
            # the same server publishing its status and telemetry every second to a broker
            "bundle-runtime --fleet": (
                [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port",
                 str(fleet_port), "--fleet", f"mqtt://127.0.0.1:{broker_port}",
                 "--device-id", "bench", "--telemetry-interval", "1"],
                f"http://127.0.0.1:{fleet_port}/invocations",
            ),
            "flask + xgboost": (
                [sys.executable, "-m", "bench.flask_app", str(source), str(flask_port)],
                f"http://127.0.0.1:{flask_port}/predict",
            ),
        }
        body = json.dumps({"instances": [row]}).encode()
        results: dict[str, Any] = {}
        running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        running["mosquitto"] = (_broker(Path(tmp), broker_port), "")
        try:
            for name, (command, url) in servers.items():
                proc, cold = start(command, url, body)
                running[name] = (proc, url)
                results[name] = {"cold_start_ms": cold * 1e3}
            # Round after round, each server in turn: the machine's noise falls on all alike.
            rounds: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in servers}
            for _ in range(_ROUNDS):
                for name, (_, url) in running.items():
                    if name not in servers:
                        continue
                    rounds[name].append({"c1": wrk(url, body, 1), "c8": wrk(url, body, 8)})
            for name, (proc, _) in running.items():
                if name not in servers:
                    continue
                results[name] |= {c: _combined(r[c] for r in rounds[name]) for c in ("c1", "c8")}
                results[name]["server_peak_rss_mb"] = rss_mb(proc.pid)
        finally:
            for proc, _ in running.values():
                proc.terminate()
                proc.wait(timeout=20)
    ours, base = results["bundle-runtime serve"], results["flask + xgboost"]
    unmonitored = results["bundle-runtime --no-monitor"]
    fleet = results["bundle-runtime --fleet"]
    results["ratios"] = {
        "requests/s at c8 vs flask": ours["c8"]["requests_per_s"] / base["c8"]["requests_per_s"],
        "requests/s at c1 vs flask": ours["c1"]["requests_per_s"] / base["c1"]["requests_per_s"],
        "p99 at c8 vs flask": ours["c8"]["p99_us"] / base["c8"]["p99_us"],
        "server RSS vs flask": ours["server_peak_rss_mb"] / base["server_peak_rss_mb"],
        "cold start vs flask": ours["cold_start_ms"] / base["cold_start_ms"],
        # drift counting's cost as a client sees it
        "p50 at c1 monitor on/off": ours["c1"]["p50_us"] / unmonitored["c1"]["p50_us"],
        "requests/s at c8 monitor on/off": ours["c8"]["requests_per_s"]
        / unmonitored["c8"]["requests_per_s"],
        # the fleet agent publishes off the request path: what a client sees of it
        "p50 at c1 fleet on/off": fleet["c1"]["p50_us"] / ours["c1"]["p50_us"],
        "p99 at c8 fleet on/off": fleet["c8"]["p99_us"] / ours["c8"]["p99_us"],
        "requests/s at c8 fleet on/off": fleet["c8"]["requests_per_s"]
        / ours["c8"]["requests_per_s"],
    }
    return results


def _broker(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Debian's Mosquitto on 127.0.0.1 (`make bench` installs it), no persistence."""
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if mosquitto is None:
        raise RuntimeError("mosquitto is not installed (make bench installs Debian's mosquitto)")
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
    )
    proc = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("mosquitto did not start") from None
            time.sleep(0.05)


def stdin_section(bundle: Path, source: Path, pub: Path, rows: np.ndarray) -> dict[str, Any]:
    """Rows/s through `bundle-runtime score` versus XGBoost per row and on the whole batch."""
    import xgboost as xgb

    # Each float32 written in its shortest form, as a float32 source would write it (the
    # float64 widening's 17 digits take twice as long to parse).
    lines = "".join(json.dumps(row) + "\n" for row in to_python(rows)).encode()
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "bundle-runtime"), "score", "--bundle", str(bundle), "--trust", str(pub)],
        input=lines, capture_output=True, check=True,
    )
    stdin_s = time.perf_counter() - started
    assert proc.stdout.count(b"\n") == len(rows)
    booster = xgb.Booster()
    booster.load_model(str(source))
    loop_rows = rows[:2000]  # a per-row loop over 100k rows would take minutes
    started = time.perf_counter()
    for row in loop_rows:
        booster.predict(xgb.DMatrix(row[None, :]))
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    booster.predict(xgb.DMatrix(rows))
    batch_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "rows": len(rows),
        "bundle_runtime_rows_per_s": len(rows) / stdin_s,
        "xgboost_loop_rows_per_s": len(loop_rows) / loop_s,
        "xgboost_batch_rows_per_s": len(rows) / batch_s,
    }
    result["ratios"] = {
        "stdin vs xgboost batch": result["bundle_runtime_rows_per_s"]
        / result["xgboost_batch_rows_per_s"],
        "stdin vs xgboost per-row loop": result["bundle_runtime_rows_per_s"]
        / result["xgboost_loop_rows_per_s"],
    }
    return result
