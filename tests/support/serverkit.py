"""Real bundles, real stores and real servers for the HTTP server tests.

Bundles are built by the real ``bundle`` CLI and installed by the real ``bundle-runtime``;
servers run either as a ``bundle-runtime serve --port 0`` subprocess (the port is read from its
stderr) or in this process on a thread, always on 127.0.0.1 and always stopped with a timeout.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.monitor.counting import DEFAULT_WINDOW_ROWS
from edgebundle.runtime.serve.config import ServerConfig, ServerLimits, TlsFiles
from edgebundle.runtime.serve.server import RunningServer
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.xgbmodels import BIN, Trained, run, train

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
_LISTENING = re.compile(r"serving on https?://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Built:
    trained: Trained
    bundle: Path
    name: str
    version: str


def build(
    keys: KeyFiles,
    workdir: Path,
    name: str,
    version: str,
    objective: str = "binary:logistic",
    rounds: int = 20,
    baseline: bool = False,
) -> Built:
    """Train a model and build a float bundle of it (float: outputs match XGBoost to 1e-6);
    ``baseline``: with its test rows as ``--data``, so the bundle has a drift baseline."""
    model_dir = workdir / f"{name}-{version}"
    model_dir.mkdir()
    trained = train(objective, model_dir, rounds=rounds)
    args = ["build", str(trained.path), "--name", name, "--version", version]
    args += ["--key", str(keys.private), "--out", str(workdir), "--precision", "float"]
    if baseline:
        np.save(model_dir / "data.npy", trained.x_test)
        args += ["--data", str(model_dir / "data.npy")]
    proc = run("bundle", args)
    assert proc.returncode == 0, proc.stderr
    return Built(trained, workdir / f"{name}-{version}.bundle", name, version)


def init_store(keys: KeyFiles, root: Path) -> Path:
    proc = run("bundle-runtime", ["init", "--store", str(root), "--trust", str(keys.public)])
    assert proc.returncode == 0, proc.stderr
    return root


def install(store: Path, bundle: Path) -> None:
    proc = run("bundle-runtime", ["install", str(bundle), "--store", str(store)])
    assert proc.returncode == 0, proc.stderr


def rollback(store: Path, model: str) -> None:
    proc = run("bundle-runtime", ["rollback", "--store", str(store), "--model", model])
    assert proc.returncode == 0, proc.stderr


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stderr(self) -> str:
        return self.log.read_text()


@contextmanager
def serve_process(store: Path, log: Path, *extra: str) -> Iterator[ServerProcess]:
    """``bundle-runtime serve --port 0`` as a subprocess; terminated (then killed) at the end."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port", "0", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield ServerProcess(proc, _wait_for_port(proc, log), log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = _LISTENING.search(log.read_text())
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"server did not start in {START_TIMEOUT} s: {log.read_text()}")


@contextmanager
def serve_in_process(
    store: Path,
    token: bytes | None = None,
    reload_interval: float = 0.5,
    monitor_window: int | None = DEFAULT_WINDOW_ROWS,
    tls: TlsFiles | None = None,
    access_log: str | None = None,
    host: str = HOST,
    **limits: Any,
) -> Iterator[tuple[RunningServer, list[str]]]:
    """The server on threads of this process, for tests that need small limits; and its log."""
    lines: list[str] = []
    config = ServerConfig(
        host=host,
        port=0,
        token=token,
        reload_interval=reload_interval,
        limits=ServerLimits(**limits),
        monitor_window=monitor_window,
        tls=tls,
        access_log=access_log,
    )
    running = RunningServer(Store.open(store), config, lines.append)
    try:
        yield running, lines
    finally:
        running.stop()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def post_json(port: int, path: str, value: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(value).encode()
    return request(
        port, "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
    )


def raw(port: int, data: bytes, timeout: float = 10.0) -> Reply:
    """Send ``data`` as is on a new connection and read one response."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_reply(sock)


def read_reply(sock: socket.socket) -> Reply:
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        return Reply(response.status, response.headers, response.read())
    finally:
        response.close()


def read_replies(sock: socket.socket, count: int) -> list[Reply]:
    """``count`` responses in a row from one connection, as a pipelining client reads them."""
    replies = []
    with sock.makefile("rb") as stream:
        for _ in range(count):
            status = int(stream.readline().split()[1])
            headers = http.client.parse_headers(stream)
            replies.append(Reply(status, headers, stream.read(int(headers["Content-Length"]))))
    return replies


def infer_body(x: npt.NDArray[np.float32], **extra: Any) -> dict[str, Any]:
    """A v2 JSON infer request with ``x`` as flat data, NaN sent as null."""
    data = [None if np.isnan(v) else float(v) for v in x.reshape(-1)]
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": data}
    return {"inputs": [tensor], **extra}


def rows_json(x: npt.NDArray[np.float32]) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in x]
