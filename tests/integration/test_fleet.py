"""The README's fleet walk-through, end to end with real processes: keygen, build v1, publish,
device init + serve --channel, build v2, publish → the device switches by itself under load
with zero failed requests; a deliberately broken v3 is refused and marked bad by itself."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.serverkit import HOST, build, infer_body, init_store, request, serve_process
from tests.support.xgbmodels import features, run

INFER = "/v2/models/credit/infer"


@pytest.fixture
def channel_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Any static HTTP server will do; this is the stdlib's, on loopback."""
    directory = tmp_path / "channel"
    directory.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def handler(*args: Any) -> http.server.BaseHTTPRequestHandler:
        return Quiet(*args, directory=str(directory))

    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield directory, f"http://{HOST}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def publish(bundle: Path, channel: Path, keys: KeyFiles) -> None:
    proc = run(
        "bundle", ["publish", str(bundle), "--channel", str(channel), "--key", str(keys.private)]
    )
    assert proc.returncode == 0, proc.stderr


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class Load:
    """Threads sending single-row requests over keep-alive connections, recording answers."""

    def __init__(self, port: int, x: np.ndarray, threads: int = 4) -> None:
        self.body = json.dumps(infer_body(x)).encode()
        self.port = port
        self.stop = threading.Event()
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            while not self.stop.is_set():
                connection.request("POST", INFER, self.body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status != 200:
                    self.failures.append(f"{response.status}: {answer}")
                else:
                    self.versions.append(answer["model_version"])
        except Exception as e:
            self.failures.append(repr(e))
        finally:
            connection.close()


def test_fleet_walkthrough(
    keys: KeyFiles, tmp_path: Path, channel_server: tuple[Path, str]
) -> None:
    channel, url = channel_server
    v1 = build(keys, tmp_path, "credit", "1.0.0", rounds=5)
    publish(v1.bundle, channel, keys)
    store = init_store(keys, tmp_path / "device")
    with serve_process(store, tmp_path / "serve.log", "--channel", url, "--poll", "0.5") as server:
        wait_for(lambda: request(server.port, "GET", "/v2/health/ready").status == 200)
        x = features(1, seed=5)
        with Load(server.port, x) as load:
            wait_for(lambda: len(load.versions) > 50)
            v2 = build(keys, tmp_path, "credit", "2.0.0", rounds=40)
            publish(v2.bundle, channel, keys)
            wait_for(lambda: load.versions[-1] == "2.0.0")
            swapped = len(load.versions)
            broken = run(
                "bundle",
                [
                    "make-broken",
                    str(v2.bundle),
                    "--version",
                    "3.0.0",
                    "--key",
                    str(keys.private),
                    "--out",
                    str(tmp_path / "b"),
                ],
            )
            assert broken.returncode == 0, broken.stderr
            publish(tmp_path / "b" / "credit-3.0.0.bundle", channel, keys)
            wait_for(
                lambda: any(
                    str(v) == "3.0.0" for v in Store.open(store).state().models["credit"].bad
                )
            )
            time.sleep(1.0)  # a few more polls: 3.0.0 is not retried, 2.0.0 keeps serving
        assert load.failures == []
        assert set(load.versions) == {"1.0.0", "2.0.0"} and load.versions[-1] == "2.0.0"
        assert load.versions.index("2.0.0") > 0  # v1 served first, then the switch
        model = Store.open(store).state().models["credit"]
        assert str(model.active) == "2.0.0" and str(model.previous) == "1.0.0"
        events = [json.loads(line) for line in (store / "audit.log").read_text().splitlines()]
        refused = [e for e in events if e["event"] == "refused" and e["version"] == "3.0.0"]
        assert len(refused) == 1 and "selftest failed" in refused[0]["reason"]
        print(
            f"{len(load.versions)} requests served ({swapped} until the v2 switch), "
            f"{len(load.failures)} failed"
        )
