"""The server's life: hot reload under load, a version that will not load, models appearing and
disappearing, SIGHUP, and SIGTERM draining requests in flight.

v1 and v2 of "credit" are the same data trained for 5 and 60 rounds, so every answer says which
model computed it; each answer is checked against XGBoost for the version it claims.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.serverkit import (
    HOST,
    Built,
    build,
    infer_body,
    init_store,
    install,
    post_json,
    read_reply,
    request,
    rollback,
    serve_in_process,
    serve_process,
)
from tests.support.xgbmodels import features

pytestmark = pytest.mark.timeout(120)
INFER = "/v2/models/credit/infer"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="module")
def v1(keys: KeyFiles, bundles: Path) -> Built:
    return build(keys, bundles, "credit", "1.0.0", rounds=5)


@pytest.fixture(scope="module")
def v2(keys: KeyFiles, bundles: Path) -> Built:
    return build(keys, bundles, "credit", "2.0.0", rounds=60)


@pytest.fixture(scope="module")
def churn(keys: KeyFiles, bundles: Path) -> Built:
    return build(keys, bundles, "churn", "0.1.0", objective="reg:squarederror")


@pytest.fixture
def store(keys: KeyFiles, v1: Built, tmp_path: Path) -> Path:
    root = init_store(keys, tmp_path / "store")
    install(root, v1.bundle)
    return root


def probe_row(v1: Built, v2: Built) -> np.ndarray:
    """A row the two versions score far apart."""
    x = features(200, seed=21)
    gap = np.abs(v1.trained.predict(x) - v2.trained.predict(x))
    return x[int(np.argmax(gap)) : int(np.argmax(gap)) + 1]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def served_version(port: int) -> str:
    return str(request(port, "GET", "/v2/models/credit").json()["versions"][0])


def served_models(port: int) -> set[str]:
    """The models ``edgebundle_model_info`` reports."""
    text = request(port, "GET", "/metrics").body.decode()
    return {
        sample.labels["model"]
        for family in text_string_to_metric_families(text)
        if family.name == "edgebundle_model_info"
        for sample in family.samples
    }


def test_install_and_rollback_under_load_fail_no_request(
    store: Path, v1: Built, v2: Built, tmp_path: Path
) -> None:
    x = probe_row(v1, v2)
    expected = {"1.0.0": float(v1.trained.predict(x)[0]), "2.0.0": float(v2.trained.predict(x)[0])}
    assert abs(expected["1.0.0"] - expected["2.0.0"]) > 0.05
    body = json.dumps(infer_body(x)).encode()
    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[str]] = [[] for _ in range(4)]

    with serve_process(store, tmp_path / "serve.log") as server:

        def load(worker: int) -> None:
            connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
            try:
                while not stop.is_set():
                    connection.request("POST", INFER, body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                    version = answer.get("model_version")
                    if response.status != 200 or version not in expected:
                        failures.append(f"{response.status}: {answer}")
                        continue
                    if abs(answer["outputs"][0]["data"][0] - expected[version]) > 1e-6:
                        failures.append(f"{version} answered {answer}")
                    seen[worker].append(version)
            except Exception as e:
                failures.append(repr(e))
            finally:
                connection.close()

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: all(seen))
            install(store, v2.bundle)
            wait_for(lambda: all(s[-1] == "2.0.0" for s in seen))
            rollback(store, "credit")
            wait_for(lambda: all(s[-1] == "1.0.0" for s in seen))
            count = sum(map(len, seen))
            wait_for(lambda: sum(map(len, seen)) > count + 50)  # and it goes on serving
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        metrics = request(server.port, "GET", "/metrics").body.decode()
        log = server.stderr()

    assert failures == []
    for versions in seen:  # each client saw v1, then v2, then v1: never back and forth
        switches = [a for a, b in itertools.pairwise(versions) if a != b]
        assert switches == ["1.0.0", "2.0.0"], switches
    assert 'edgebundle_model_loads_total{model="credit",result="success"} 3' in metrics
    assert "serving credit 2.0.0 (was 1.0.0)" in log and "serving credit 1.0.0 (was 2.0.0)" in log


def corrupt_install(store: Path, bundle: Path, tmp_path: Path) -> None:
    """Make ``store`` switch to ``bundle`` with the installed file damaged, as disk rot would:
    install it in a copy of the store, flip a byte of the kept file, then move the damaged file
    and the copy's state file into ``store`` (the state file last and atomically, as the store
    itself switches)."""
    shadow = tmp_path / "shadow"
    shutil.copytree(store, shadow)
    install(shadow, bundle)
    name, version = bundle.stem.rsplit("-", 1)
    kept = Path("bundles") / name / f"{version}.bundle"
    damaged = bytearray((shadow / kept).read_bytes())
    damaged[-600] ^= 0xFF
    (store / kept).write_bytes(bytes(damaged))
    shutil.copy(shadow / "state.json", store / "state.json.new")
    os.replace(store / "state.json.new", store / "state.json")


def test_version_that_fails_to_load_is_marked_bad_and_rolled_back(
    store: Path, v2: Built, tmp_path: Path
) -> None:
    with serve_in_process(store, reload_interval=0.05) as (running, log):
        port = running.address[1]
        corrupt_install(store, v2.bundle, tmp_path)
        wait_for(lambda: any("rolled back" in line for line in log))
        failures = [line for line in log if "cannot load" in line]
        assert len(failures) == 1 and failures[0].startswith("error: cannot load credit: ")
        assert failures[0].endswith("; still serving 1.0.0")
        assert post_json(port, INFER, infer_body(np.ones((1, 6), np.float32))).status == 200
        assert served_version(port) == "1.0.0"
        assert request(port, "GET", "/v2/health/ready").status == 200
        model = Store.open(store).state().models["credit"]
        assert str(model.active) == "1.0.0" and [str(v) for v in model.bad] == ["2.0.0"]
        events = [json.loads(line) for line in (store / "audit.log").read_text().splitlines()]
        assert events[-1]["event"] == "marked-bad" and "failed to load" in events[-1]["reason"]
        time.sleep(0.3)  # polls go on; the broken version is never retried
        assert len([line for line in log if "cannot load" in line]) == 1
        running.reload()  # SIGHUP: the store's active version is served already
        time.sleep(0.3)
        assert len([line for line in log if "cannot load" in line]) == 1
        metrics = request(port, "GET", "/metrics").body.decode()
        assert 'edgebundle_model_loads_total{model="credit",result="failure"} 1' in metrics
        assert 'version="1.0.0"' in metrics


def test_model_that_fails_to_load_at_start_is_not_ready(store: Path) -> None:
    kept = store / "bundles" / "credit" / "1.0.0.bundle"
    kept.write_bytes(kept.read_bytes()[:-1] + b"x")
    with serve_in_process(store) as (running, log):
        port = running.address[1]
        assert log[0].startswith("error: cannot load credit: ")
        ready = request(port, "GET", "/v2/health/ready")
        assert ready.status == 503
        assert ready.json()["error"] == "not ready: credit failed to load"
        reply = post_json(port, INFER, infer_body(np.ones((1, 6), np.float32)))
        assert reply.status == 503 and "its active version failed to load" in reply.json()["error"]
        assert request(port, "GET", "/v2/health/live").status == 200


def test_models_appear_and_disappear_with_the_store(
    store: Path, churn: Built, tmp_path: Path
) -> None:
    before = (store / "state.json").read_bytes()
    with serve_in_process(store, reload_interval=0.05) as (running, log):
        port = running.address[1]
        install(store, churn.bundle)
        wait_for(lambda: request(port, "GET", "/v2/models/churn/ready").status == 200)
        row = {"instances": [[0.5, 1.0, 2.0, 3.0, None, 0.0]]}
        several = post_json(port, "/invocations", row)
        assert several.status == 400
        assert "several models (churn, credit); add ?model=NAME" in several.json()["error"]
        answer = post_json(port, "/invocations?model=churn", row)
        assert answer.status == 200 and list(answer.json()["predictions"][0]) == ["prediction"]
        # The state of before the install comes back (a restore): churn is no longer served.
        (store / "state.json.new").write_bytes(before)
        os.replace(store / "state.json.new", store / "state.json")
        wait_for(lambda: request(port, "GET", "/v2/models/churn").status == 404)
        assert "stopped serving churn: it has no active version in the store" in log
        assert post_json(port, "/invocations", row).status == 200  # credit is the only one again
        assert served_models(port) == {"credit"}


def test_empty_store_is_not_ready_until_a_model_is_installed(
    keys: KeyFiles, v1: Built, tmp_path: Path
) -> None:
    root = init_store(keys, tmp_path / "store")
    with serve_in_process(root, reload_interval=0.05) as (running, _):
        port = running.address[1]
        ready = request(port, "GET", "/v2/health/ready")
        assert ready.status == 503 and ready.json()["error"] == "not ready: no model is installed"
        assert request(port, "GET", "/v2/health/live").status == 200
        nothing = post_json(port, "/invocations", {"instances": []})
        assert nothing.status == 404 and nothing.json() == {"error": "no model is installed"}
        install(root, v1.bundle)
        wait_for(lambda: request(port, "GET", "/v2/health/ready").status == 200)


def test_explicit_reload_picks_up_an_install_at_once(store: Path, v2: Built) -> None:
    with serve_in_process(store, reload_interval=3600) as (running, _):
        port = running.address[1]
        install(store, v2.bundle)
        time.sleep(0.2)
        assert served_version(port) == "1.0.0"  # no poll for an hour
        running.reload()
        wait_for(lambda: served_version(port) == "2.0.0", timeout=5)


def test_sighup_reloads_and_does_not_stop_the_server(
    store: Path, v2: Built, tmp_path: Path
) -> None:
    with serve_process(store, tmp_path / "serve.log") as server:
        install(store, v2.bundle)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served_version(server.port) == "2.0.0", timeout=5)
        assert server.proc.poll() is None


def half_sent_infer(port: int) -> tuple[socket.socket, bytes]:
    """A connection with an infer request whose body is half sent: a request in flight."""
    body = json.dumps(infer_body(np.ones((1, 6), np.float32))).encode()
    sock = socket.create_connection((HOST, port), timeout=10)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:20])
    return sock, body[20:]


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_drains_a_request_in_flight(store: Path, tmp_path: Path) -> None:
    with serve_process(store, tmp_path / "serve.log") as server:
        sock, rest = half_sent_infer(server.port)
        with sock:
            time.sleep(0.3)  # the server has the headers: the request is in flight
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: refused(server.port), timeout=5)  # no new connections
            assert server.proc.poll() is None  # still finishing the request
            sock.sendall(rest)
            reply = read_reply(sock)
        assert reply.status == 200 and reply.headers["Connection"] == "close"
        assert reply.json()["model_name"] == "credit"
        assert server.proc.wait(timeout=10) == 0
        assert "Traceback" not in server.stderr()


def test_sigterm_gives_up_on_a_stalled_request_after_the_drain_timeout(
    store: Path, tmp_path: Path
) -> None:
    with serve_process(store, tmp_path / "serve.log", "--drain-timeout", "0.5") as server:
        sock, _ = half_sent_infer(server.port)
        with sock:
            time.sleep(0.3)
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
        assert "requests still in flight after 0.5 s; exiting" in server.stderr()
