"""HTTP, stdin and cold-start measurements: `bundle-runtime` against the usual baselines.

Load comes from wrk (Debian's package; `make bench` installs it), the same for both servers,
single-row requests over keep-alive connections on 127.0.0.1.
"""

from __future__ import annotations

import io
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


def wrk(
    url: str, body: bytes, connections: int, seconds: int = _WRK_SECONDS, close: bool = False
) -> dict[str, float]:
    """``close``: a new connection per request (with https://, a TLS handshake each)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            # a level-1 long bracket: the JSON body itself ends in "]]"
            f"wrk.body = [=[{body.decode()}]=]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            + ('wrk.headers["Connection"] = "close"\n' if close else "")
        )
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
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


def stdin_section(bundle: Path, pub: Path, rows: np.ndarray) -> dict[str, Any]:
    """Rows/s through `bundle-runtime score` per input format against ``Model.predict`` on the
    same rows in process, and the start-up to a first score of both; medians of interleaved
    rounds. The median start-up (the same command on one row) is taken off each stdin run's
    median: rows/s is the steady state."""
    from edgebundle.runtime import api

    model = api.load(bundle, trust=pub)
    values = to_python(rows)  # shortest float32 text, as a float32 source would write it
    inputs = {
        "jsonl arrays": ("jsonl", "".join(json.dumps(row) + "\n" for row in values)),
        "jsonl objects": ("jsonl", "".join(
            json.dumps({k: v for k, v in zip(model.features, row, strict=True) if v is not None})
            + "\n" for row in values)),
        "csv": ("csv", ",".join(model.features) + "\n" + "".join(
            ",".join("" if v is None else repr(v) for v in row) + "\n" for row in values)),
    }
    encoded = {name: (fmt, text.encode()) for name, (fmt, text) in inputs.items()}
    npy = io.BytesIO()
    np.save(npy, rows)
    encoded["npy"] = ("npy", npy.getvalue())
    score = [str(BIN / "bundle-runtime"), "score", "--bundle", str(bundle), "--trust", str(pub)]
    first_row = encoded["jsonl arrays"][1].split(b"\n", 1)[0] + b"\n"
    in_process = [sys.executable, "-c", _FIRST_SCORE, str(bundle), str(pub)]
    timings: dict[str, list[float]] = {name: [] for name in [*encoded, "api", "start", "api start"]}
    for _ in range(_ROUNDS):
        timings["start"].append(_timed(score, first_row))
        timings["api start"].append(_timed(in_process, b""))
        for name, (fmt, data) in encoded.items():
            timings[name].append(_timed([*score, "--format", fmt], data))
        started = time.perf_counter()
        model.predict(rows)
        timings["api"].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in timings.items()}
    for name in encoded:
        median[name] -= median["start"]
    api_rate = len(rows) / median["api"]
    result: dict[str, Any] = {
        "rows": len(rows),
        "api_rows_per_s": api_rate,
        "rows_per_s": {name: len(rows) / median[name] for name in encoded},
        "first_score_ms": {"bundle-runtime score": median["start"] * 1e3,
                           "python api": median["api start"] * 1e3},
    }
    result["ratios"] = {f"stdin {name} vs API": rate / api_rate
                        for name, rate in result["rows_per_s"].items()}
    result["ratios"]["score start-up vs API start-up"] = median["start"] / median["api start"]
    return result


# A fresh interpreter's way to a first score through the public API.
_FIRST_SCORE = """
import sys
import numpy as np
from edgebundle.runtime import api
model = api.load(sys.argv[1], trust=sys.argv[2])
model.predict(np.zeros((1, len(model.features)), np.float32))
"""


def _timed(command: list[str], stdin: bytes) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, input=stdin, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.decode()[-500:]}")
    return elapsed
