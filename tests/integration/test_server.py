"""`bundle-runtime serve` as clients see it: an off-the-shelf Open Inference Protocol client,
MLflow-style bodies, Prometheus scrapes, and hostile or broken requests on raw sockets.

One real store with one real float bundle (outputs equal XGBoost's to 1e-6) is served by a
subprocess for the whole module; tests that need small limits or a token start the server in
this process on a thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.conftest import KeyFiles
from tests.support.serverkit import (
    HOST,
    Built,
    Reply,
    ServerProcess,
    build,
    infer_body,
    init_store,
    install,
    post_json,
    raw,
    read_replies,
    read_reply,
    request,
    rows_json,
    serve_in_process,
    serve_process,
)
from tests.support.xgbmodels import NAMES, features, run

pytestmark = pytest.mark.timeout(120)
INFER = "/v2/models/credit/infer"


@pytest.fixture(scope="module")
def credit(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(keys, tmp_path_factory.mktemp("bundles"), "credit", "1.0.0", rounds=30)


@pytest.fixture(scope="module")
def store(keys: KeyFiles, credit: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = init_store(keys, tmp_path_factory.mktemp("device") / "store")
    install(root, credit.bundle)
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_process(store, tmp_path_factory.mktemp("log") / "serve.log") as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(f"{HOST}:{server.port}", network_timeout=10.0)
    yield connection
    connection.close()


def triton_input(x: np.ndarray[Any, Any], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), "FP32" if x.dtype == np.float32 else "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def assert_json_error(reply: Reply, status: int, fragment: str = "") -> str:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    message = reply.json()["error"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message
    assert fragment in message
    return message


# --- Open Inference Protocol v2 with tritonclient ---------------------------------------------


def test_triton_client_default_binary_mode_matches_xgboost(
    client: triton.InferenceServerClient, credit: Built
) -> None:
    x = features(64, seed=5)  # with missing values
    result = client.infer("credit", [triton_input(x)])
    expected = credit.trained.predict(x)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), (expected > 0.5).astype(np.int64))
    assert result.get_output("probability")["parameters"] == {"binary_data_size": 64 * 4}
    assert result.get_response()["model_version"] == "1.0.0"


def test_triton_client_json_mode_echoes_id(
    client: triton.InferenceServerClient, credit: Built
) -> None:
    x = features(7, seed=6)
    outputs = [triton.InferRequestedOutput("probability", binary_data=False)]
    result = client.infer(
        "credit", [triton_input(x, binary=False)], outputs=outputs, request_id="req-42"
    )
    response = result.get_response()
    assert response["id"] == "req-42"
    assert [o["name"] for o in response["outputs"]] == ["probability"]  # only what was asked
    assert "data" in response["outputs"][0]
    expected = credit.trained.predict(x)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-6)


def test_triton_client_fp64_is_rounded_to_float32(
    client: triton.InferenceServerClient, credit: Built
) -> None:
    x = features(9, seed=7).astype(np.float64) + 1e-9  # digits float32 cannot hold
    result = client.infer("credit", [triton_input(x)], model_version="1.0.0")
    expected = credit.trained.predict(x.astype(np.float32))
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-6)


def test_triton_client_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("credit") and client.is_model_ready("credit", "1.0.0")
    assert not client.is_model_ready("credit", "9.9.9")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = client.get_model_metadata("credit")
    assert metadata["versions"] == ["1.0.0"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 6]}]
    assert metadata["outputs"] == [
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["parameters"]["features"] == list(NAMES)
    assert metadata["parameters"]["task"] == "binary"


def test_triton_client_unknown_version_is_404(client: triton.InferenceServerClient) -> None:
    x = features(2, seed=8)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("credit", [triton_input(x)], model_version="2.0.0")
    assert raised.value.status() == "404"
    assert "serves 1.0.0" in raised.value.message()


def test_json_infer_nested_data_and_null_as_missing(server: ServerProcess, credit: Built) -> None:
    x = features(5, seed=9, missing=0.3)
    body = infer_body(x)
    body["inputs"][0]["data"] = rows_json(x)  # nested [N][F] instead of flat
    reply = post_json(server.port, INFER, body)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["probability"]["shape"] == [5]
    expected = credit.trained.predict(x)
    np.testing.assert_allclose(outputs["probability"]["data"], expected, rtol=0, atol=1e-6)


# --- the binary tensor data extension on a raw socket ------------------------------------------


def binary_body(
    x: npt.NDArray[Any], datatype: str, outputs: list[dict[str, Any]] | None = None
) -> tuple[bytes, int]:
    """A binary-extension body as the extension lays it out: the JSON header, then the tensor's
    little-endian row-major bytes; and the header's length."""
    data = x.astype(x.dtype.newbyteorder("<")).tobytes()
    header: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype,
                    "parameters": {"binary_data_size": len(data)}}],
    }
    if outputs is not None:
        header["outputs"] = outputs
    text = json.dumps(header).encode()
    return text + data, len(text)


