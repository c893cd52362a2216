"""What an operator meets on the HTTP server: ``curl -d`` bodies (a form content type holding
JSON), ``GET /`` and ``GET /v2/models`` listing what is served, and ``--access-log``."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import KeyFiles
from tests.support.serverkit import (
    HOST,
    Built,
    build,
    init_store,
    install,
    raw,
    request,
    serve_in_process,
)
from tests.support.xgbmodels import BIN

pytestmark = pytest.mark.timeout(120)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def built(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> list[Built]:
    folder = tmp_path_factory.mktemp("bundles")
    return [build(keys, folder, "credit", "1.2.0", rounds=5),
            build(keys, folder, "fraud", "0.3.1", rounds=5)]


@pytest.fixture(scope="module")
def store(keys: KeyFiles, built: list[Built], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = init_store(keys, tmp_path_factory.mktemp("device") / "store")
    for one in built:
        install(root, one.bundle)
    return root


def test_json_sent_as_a_form_is_scored_like_json(store: Path) -> None:
    rows = [[1.5, 2, None, 4, 5, 6], [0, 0, 0, 0, 0, 0]]
    body = json.dumps({"instances": rows}).encode()
    infer = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 6],
                                    "data": [1, 2, 3, 4, 5, 6]}]}).encode()
    with serve_in_process(store) as (running, _):
        port = running.address[1]
        path = "/invocations?model=credit"
        as_json = request(port, "POST", path, body, JSON)
        as_form = request(port, "POST", path, body, FORM)
        assert as_json.status == as_form.status == 200
        assert as_form.json() == as_json.json()
        infer_path = "/v2/models/credit/infer"
        assert request(port, "POST", infer_path, infer, FORM).json()["outputs"] == request(
            port, "POST", infer_path, infer, JSON
        ).json()["outputs"]
        for target in (path, infer_path):
            refused = request(port, "POST", target, b"a=1&b=2", FORM)
            assert refused.status == 415
            assert "is not JSON; send application/json" in refused.json()["error"]
        # JSON that is not an answerable body is the same 4xx as with a JSON content type
        assert request(port, "POST", path, b"[1]", FORM).status == 400


def test_curl_d_is_accepted(store: Path) -> None:
    with serve_in_process(store) as (running, _):
        proc = subprocess.run(
            ["curl", "--silent", "--max-time", "10", "-d",
             '{"instances": [[1, 2, 3, 4, 5, 6]]}',
             f"http://{HOST}:{running.address[1]}/invocations?model=fraud"],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 0
    assert len(json.loads(proc.stdout)["predictions"]) == 1


def test_root_and_v2_models_list_the_models_and_versions_served(store: Path) -> None:
    expected = [{"name": "credit", "version": "1.2.0", "ready": True},
                {"name": "fraud", "version": "0.3.1", "ready": True}]
    with serve_in_process(store) as (running, _):
        port = running.address[1]
        listing = request(port, "GET", "/v2/models")
        assert listing.status == 200 and listing.json() == {"models": expected}
        root = request(port, "GET", "/")
        assert root.status == 200
        assert root.json()["models"] == expected and root.json()["name"] == "edgebundle"
        assert request(port, "HEAD", "/").body == b""
        assert request(port, "POST", "/v2/models", b"{}", JSON).status == 405


_LINE = re.compile(
    r"(?P<time>\S+) (?P<peer>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) "
    r"(?P<bytes>\d+) (?P<seconds>\d+\.\d{6})"
)


def read_lines(path: Path, count: int) -> list[re.Match[str]]:
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    matches = [_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m is not None]


def test_access_log_has_a_line_per_request(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    with serve_in_process(store, access_log=str(log)) as (running, _):
        port = running.address[1]
        ok = request(port, "GET", "/v2/models")
        request(port, "GET", "/nowhere")
        request(port, "POST", "/invocations?model=credit",
                json.dumps({"instances": [[1, 2, 3, 4, 5, 6]]}).encode(), JSON)
        raw(port, b"BREW /\x1b[31m HTTP/1.1\r\n\r\n")  # a terminal escape in the path
        raw(port, b"NONSENSE\r\n\r\n")  # refused before a method was read
    lines = read_lines(log, 5)
    assert [(m["method"], m["path"], m["status"]) for m in lines] == [
        ("GET", "/v2/models", "200"),
        ("GET", "/nowhere", "404"),
        ("POST", "/invocations?model=credit", "200"),
        ("BREW", "/%1B[31m", "501"),
        ("-", "-", "400"),
    ]
    assert lines[0]["bytes"] == str(len(ok.body)) and lines[0]["peer"] == HOST
    after = datetime.datetime.now(datetime.timezone.utc)
    for m in lines:
        at = datetime.datetime.fromisoformat(m["time"].replace("Z", "+00:00"))
        assert before <= at <= after
        assert 0 <= float(m["seconds"]) < 10


def test_access_log_to_standard_output_from_the_cli(store: Path, tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port", "0",
             "--access-log", "-"],
            stdout=stdout, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"serving on http://127\.0\.0\.1:(\d+)", err.read_text())):
            assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
            time.sleep(0.05)
        port = int(found.group(1))
        for _ in range(3):
            assert request(port, "GET", "/v2/health/live").status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = read_lines(out, 3)
    assert [(m["method"], m["path"], m["status"]) for m in lines] == [
        ("GET", "/v2/health/live", "200")
    ] * 3


def test_an_access_log_that_cannot_be_opened_is_one_line(store: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port", "0",
         "--access-log", str(tmp_path / "missing" / "access.log")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot open the access log" in proc.stderr and "Traceback" not in proc.stderr
