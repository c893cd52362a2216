"""Serving on a network: what TLS costs per request (keep-alive, and a new connection each
time) and in resident memory, against plain HTTP on the same model in the same run; and a soak
that reports the TLS server's RSS over time under steady load and connection churn.

The certificates are made with the ``openssl`` commands of the README's "Serving on a
network" section.
"""

from __future__ import annotations

import http.client
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.serving import BIN, free_port, wrk

_ROUNDS = 3


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it signs: (ca.pem, cert, key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "365", "-subj", "/CN=bench test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "device.key", "-out", "device.csr", "-subj", "/CN=127.0.0.1")
    extensions = folder / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "device.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "device.pem", "-days", "365", "-extfile", "san.ext")
    return folder / "ca.pem", folder / "device.pem", folder / "device.key"


def status(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
            "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


@contextmanager
def server(store: Path, port: int, tls: tuple[Path, Path, Path] | None) -> Iterator[int]:
    command = [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port", str(port)]
    context = None
    if tls is not None:
        ca, cert, key = tls
        command += ["--tls-cert", str(cert), "--tls-key", str(key)]
        context = ssl.create_default_context(cafile=ca)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            connection = (
                http.client.HTTPConnection("127.0.0.1", port, timeout=2) if context is None
                else http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
            )
            try:
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
            finally:
                connection.close()
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def installed(bundle: Path, pub: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        subprocess.run([str(BIN / "bundle-runtime"), "init", "--store", str(store),
                        "--trust", str(pub)], check=True, capture_output=True)
        subprocess.run([str(BIN / "bundle-runtime"), "install", str(bundle), "--store",
                        str(store)], check=True, capture_output=True)
        yield store


def tls_section(bundle: Path, pub: Path, body: bytes) -> dict[str, Any]:
    """Plain and TLS servers on the same store, measured in turn, round after round."""
    with installed(bundle, pub) as store, tempfile.TemporaryDirectory() as pki:
        tls = make_certificates(Path(pki))
        plain_port, tls_port = free_port(), free_port()
        with server(store, plain_port, None) as plain_pid, server(store, tls_port, tls) as tls_pid:
            urls = {"plain": f"http://127.0.0.1:{plain_port}/invocations",
                    "tls": f"https://127.0.0.1:{tls_port}/invocations"}
            runs: dict[str, list[dict[str, float]]] = {
                f"{kind} {load}": [] for kind in urls for load in ("keep-alive", "new connection")
            }
            for _ in range(_ROUNDS):
                for kind, url in urls.items():
                    runs[f"{kind} keep-alive"].append(wrk(url, body, 1))
                    runs[f"{kind} new connection"].append(wrk(url, body, 1, close=True))
            memory = {"plain": status(plain_pid), "tls": status(tls_pid)}
    result: dict[str, Any] = {
        name: {key: statistics.median(r[key]) for key in ("requests_per_s", "p50_us", "p99_us")}
        | {"failed": sum(r["failed"] + r["socket_errors"] for r in rounds)}
        for name, rounds in runs.items()
        for r in [{k: [run[k] for run in rounds] for k in rounds[0]}]
    }
    result["memory"] = memory

    def per_request_us(name: str) -> float:
        return 1e6 / float(result[name]["requests_per_s"])

    # wrk times a request from its write to its answer: over keep-alive that is the whole
    # of TLS's cost per request (the medians' difference: rates swing more on a shared
    # machine); with a new connection the handshake falls outside, so the rates say it.
    result["tls_cost"] = {
        "keep-alive µs per request (p50)": result["tls keep-alive"]["p50_us"]
        - result["plain keep-alive"]["p50_us"],
        "new connection µs per request (handshake, 1/rate)": per_request_us(
            "tls new connection") - per_request_us("plain new connection"),
        "peak RSS MB": memory["tls"]["peak_rss_mb"] - memory["plain"]["peak_rss_mb"],
    }
    result["ratios"] = {
        "TLS/plain requests/s, keep-alive": result["tls keep-alive"]["requests_per_s"]
        / result["plain keep-alive"]["requests_per_s"],
        "TLS/plain requests/s, new connection": result["tls new connection"]["requests_per_s"]
        / result["plain new connection"]["requests_per_s"],
        "TLS/plain peak RSS": memory["tls"]["peak_rss_mb"] / memory["plain"]["peak_rss_mb"],
    }
    return result


def soak_section(bundle: Path, pub: Path, body: bytes, seconds: int) -> dict[str, Any]:
    """The TLS server under keep-alive load with a handshake-per-request client beside it,
    ``seconds`` long, its RSS sampled after each slice of load."""
    slices = max(seconds // 10, 1)
    slice_seconds = max(seconds // slices, 1)
    samples: list[dict[str, float]] = []
    requests = 0.0
    failed = 0.0
    with installed(bundle, pub) as store, tempfile.TemporaryDirectory() as pki:
        tls = make_certificates(Path(pki))
        port = free_port()
        with server(store, port, tls) as pid:
            url = f"https://127.0.0.1:{port}/invocations"
            started = time.monotonic()
            for _ in range(slices):
                churn = subprocess.Popen(
                    ["wrk", "-t1", "-c2", f"-d{slice_seconds}s", "-H", "Connection: close",
                     url.replace("/invocations", "/v2/health/live")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                load = wrk(url, body, 4, seconds=slice_seconds)
                churn.wait(timeout=slice_seconds + 30)
                requests += load["requests_per_s"] * slice_seconds
                failed += load["failed"] + load["socket_errors"]
                samples.append({"seconds": time.monotonic() - started, **status(pid)})
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    return {
        "seconds": seconds,
        "requests": requests,
        "failed": failed,
        "rss_over_time": samples,
        "rss_growth_mb_after_first_slice": last - first,
    }


def print_network(tls: dict[str, Any], soak: dict[str, Any] | None) -> None:
    print("\n== TLS vs plain HTTP, single-row /invocations, c1, wrk on 127.0.0.1")
    print(f"{'server, load':<28}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}{'failed':>8}")
    for name in ("plain keep-alive", "tls keep-alive", "plain new connection",
                 "tls new connection"):
        r = tls[name]
        print(f"{name:<28}{r['requests_per_s']:>10.0f}{r['p50_us']:>10.0f}{r['p99_us']:>10.0f}"
              f"{r['failed']:>8.0f}")
    for kind, memory in tls["memory"].items():
        print(f"  {kind} server RSS {memory['rss_mb']:.1f} MB, peak {memory['peak_rss_mb']:.1f} MB")
    for label, value in tls["tls_cost"].items():
        print(f"  TLS cost, {label:<52}{value:>9.1f}")
    for label, ratio in tls["ratios"].items():
        print(f"  {label:<40}{ratio:>8.2f}×")
    if soak is None:
        return
    print(f"\n== soak: TLS server, {soak['seconds']} s of keep-alive load (c4) and connection "
          "churn (c2, a handshake per request)")
    print(f"  {soak['requests']:,.0f} requests, {soak['failed']:.0f} failed")
    print("  " + "  ".join(f"{s['seconds']:.0f}s:{s['rss_mb']:.1f}MB"
                           for s in soak["rss_over_time"]))
    print(f"  RSS growth after the first slice {soak['rss_growth_mb_after_first_slice']:+.1f} MB")