def post_binary(port: int, body: bytes, header_length: int | str) -> Reply:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            raw_post(
                INFER,
                "Content-Type: application/octet-stream\r\n"
                f"Inference-Header-Content-Length: {header_length}\r\n"
                f"Content-Length: {len(body)}\r\n",
                body,
            )
        )
        return read_reply(sock)


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("FP16", "<f2"), ("INT32", "<i4"),
                            ("INT64", "<i8"), ("UINT8", "u1")],
)
def test_binary_tensor_of_each_datatype_answers_in_json(
    server: ServerProcess, credit: Built, datatype: str, dtype: str
) -> None:
    x = features(16, seed=21, missing=0.2)  # NaN: missing, in the float datatypes
    if np.dtype(dtype).kind != "f":
        x = np.nan_to_num(np.abs(x) * 10).round()
    sent = np.clip(x, -60000, 60000).astype(dtype)  # within FP16's range
    body, length = binary_body(sent, datatype)
    reply = post_binary(server.port, body, length)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert "Inference-Header-Content-Length" not in reply.headers
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    expected = credit.trained.predict(sent.astype(np.float32))
    np.testing.assert_allclose(outputs["probability"]["data"], expected, rtol=0, atol=1e-6)


def test_binary_outputs_when_asked_follow_the_json_header(
    server: ServerProcess, credit: Built
) -> None:
    x = features(8, seed=22, missing=0.1)
    asked = [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probability"}]
    body, length = binary_body(x, "FP32", asked)
    reply = post_binary(server.port, body, length)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/octet-stream"
    header_length = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.body[:header_length])
    label, probability = header["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [8],
                     "parameters": {"binary_data_size": 64}}
    expected = credit.trained.predict(x)
    labels = np.frombuffer(reply.body[header_length:], "<i8")
    np.testing.assert_array_equal(labels, (expected > 0.5).astype(np.int64))
    np.testing.assert_allclose(probability["data"], expected, rtol=0, atol=1e-6)


def good_binary() -> tuple[bytes, int]:
    return binary_body(features(2, seed=23), "FP32")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda b, n: (b, n + len(b)), "but the body holds"),  # the header beyond the body
        (lambda b, n: (b, "12x"), "must be a decimal number of bytes"),
        (lambda b, n: (b, -1), "must be a decimal number of bytes"),
        (lambda b, n: (b + b"\0\0\0\0", n), "the body holds 52 bytes of binary data; "
         "binary_data_size says 48"),
        (lambda b, n: (b[:-4], n), "the body holds 44 bytes of binary data"),
        (lambda b, n: (b.replace(b'"shape": [2,', b'"shape": [3,'), n),
         "binary_data_size is 48; the shape needs 72 bytes"),
        (lambda b, n: (b.replace(b'"FP32"', b'"BF16"'), n), "input datatype must be one of"),
        (lambda b, n: (b.replace(b'"FP32"', b'"FP64"'), n), "the shape needs 96 bytes"),
        (lambda b, n: (b.replace(b'"binary_data_size": 48', b'"binary_data_size": -48'), n + 1),
         "binary_data_size must be a non-negative integer"),
        (lambda b, n: (b, n - 1), "invalid JSON body"),
        (lambda b, n: (b, n + 4), "JSON body is not valid UTF-8"),  # tensor bytes read as JSON
    ],
)
def test_bad_binary_requests_are_400_naming_the_problem(
    server: ServerProcess, change: Any, fragment: str
) -> None:
    body, length = change(*good_binary())
    assert_json_error(post_binary(server.port, body, length), 400, fragment)


def test_binary_requests_keep_the_body_and_row_limits(store: Path) -> None:
    with serve_in_process(store, max_body_bytes=300, max_rows=5) as (running, _):
        port = running.address[1]
        body, length = binary_body(np.ones((6, 6), np.float32), "FP32")
        assert_json_error(post_binary(port, body, length), 413, "6 rows exceed the limit of 5")
        body, length = binary_body(np.ones((5, 6), np.float64), "FP64")
        assert_json_error(post_binary(port, body, length), 413, "over the limit of 300 bytes")
        body, length = binary_body(np.ones((5, 6), np.float32), "FP32")
        assert post_binary(port, body, length).status == 200


def test_triton_client_sends_integer_tensors(
    client: triton.InferenceServerClient, credit: Built
) -> None:
    x = np.nan_to_num(np.abs(features(5, seed=24)) * 10).astype(np.int32)
    tensor = triton.InferInput("input", list(x.shape), "INT32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer("credit", [tensor])
    expected = credit.trained.predict(x.astype(np.float32))
    np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=0, atol=1e-6)


# --- MLflow-style /invocations ------------------------------------------------------------------


