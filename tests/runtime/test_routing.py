"""The routing table without a socket: every route from its path and method, 405 with the
methods allowed, 404 for paths without an endpoint, and the answers ``dispatch`` gives for them
byte for byte as a server gives them over a socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebundle.runtime.serve import endpoints
from edgebundle.runtime.serve.dispatch import answer
from edgebundle.runtime.serve.endpoints import App
from edgebundle.runtime.serve.http_request import head_complete, parse_head
from edgebundle.runtime.serve.http_response import encode_response
from edgebundle.runtime.serve.httpio import HttpError, error_response
from edgebundle.runtime.serve.metrics import Metrics
from edgebundle.runtime.serve.routing import PUBLIC_PATHS, ROUTES, endpoint, match
from edgebundle.runtime.serve.serving import ServedModels
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.serverkit import HOST, serve_in_process

LIMIT = 16 << 10
TOKEN = b"s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("method", "path", "name", "params", "function"),
    [
        ("GET", "/", "root", {}, endpoints.describe_everything),
        ("GET", "/v2/models", "models", {}, endpoints.list_models),
        ("GET", "/v2/health/live", "live", {}, endpoints.live),
        ("GET", "/v2/health/ready", "ready", {}, endpoints.server_ready),
        ("GET", "/v2", "server_metadata", {}, endpoints.describe_server),
        (
            "GET",
            "/v2/models/credit",
            "model_metadata",
            {"model": "credit"},
            endpoints.describe_model,
        ),
        (
            "GET",
            "/v2/models/credit/versions/1.2.0",
            "model_metadata",
            {"model": "credit", "version": "1.2.0"},
            endpoints.describe_model,
        ),
        (
            "GET",
            "/v2/models/credit/ready",
            "model_ready",
            {"model": "credit"},
            endpoints.model_ready,
        ),
        (
            "GET",
            "/v2/models/credit/versions/1.2.0/ready",
            "model_ready",
            {"model": "credit", "version": "1.2.0"},
            endpoints.model_ready,
        ),
        ("POST", "/v2/models/credit/infer", "infer", {"model": "credit"}, endpoints.infer),
        (
            "POST",
            "/v2/models/credit/versions/2.0.0-rc.1/infer",
            "infer",
            {"model": "credit", "version": "2.0.0-rc.1"},
            endpoints.infer,
        ),
        ("GET", "/v2/models/credit/stats", "stats", {"model": "credit"}, endpoints.model_stats),
        ("POST", "/invocations", "invocations", {}, endpoints.invocations),
        ("GET", "/metrics", "metrics", {}, endpoints.metrics),
    ],
)
def test_every_route_by_path_and_method(
    method: str, path: str, name: str, params: dict[str, str], function: object
) -> None:
    route, found = match(path)
    assert route is not None and (route.name, found) == (name, params)
    assert endpoint(route, method, path) is function


def test_the_table_is_the_one_tested_above() -> None:
    names = [route.name for route in ROUTES]
    assert names == [
        "root",
        "models",
        "live",
        "ready",
        "server_metadata",
        "model_metadata",
        "model_ready",
        "infer",
        "stats",
        "invocations",
        "metrics",
    ]


def test_head_is_answered_by_the_get_endpoint() -> None:
    for route in ROUTES:
        if "GET" in route.methods:
            assert endpoint(route, "HEAD", "/") is route.methods["GET"]


def test_path_parameters_are_percent_decoded() -> None:
    route, params = match("/v2/models/fraud%20score/versions/1.0.0%2Bbuild.7/ready")
    assert route is not None and route.name == "model_ready"
    assert params == {"model": "fraud score", "version": "1.0.0+build.7"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/credit/infer", "POST"),
        ("HEAD", "/invocations", "POST"),
        ("PUT", "/invocations", "POST"),
        ("DELETE", "/v2/models/credit", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/v2/health/live", "GET, HEAD"),
        ("OPTIONS", "/v2", "GET, HEAD"),
    ],
)
def test_a_method_the_route_lacks_is_405_naming_those_allowed(
    method: str, path: str, allow: str
) -> None:
    route, _ = match(path)
    with pytest.raises(HttpError) as raised:
        endpoint(route, method, path)
    error = raised.value
    assert error.status == 405 and error.headers == (("Allow", allow),)
    assert error.message == f"{method} is not allowed here; use {allow.replace(', ', ' or ')}"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "//",
        "/v2/",
        "/v2/health",
        "/v2/health/live/",
        "/V2",
        "/v2/models/",
        "/v2/models/a/b",
        "/v2/models/credit/versions/",
        "/v2/models/credit/versions/1.0.0/infer/x",
        "/v1/models/credit:predict",
        "/invocations/",
        "/metrics.txt",
    ],
)
def test_a_path_without_an_endpoint_is_404(path: str) -> None:
    route, params = match(path)
    assert (route, params) == (None, {})
    with pytest.raises(HttpError) as raised:
        endpoint(route, "GET", path)
    assert (raised.value.status, raised.value.message) == (404, f"no endpoint '{path}'")


def test_only_the_health_checks_are_public() -> None:
    assert PUBLIC_PATHS == ("/v2/health/live", "/v2/health/ready")


# --- dispatch, against the same requests over a socket ----------------------------------------


@pytest.fixture(scope="module")
def empty_store(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("routing") / "store"
    Store.init(root, [keys.public])
    return root


@pytest.fixture(scope="module")
def app(empty_store: Path) -> App:
    metrics = Metrics()
    models = ServedModels(Store.open(empty_store), 1, metrics, print)
    models.refresh(force=True)
    return App(models, metrics, max_rows=10_000, max_inflight=32)


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def token(request: pytest.FixtureRequest) -> bytes | None:
    value: bytes | None = request.param
    return value


@pytest.fixture(scope="module")
def port(empty_store: Path, token: bytes | None) -> Iterator[int]:
    with serve_in_process(empty_store, token=token) as (running, _):
        yield running.address[1]


def without_date(data: bytes) -> bytes:
    return b"".join(
        line for line in data.splitlines(keepends=True) if not line.startswith(b"Date: ")
    )


def answered_without_a_socket(app: App, data: bytes, token: bytes | None) -> bytes:
    buffer = bytearray(data)
    assert head_complete(buffer, LIMIT)
    head = parse_head(buffer, LIMIT)
    assert head is not None
    if head.refusal is not None:  # answered, and the connection closed with the rest unread
        response, close = error_response(head.refusal), True
    else:
        assert buffer == b""

        def no_body() -> bytes:
            raise AssertionError("no body to read")

        _, response = answer(app, head, no_body, token, print)
        close = head.close
    data = encode_response(response, method=head.method, version=head.version, close=close)
    return without_date(data)


def answered_over_a_socket(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if not data.startswith(b"HEAD "):
            while len(body) < length:
                body += sock.recv(65536)
        return without_date(head + b"\r\n\r\n" + body)


@pytest.mark.parametrize(
    "data",
    [
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /nowhere HTTP/1.1\r\n\r\n",
        b"GET /v2/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /v2/models/credit HTTP/1.1\r\n\r\n",
        b"GET /v2/models/credit/infer HTTP/1.1\r\n\r\n",
        b"DELETE /invocations HTTP/1.1\r\n\r\n",
        b"POST /v2/health/live HTTP/1.1\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\n\r\n",
        b"GET /v2/health/ready HTTP/1.0\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nAuthorization: Bearer s3cret-token-0123456789\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\n\r\n",
        b"GET /v2 HTTP/2.0\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
    ],
    ids=lambda data: data.split(b"\r\n")[0][:40].decode(),
)
def test_dispatch_answers_as_the_server_does_over_a_socket(
    app: App, port: int, token: bytes | None, data: bytes
) -> None:
    assert answered_without_a_socket(app, data, token) == answered_over_a_socket(port, data)


def test_without_the_token_every_path_but_the_health_checks_is_401_even_where_nothing_is(
    app: App,
) -> None:
    for path, status in [("/nowhere", 401), ("/v2", 401), ("/v2/health/live", 200)]:
        head = parse_head(bytearray(f"GET {path} HTTP/1.1\r\n\r\n".encode()), LIMIT)
        assert head is not None
        label, response = answer(app, head, bytes, TOKEN, print)
        assert response.status == status, path
        if status == 401:
            assert response.body == b'{"error":"a bearer token is required"}'
            assert response.headers == (("WWW-Authenticate", 'Bearer realm="edgebundle"'),)
    assert label == "live"


def test_an_unknown_path_is_labelled_other_for_the_metrics(app: App) -> None:
    head = parse_head(bytearray(b"GET /nowhere HTTP/1.1\r\n\r\n"), LIMIT)
    assert head is not None
    assert answer(app, head, bytes, None, print)[0] == "other"