def stdin_records(store: Path, x: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """What `bundle-runtime score --store` answers for the same rows, ids r0, r1, ..."""
    lines = "".join(
        json.dumps({"id": f"r{i}", **dict(zip(NAMES, row, strict=True))}) + "\n"
        for i, row in enumerate(rows_json(x))
    )
    proc = run("bundle-runtime", ["score", "--store", str(store)], lines)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def invocation_bodies(x: np.ndarray[Any, Any]) -> dict[str, Any]:
    rows = rows_json(x)
    ids = [f"r{i}" for i in range(len(rows))]
    pairs = list(zip(ids, rows, strict=True))
    records = [{"id": i, **dict(zip(NAMES, row, strict=True))} for i, row in pairs]
    columns = ["id", *NAMES]
    return {
        "dataframe_split": {"columns": columns, "data": [[i, *row] for i, row in pairs]},
        "dataframe_records": records,
        "instances": records,
        "inputs": {name: [record[name] for record in records] for name in columns},
    }


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_invocations_json_forms_answer_like_stdin_scoring(
    server: ServerProcess, store: Path, form: str
) -> None:
    x = features(12, seed=10, missing=0.2)
    reply = post_json(server.port, "/invocations", {form: invocation_bodies(x)[form]})
    assert reply.status == 200, reply.body
    assert reply.json() == {"predictions": stdin_records(store, x)}


def test_invocations_array_rows_and_model_query(server: ServerProcess, store: Path) -> None:
    x = features(4, seed=11)
    reply = post_json(server.port, "/invocations?model=credit", {"inputs": rows_json(x)})
    assert reply.status == 200, reply.body
    expected = [{k: v for k, v in r.items() if k != "id"} for r in stdin_records(store, x)]
    assert reply.json() == {"predictions": expected}


@pytest.mark.parametrize("form", ["instances", "inputs", "dataframe_split"])
def test_invocations_arrays_of_ints_floats_and_nulls_answer_like_stdin_scoring(
    server: ServerProcess, store: Path, form: str
) -> None:
    x = features(8, seed=13, missing=0.2)
    # Whole numbers as JSON integers: the one-call conversion must read them as the parser does.
    rows = [[int(v) if v is not None and v.is_integer() else v for v in r] for r in rows_json(x)]
    body = {form: {"data": rows}} if form == "dataframe_split" else {form: rows}
    reply = post_json(server.port, "/invocations", body)
    assert reply.status == 200, reply.body
    expected = [{k: v for k, v in r.items() if k != "id"} for r in stdin_records(store, x)]
    assert reply.json() == {"predictions": expected}


def test_invocations_csv_answers_like_stdin_scoring(server: ServerProcess, store: Path) -> None:
    x = features(6, seed=12, missing=0.3)
    header = ",".join(["id", *(f'"{n}"' if " " in n else n for n in NAMES)])
    cells = [
        ",".join([f"r{i}", *("" if v is None else repr(v) for v in row)])
        for i, row in enumerate(rows_json(x))
    ]
    body = ("\n".join([header, *cells]) + "\n").encode()
    reply = request(server.port, "POST", "/invocations", body, {"Content-Type": "text/csv"})
    assert reply.status == 200, reply.body
    assert reply.json() == {"predictions": stdin_records(store, x)}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [[1, 2, 3, 4, 5, 6], {"age": "old"}]}, "instances[1]: feature 'age'"),
        ({"instances": [[1, 2, 3]]}, "instances[0]: expected 6 values, got 3"),
        ({"dataframe_records": [{"agee": 1}]}, "dataframe_records[0]: unknown key 'agee'"),
        (
            {"dataframe_split": {"columns": ["age"], "data": [[1], [1, 2]]}},
            "dataframe_split.data[1]: expected an array of 1 values",
        ),
        ({"instances": [[True, 2, 3, 4, 5, 6], "x"]}, "(1 more bad rows)"),
    ],
)
def test_invocations_bad_row_is_422_naming_it(
    server: ServerProcess, body: dict[str, Any], fragment: str
) -> None:
    assert_json_error(post_json(server.port, "/invocations", body), 422, fragment)


def test_invocations_id_out_of_range_is_422(server: ServerProcess) -> None:
    body = b'{"instances": [{"id": 1e400, "age": 30}]}'
    headers = {"Content-Type": "application/json"}
    reply = request(server.port, "POST", "/invocations", body, headers)
    assert_json_error(reply, 422, "instances[0]: 'id' is a number out of range")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"instances": [[1, 2', "invalid JSON body"),
        (b'{"instances": [[NaN, 1, 2, 3, 4, 5]]}', "NaN, which is not JSON"),
        (b'{"instances": [[Infinity, 1, 2, 3, 4, 5]]}', "Infinity"),
        (b'{"instances": [], "instances": []}', "duplicate key"),
        (b'{"rows": []}', "unknown key 'rows'"),
        (b'{"instances": [], "inputs": []}', "exactly one of"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"inputs": {"age": [1, 2], "income": [1]}}', "different lengths"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_invocations_malformed_body_is_400(
    server: ServerProcess, body: bytes, fragment: str
) -> None:
    reply = request(server.port, "POST", "/invocations", body, {"Content-Type": "application/json"})
    assert_json_error(reply, 400, fragment)


def test_invocations_csv_without_a_feature_column_scores_it_as_missing(
    server: ServerProcess,
) -> None:
    # As a key left out of a JSON object: the columns it lacks are missing values.
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    reply = request(server.port, "POST", "/invocations", b"age,income\n1,2\n", headers)
    assert reply.status == 200, reply.body
    by_key = post_json(server.port, "/invocations", {"instances": [{"age": 1, "income": 2}]})
    assert reply.json() == by_key.json()


def test_invocations_bad_csv(server: ServerProcess) -> None:
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    reply = request(server.port, "POST", "/invocations", b"age,income,age\n1,2,3\n", headers)
    assert_json_error(reply, 400, "CSV header: CSV header repeats column 'age'")
    body = (",".join(f'"{n}"' for n in NAMES) + "\n1,2,3,4,5,six\n").encode()
    reply = request(server.port, "POST", "/invocations", body, headers)
    assert_json_error(reply, 422, "line 2: column 'utilization': expected a number, got 'six'")


# --- malformed inference requests ---------------------------------------------------------------


def good_infer() -> dict[str, Any]:
    return infer_body(np.ones((1, 6), dtype=np.float32))


def with_input(**changes: Any) -> dict[str, Any]:
    body = good_infer()
    body["inputs"][0].update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (with_input(data=["1", 2, 3, 4, 5, 6]), "value 0: expected a number or null, got a string"),
        (with_input(data=[True, 2, 3, 4, 5, 6]), "got a boolean"),
        (with_input(data=[1, 2, 3]), "holds 3 values; shape [1, 6] needs 6"),
        (with_input(data=[[1, 2, 3], [4, 5, 6]]), "nested input 'data' must be 1 arrays of 6"),
        (with_input(shape=[1, 5]), "it has 6 features"),
        (with_input(shape=[6]), "input shape must be [N, 6]"),
        (with_input(shape=[-1, 6]), "input shape must be [N, 6]"),
        (with_input(datatype="BOOL"), "datatype must be one of FP32, FP64, FP16, INT8"),
        (with_input(name="x"), "unknown input 'x'"),
        (with_input(parameters={"shared_memory_region": "r"}), "shared memory"),
        (with_input(colour="red"), "unknown key 'colour'"),
        ({"inputs": []}, "got 0 inputs"),
        ({**good_infer(), "id": 7}, "'id' must be a string"),
        ({**good_infer(), "outputs": [{"name": "margin"}]}, "unknown output 'margin'"),
        ({**good_infer(), "outputs": [{"name": "label"}, {"name": "label"}]}, "requested twice"),
        (
            {**good_infer(), "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
            "classification",
        ),
        ({**good_infer(), "parameters": {"binary_data_output": "yes"}}, "must be true or false"),
    ],
)
def test_malformed_infer_request_is_400(
    server: ServerProcess, body: dict[str, Any], fragment: str
) -> None:
    assert_json_error(post_json(server.port, INFER, body), 400, fragment)


@pytest.mark.parametrize("literal", ["1e999", "-1" + "0" * 400])
def test_number_beyond_float64_is_400(server: ServerProcess, literal: str) -> None:
    body = json.dumps(good_infer()).replace("[1.0,", f"[{literal},", 1).encode()
    reply = request(server.port, "POST", INFER, body, {"Content-Type": "application/json"})
    assert_json_error(reply, 400, "input 'data' holds a number out of range")


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/v2/models/nope", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/credit/versions/1.0.1", 404, "it serves 1.0.0"),
        ("GET", "/v2/models/credit/versions/not-semver/ready", 404, "no version"),
        ("POST", "/v2/models/nope/infer", 404, "unknown model"),
        ("POST", "/invocations?model=nope", 404, "unknown model"),
        ("GET", "/v1/models/credit:predict", 404, "no endpoint"),
        ("GET", "/v2/", 404, "no endpoint"),
    ],
)
def test_unknown_paths_models_and_versions_are_404(
    server: ServerProcess, method: str, path: str, status: int, fragment: str
) -> None:
    headers = {"Content-Type": "application/json"}
    body = json.dumps(good_infer()).encode() if method == "POST" else None
    assert_json_error(request(server.port, method, path, body, headers), status, fragment)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", INFER, "POST"),
        ("PUT", "/invocations", "POST"),
        ("DELETE", "/v2/models/credit", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(
    server: ServerProcess, method: str, path: str, allow: str
) -> None:
    reply = request(server.port, method, path)
    assert_json_error(reply, 405, f"{method} is not allowed")
    assert reply.headers["Allow"] == allow


def test_head_is_get_without_body(server: ServerProcess) -> None:
    reply = request(server.port, "HEAD", "/v2/health/live")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["Content-Length"] == str(len(b'{"live":true}'))


@pytest.mark.parametrize(
    ("path", "headers", "fragment"),
    [
        (INFER, {"Content-Type": "text/plain"}, "send application/json or application/octet"),
        ("/invocations", {"Content-Type": "text/plain"}, "text/csv"),
        ("/invocations", {}, "Content-Type is missing"),
        (INFER, {"Content-Encoding": "gzip"}, "Content-Encoding 'gzip' is not supported"),
    ],
)
def test_wrong_content_type_is_415(
    server: ServerProcess, path: str, headers: dict[str, str], fragment: str
) -> None:
    body = json.dumps(good_infer()).encode()
    assert_json_error(request(server.port, "POST", path, body, headers), 415, fragment)


def raw_post(path: str, headers: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (raw_post(INFER, "Content-Type: application/json\r\n"), 411, "Content-Length"),
        (
            raw_post(INFER, "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            411,
            "Transfer-Encoding is not supported",
        ),
        (raw_post(INFER, "Content-Length: ten\r\n"), 400, "invalid Content-Length"),
        (raw_post(INFER, "Content-Length: 2\r\nContent-Length: 3\r\n", b"{}"), 400, "invalid"),
        (raw_post(INFER, "Content-Length: 99999999999999999999\r\n"), 413, "over the limit"),
        (raw_post(INFER, f"Content-Length: {2 << 20}\r\n"), 413, "over the limit of 1048576"),
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"GET /v2 HTTP/1.\xb2\r\n\r\n", 400, "malformed request line"),  # a non-ASCII digit
        (b"GET /v2 HTTP/1.1\r\nNo colon\r\n\r\n", 400, "malformed request line or header"),
        (b"GET /v2 HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed request line or header"),
        (b"GET /v2 HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400, "malformed request line"),
        (b"GET /v2/health/live HTTP/2.0\r\n\r\n", 505, "unsupported HTTP version"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 501, "unsupported method"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "request line too long"),
        (
            b"GET /v2 HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
            431,
            "header section too large",
        ),
        (
            b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
            431,
            "header section too large",
        ),
    ],
)
def test_malformed_http_is_answered_in_json_and_closed(
    server: ServerProcess, data: bytes, status: int, fragment: str
) -> None:
    reply = raw(server.port, data)
    assert_json_error(reply, status, fragment)
    # Without Content-Length a request has no body, so the connection is still in step.
    in_step = b"Content-Length" not in data and b"Transfer-Encoding" not in data and status == 411
    assert reply.headers["Connection"] == (None if in_step else "close")
    assert request(server.port, "GET", "/v2/health/live").status == 200


def test_header_names_are_case_insensitive(server: ServerProcess) -> None:
    body = json.dumps({"instances": rows_json(features(1, seed=14))}).encode()
    head = f"content-type: application/json\r\ncONTENT-lENGTH: {len(body)}\r\n"
    reply = raw(server.port, raw_post("/invocations", head, body))
    assert reply.status == 200, reply.body
    assert reply.headers["Connection"] is None  # keep-alive: the body was read


def test_oversized_body_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(raw_post(INFER, "Content-Length: 50000000\r\n"))
        started = time.monotonic()
        reply = read_reply(sock)  # the body never comes: the answer must not wait for it
    assert_json_error(reply, 413, "50000000 bytes is over the limit")
    assert time.monotonic() - started < 2


def test_keep_alive_connection_survives_error_answers(server: ServerProcess) -> None:
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        body = json.dumps(with_input(datatype="BYTES")).encode()
        headers = f"Content-Length: {len(body)}\r\n"
        sock.sendall(raw_post(INFER, headers, body))
        assert read_reply(sock).status == 400
        body = json.dumps(good_infer()).encode()
        sock.sendall(raw_post(INFER, f"Content-Length: {len(body)}\r\n", body))
        reply = read_reply(sock)
    assert reply.status == 200 and reply.headers["Connection"] is None


# --- limits, slow clients, busy server (in process, small limits) --------------------------------


def test_slow_body_times_out_while_others_are_served(store: Path) -> None:
    with serve_in_process(store, read_timeout=0.5) as (running, _):
        port = running.address[1]
        with socket.create_connection((HOST, port), timeout=10) as slow:
            slow.sendall(raw_post(INFER, "Content-Length: 200\r\n", b'{"inputs": ['))
            started = time.monotonic()
            assert request(port, "GET", "/v2/health/live").status == 200
            reply = read_reply(slow)
            elapsed = time.monotonic() - started
            assert slow.recv(1) == b""  # and closed
        assert_json_error(reply, 408, "did not arrive in time")
        assert 0.3 < elapsed < 3
        assert request(port, "GET", "/v2/health/ready").status == 200


def test_trickled_request_is_cut_off_at_the_deadline(store: Path) -> None:
    """One byte every 50 ms resets a per-recv timeout forever; the request deadline does not."""
    with serve_in_process(store, read_timeout=0.5) as (running, _):
        started = time.monotonic()
        closed_after = None
        with socket.create_connection((HOST, running.address[1]), timeout=5) as sock:
            for byte in b"GET /v2/health/live HTTP/1.1\r\nX-Slow: " + b"z" * 60:
                try:
                    sock.send(bytes([byte]))
                    time.sleep(0.05)
                except OSError:  # the server closed it
                    closed_after = time.monotonic() - started
                    break
        assert closed_after is not None and closed_after < 2.5


def test_idle_keep_alive_connection_is_closed(store: Path) -> None:
    with (
        serve_in_process(store, idle_timeout=0.3) as (running, _),
        socket.create_connection((HOST, running.address[1]), timeout=5) as sock,
    ):
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(sock).status == 200
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.2 < time.monotonic() - started < 3


def test_silent_new_connection_is_closed_after_the_read_timeout(store: Path) -> None:
    with (
        serve_in_process(store, read_timeout=0.3, idle_timeout=30) as (running, _),
        socket.create_connection((HOST, running.address[1]), timeout=5) as sock,
    ):
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 3


def test_too_many_rows_is_413(store: Path) -> None:
    with serve_in_process(store, max_rows=5) as (running, _):
        port = running.address[1]
        x = np.ones((6, 6), dtype=np.float32)
        assert_json_error(
            post_json(port, INFER, infer_body(x)), 413, "6 rows exceed the limit of 5"
        )
        body = {"instances": rows_json(x)}
        assert_json_error(post_json(port, "/invocations", body), 413, "6 rows exceed")
        assert post_json(port, INFER, infer_body(x[:5])).status == 200


def test_small_body_limit(store: Path) -> None:
    with serve_in_process(store, max_body_bytes=100) as (running, _):
        body = json.dumps(infer_body(np.ones((3, 6), dtype=np.float32))).encode()
        reply = request(running.address[1], "POST", INFER, body)
        assert_json_error(reply, 413, f"body of {len(body)} bytes is over the limit of 100 bytes")


def test_busy_server_answers_503_at_once(store: Path) -> None:
    with serve_in_process(store, max_inflight=1) as (running, _):
        port = running.address[1]
        body = json.dumps(good_infer()).encode()
        with socket.create_connection((HOST, port), timeout=10) as first:
            # Headers and half the body: this request holds the only scoring slot.
            first.sendall(raw_post(INFER, f"Content-Length: {len(body)}\r\n", body[:10]))
            time.sleep(0.2)
            busy = request(port, "POST", INFER, body)
            assert_json_error(busy, 503, "server busy")
            assert busy.headers["Retry-After"] == "1"
            first.sendall(body[10:])
            assert read_reply(first).status == 200
        assert request(port, "POST", INFER, body).status == 200


def test_a_connection_over_the_limit_closes_the_longest_idle_one(store: Path) -> None:
    """Every connection busy answers 503 (test_server_admission.py); idle ones make room."""
    with serve_in_process(store, max_connections=2) as (running, _):
        port = running.address[1]
        held = [socket.create_connection((HOST, port), timeout=5) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_reply(sock).status == 200
            assert raw(port, b"GET /v2 HTTP/1.1\r\n\r\n").status == 200
            assert held[0].recv(1) == b""  # the one idle longest, closed
            held[1].sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_reply(held[1]).status == 200
        finally:
            for sock in held:
                sock.close()


def test_unexpected_exception_is_a_generic_500_and_one_log_line(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_in_process(store) as (running, log):
        model = running._app.models.current.models["credit"]

        def broken(x: object) -> None:
            raise RuntimeError("secret detail\nsecond line")

        monkeypatch.setattr(model.scorer, "predict", broken)
        reply = post_json(running.address[1], INFER, good_infer())
        assert reply.json() == {"error": "internal server error"} and reply.status == 500
        assert log[-1] == "error: POST infer: RuntimeError: secret detail"
        assert request(running.address[1], "GET", "/v2/health/live").status == 200


def test_a_connection_no_thread_can_wait_for_is_closed_and_the_rest_served(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_in_process(store) as (running, log):
        port = running.address[1]
        body = json.dumps(good_infer()).encode()

        def no_threads(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", no_threads)
        with socket.create_connection((HOST, port), timeout=10) as waiting:
            # Half a body: this request must wait for the rest on a thread of its own.
            waiting.sendall(raw_post(INFER, f"Content-Length: {len(body)}\r\n", body[:10]))
            assert waiting.recv(1) == b""  # closed
        assert log[-1] == "error: connection failed: RuntimeError: can't start new thread"
        # Sent whole in one write (http.client writes the body apart), so the loop serves it.
        whole = raw(port, raw_post(INFER, f"Content-Length: {len(body)}\r\n", body))
        assert whole.status == 200


def test_a_bug_in_the_loop_costs_one_connection_not_the_server(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgebundle.runtime.serve.connection import Connection as _Connection

    with serve_in_process(store) as (running, log):
        port = running.address[1]

        def broken(self: _Connection) -> None:
            raise ValueError("bug")

        monkeypatch.setattr(_Connection, "begin_request", broken)
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1) == b""  # closed
        assert log[-1] == "error: connection failed: ValueError: bug"
        monkeypatch.undo()
        assert request(port, "GET", "/v2/health/live").status == 200


# --- bearer token -------------------------------------------------------------------------------


TOKEN = b"s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        ("Basic czNjcmV0", 401),
        ("Bearer " + TOKEN.decode(), 200),
        ("bearer " + TOKEN.decode(), 200),
    ],
)
def test_token_required_except_on_health(
    store: Path, authorization: str | None, status: int
) -> None:
    with serve_in_process(store, token=TOKEN) as (running, _):
        port = running.address[1]
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path in [("GET", "/v2"), ("GET", "/metrics"), ("GET", "/nowhere")]:
            reply = request(port, method, path, headers=headers)
            if status == 401:
                assert_json_error(reply, 401)
                assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="edgebundle"')
            else:
                assert reply.status in (200, 404)
        assert post_json(port, INFER, good_infer(), headers).status == status
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert request(port, "GET", path).status == 200


def test_token_file_readable_by_others_is_refused(store: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    token_file.chmod(0o644)
    proc = run("bundle-runtime", ["serve", "--store", str(store), "--token-file", str(token_file)])
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: token file {token_file} is accessible to other users; chmod o-rw it"
    )


def test_triton_client_with_token_over_the_cli(store: Path, credit: Built, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")  # the trailing newline is not part of the token
    token_file.chmod(0o600)
    with serve_process(store, tmp_path / "serve.log", "--token-file", str(token_file)) as process:
        connection = triton.InferenceServerClient(f"{HOST}:{process.port}", network_timeout=10.0)
        try:
            x = features(3, seed=13)
            with pytest.raises(InferenceServerException) as raised:
                connection.infer("credit", [triton_input(x)])
            assert raised.value.status() == "401"
            auth = {"Authorization": "Bearer " + TOKEN.decode()}
            result = connection.infer("credit", [triton_input(x)], headers=auth)
            expected = credit.trained.predict(x)
            np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-6)
        finally:
            connection.close()


# --- metrics --------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = request(port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_errors_rows_and_latency(server: ServerProcess) -> None:
    port = server.port
    before = scrape(port)
    x = np.ones((4, 6), dtype=np.float32)
    for _ in range(3):
        assert post_json(port, INFER, infer_body(x)).status == 200
    assert post_json(port, INFER, with_input(datatype="INT8")).status == 400
    assert request(port, "GET", "/v2/models/ghost").status == 404
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"model": "credit", "endpoint": "infer", "code": "200"}
    assert delta("edgebundle_requests_total", **ok) == 3
    assert delta("edgebundle_request_errors_total", **ok) == 0
    bad = {"model": "credit", "endpoint": "infer", "code": "400"}
    assert delta("edgebundle_requests_total", **bad) == 1
    assert delta("edgebundle_request_errors_total", **bad) == 1
    # An unknown model name is not a label value: clients cannot grow the series.
    ghost = {"model": "", "endpoint": "model_metadata", "code": "404"}
    assert delta("edgebundle_request_errors_total", **ghost) == 1
    assert delta("edgebundle_rows_scored_total", model="credit") == 12
    timing = {"model": "credit", "endpoint": "infer"}
    assert delta("edgebundle_request_duration_seconds_count", **timing) == 4
    assert delta("edgebundle_request_duration_seconds_bucket", **timing, le="+Inf") == 4
    assert delta("edgebundle_request_duration_seconds_sum", **timing) > 0


def test_metrics_describe_the_served_model(server: ServerProcess, credit: Built) -> None:
    samples = scrape(server.port)
    infos = [labels for (name, labels), value in samples.items() if name == "edgebundle_model_info"]
    assert len(infos) == 1
    info = dict(infos[0])
    assert info["model"] == "credit" and info["version"] == "1.0.0"
    assert info["precision"] == "float" and len(info["sha256"]) == 64
    assert metric(samples, "edgebundle_model_loads_total", model="credit", result="success") == 1
    assert metric(samples, "edgebundle_model_last_reload_success", model="credit") == 1
    assert metric(samples, "edgebundle_uptime_seconds") > 0
    assert abs(metric(samples, "process_start_time_seconds") - time.time()) < 3600


# --- concurrency ----------------------------------------------------------------------------------


def test_eight_keep_alive_clients_200_requests_each(server: ServerProcess, credit: Built) -> None:
    x = features(1600, seed=14)
    expected = credit.trained.predict(x)
    failures: list[str] = []

    def client(worker: int) -> None:
        import http.client

        connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
        try:
            connection.connect()
            first_socket = connection.sock
            for i in range(worker * 200, worker * 200 + 200):
                body = json.dumps(infer_body(x[i : i + 1])).encode()
                connection.request("POST", INFER, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                probability = answer["outputs"][0]["data"][0]
                if response.status != 200 or abs(probability - expected[i]) > 1e-6:
                    failures.append(f"row {i}: {response.status} {answer}")
            if connection.sock is not first_socket:
                failures.append(f"worker {worker}: the connection was not kept alive")
        except Exception as e:
            failures.append(f"worker {worker}: {e!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


# --- how requests arrive: split anywhere, pipelined, big, answers read slowly --------------------


def infer_request(x: npt.NDArray[np.float32]) -> bytes:
    body = json.dumps(infer_body(x)).encode()
    headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return raw_post(INFER, headers, body)


def probability(reply: Reply) -> float:
    assert reply.status == 200, reply.body
    value: float = reply.json()["outputs"][0]["data"][0]
    return value


def test_a_request_split_anywhere_is_answered_the_same(
    server: ServerProcess, credit: Built
) -> None:
    """The server answers a request once all of it is there, wherever the client's writes cut it."""
    x = features(1, seed=21)
    expected = credit.trained.predict(x)[0]
    data = infer_request(x)
    line, head = data.index(b"\r\n"), data.index(b"\r\n\r\n")
    cuts = {1, line - 1, line, line + 1, line + 2, *range(head - 1, head + 6), len(data) - 1}
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        for cut in sorted(cuts):
            sock.sendall(data[:cut])
            time.sleep(0.05)  # the first part arrives, and is looked at, on its own
            sock.sendall(data[cut:])
            reply = read_reply(sock)
            assert abs(probability(reply) - expected) <= 1e-6, cut
            assert reply.headers["Connection"] is None  # kept alive for the next one


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    server: ServerProcess, credit: Built
) -> None:
    x = features(1, seed=24)
    body = json.dumps(infer_body(x)).encode()
    headers = f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(raw_post(INFER, headers))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = read_reply(sock)
    assert abs(probability(reply) - credit.trained.predict(x)[0]) <= 1e-6


def test_pipelined_requests_are_answered_in_order(server: ServerProcess, credit: Built) -> None:
    x = features(3, seed=22)
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(b"".join(infer_request(x[i : i + 1]) for i in range(3)) + live)
        replies = read_replies(sock, 4)
    expected = credit.trained.predict(x)
    for reply, want in zip(replies[:3], expected, strict=True):
        assert abs(probability(reply) - want) <= 1e-6
    assert replies[3].json() == {"live": True}


def test_a_pipelining_client_takes_turns_with_the_others(server: ServerProcess) -> None:
    """2,000 pipelined requests arrive in 64 KiB reads of ~1,600; another client's request is
    answered after a few of them, not after a whole read's worth."""
    live = {"model": "", "endpoint": "live", "code": "200"}
    before = metric(scrape(server.port), "edgebundle_requests_total", **live)
    with socket.create_connection((HOST, server.port), timeout=30) as flood:
        flood.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        answered = metric(scrape(server.port), "edgebundle_requests_total", **live) - before
        replies = read_replies(flood, 2000)
    assert answered < 1000, answered
    assert all(reply.json() == {"live": True} for reply in replies)


def test_a_big_body_is_scored_and_its_connection_kept(server: ServerProcess, credit: Built) -> None:
    x = features(2000, seed=23)
    big = infer_request(x)
    assert len(big) > 64 << 10  # scored on a thread of its own, off the loop
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(big)
        reply = read_reply(sock)
        assert reply.status == 200 and reply.headers["Connection"] is None
        scored = np.array(reply.json()["outputs"][0]["data"])
        np.testing.assert_allclose(scored, credit.trained.predict(x), atol=1e-6)
        sock.sendall(infer_request(x[:1]))  # and the loop serves the connection again
        assert abs(probability(read_reply(sock)) - scored[0]) <= 1e-6


def test_a_client_that_stops_reading_holds_up_no_one(server: ServerProcess) -> None:
    """A pipelining client that does not read its answers fills its socket; the server waits
    for it on the side, answers everyone else meanwhile, then the rest in order."""
    count = 20_000
    pair = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
    live = {"model": "", "endpoint": "live", "code": "200"}
    before = metric(scrape(server.port), "edgebundle_requests_total", **live)
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(30)
        slow.connect((HOST, server.port))
        sender = threading.Thread(target=slow.sendall, args=(pair * (count // 2),))
        sender.start()
        previous, answered = -1.0, before
        deadline = time.monotonic() + 30
        while answered != previous or answered == before:  # until it answers no more of them
            assert time.monotonic() < deadline
            time.sleep(0.3)  # and each scrape is answered while the slow client is waited for
            previous = answered
            answered = metric(scrape(server.port), "edgebundle_requests_total", **live)
        assert answered - before < count // 2  # stuck on the unread answers, not done
        replies = read_replies(slow, count)
        sender.join(timeout=30)
    assert [r.json() == {"live": True} for r in replies[::2]] == [True] * (count // 2)
    assert all(r.status == 200 and "extensions" in r.json() for r in replies[1::2])


def test_server_process_is_still_healthy(server: ServerProcess) -> None:
    """Everything above sent it garbage; it answers, and logged no traceback."""
    assert server.proc.poll() is None
    assert request(server.port, "GET", "/v2/health/ready").json() == {"ready": True}
    assert "Traceback" not in server.stderr()


def test_port_in_use_is_one_error_line(store: Path, server: ServerProcess) -> None:
    proc = run("bundle-runtime", ["serve", "--store", str(store), "--port", str(server.port)])
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: cannot serve on 127.0.0.1:{server.port}: ")
    assert len(proc.stderr.splitlines()) == 1
