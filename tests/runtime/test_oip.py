"""Open Inference Protocol v2 infer requests decoded without a socket: tensors of each
datatype, JSON and binary, their shapes and names, and the responses encoded for them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.serve.httpio import HttpError
from edgebundle.runtime.serve.oip import (
    InferRequest,
    RequestedOutput,
    encode_infer,
    model_metadata,
    parse_infer,
)

MAX_ROWS = 100
ROWS: list[list[float | None]] = [[1.5, 2.0, None], [0.25, -3.0, 7.0]]  # None: missing


@pytest.fixture
def manifest(manifest_dict: dict[str, Any]) -> Manifest:
    """3 features; outputs ``probability`` (float32) and ``label`` (int64)."""
    return Manifest.from_dict(manifest_dict)


def tensor(**changes: Any) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": [2, 3], "data": ROWS, **changes}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs or [tensor()]), **extra}).encode()


def binary(values: np.ndarray[Any, Any], datatype: str, **extra: Any) -> tuple[bytes, str]:
    """A binary-extension body: its JSON part, then the tensor's raw little-endian bytes."""
    data = values.tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": datatype,
                "shape": list(values.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        **extra,
    }
    text = json.dumps(header).encode()
    return text + data, str(len(text))


def parse(manifest: Manifest, data: bytes, header_length: str | None = None) -> InferRequest:
    return parse_infer(data, header_length, manifest, MAX_ROWS)


def refused(manifest: Manifest, data: bytes, header_length: str | None = None) -> HttpError:
    with pytest.raises(HttpError) as raised:
        parse(manifest, data, header_length)
    assert "\n" not in raised.value.message
    return raised.value


EXPECTED = np.array([[1.5, 2.0, np.nan], [0.25, -3.0, 7.0]], dtype=np.float32)


# --- JSON tensors ------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_nested_json_data_is_read_with_null_as_missing(manifest: Manifest, datatype: str) -> None:
    request = parse(manifest, body(tensor(datatype=datatype)))
    assert request.x.dtype == np.float32 and request.x.shape == (2, 3)
    np.testing.assert_array_equal(request.x, EXPECTED)


def test_flat_json_data_is_read_in_row_major_order(manifest: Manifest) -> None:
    flat = [value for row in ROWS for value in row]
    np.testing.assert_array_equal(parse(manifest, body(tensor(data=flat))).x, EXPECTED)


def test_fp64_values_are_rounded_to_float32(manifest: Manifest) -> None:
    value = 0.1 + 1e-12  # digits float32 cannot hold
    request = parse(manifest, body(tensor(datatype="FP64", shape=[1, 3], data=[value, 0, 0])))
    assert request.x[0, 0] == np.float32(value)


def test_integers_are_numbers(manifest: Manifest) -> None:
    request = parse(manifest, body(tensor(shape=[1, 3], data=[1, -2, 3])))
    np.testing.assert_array_equal(request.x, [[1.0, -2.0, 3.0]])


def test_values_beyond_float32_become_infinite_as_in_xgboost(manifest: Manifest) -> None:
    request = parse(manifest, body(tensor(datatype="FP64", shape=[1, 3], data=[1e300, -1e300, 0])))
    assert request.x[0, 0] == np.inf and request.x[0, 1] == -np.inf


def test_zero_rows_are_a_request(manifest: Manifest) -> None:
    assert parse(manifest, body(tensor(shape=[0, 3], data=[]))).x.shape == (0, 3)


@pytest.mark.parametrize("datatype", ["BOOL", "BF16", "BYTES", "fp32", "FLOAT32", "INT128"])
def test_every_other_datatype_is_refused(manifest: Manifest, datatype: str) -> None:
    error = refused(manifest, body(tensor(datatype=datatype)))
    assert (error.status, error.message) == (
        400,
        "input datatype must be one of FP32, FP64, FP16, INT8, INT16, INT32, INT64, UINT8, "
        f"UINT16, UINT32, UINT64, got '{datatype}'",
    )


INTEGERS = [[0, 1, -2], [100, -128, 127]]


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [("INT8", "i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8")],
)
def test_integer_tensors_in_json_are_read_as_xgboost_reads_them(
    manifest: Manifest, datatype: str, dtype: str
) -> None:
    request = parse(manifest, body(tensor(datatype=datatype, data=INTEGERS)))
    np.testing.assert_array_equal(request.x, np.array(INTEGERS, dtype).astype(np.float32))


def test_int64_beyond_float32_s_digits_is_rounded_once(manifest: Manifest) -> None:
    # 2**60 + 2**36 + 1 lies just above a float32 tie: rounded once it goes up, rounded to
    # float64 first (2**60 + 2**36, the tie) and then to float32 it would go down to even.
    big = [[2**60 + 2**36 + 1, 0, 0], [0, 0, 0]]
    request = parse(manifest, body(tensor(datatype="INT64", data=big)))
    assert request.x[0, 0] == np.array(big, np.int64).astype(np.float32)[0, 0]
    assert request.x[0, 0] == np.float32(2**60 + 2**37)


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("INT32", [[1, 2, None], [1, 2, 3]], "value 2: expected an integer (INT32 has no missing"),
        ("INT32", [[1, 2, 3.0], [1, 2, 3]], "value 2: expected an integer"),
        ("INT8", [[1, 2, True], [1, 2, 3]], "expected an integer (INT8 has no missing value), got "
         "a boolean"),
        ("INT8", [[1, 2, 128], [1, 2, 3]], "an integer out of INT8's range"),
        ("UINT8", [[1, 2, -1], [1, 2, 3]], "an integer out of UINT8's range"),
        ("UINT64", [[2**64, 2, 1], [1, 2, 3]], "an integer out of UINT64's range"),
        ("INT64", [[-(2**63) - 1, 2, 1], [1, 2, 3]], "an integer out of INT64's range"),
    ],
)
def test_integer_tensors_hold_integers_in_range(
    manifest: Manifest, datatype: str, data: list[list[Any]], fragment: str
) -> None:
    error = refused(manifest, body(tensor(datatype=datatype, data=data)))
    assert error.status == 400 and fragment in error.message, error.message


def test_fp16_json_values_are_what_fp16_holds(manifest: Manifest) -> None:
    data = [[0.1, 70000.0, None], [1 / 3, -2.0, 65504.0]]
    request = parse(manifest, body(tensor(datatype="FP16", data=data)))
    expected = np.array(data, np.float64)
    with np.errstate(over="ignore"):
        expected = expected.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(request.x, expected)  # 70000 is beyond FP16: inf
    assert request.x[0, 1] == np.inf


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"shape": [2, 4]}, "input shape [2, 4] does not match the model: it has 3 features"),
        ({"shape": [6]}, "input shape must be [N, 3] with N >= 0, got [6]"),
        ({"shape": [-1, 3]}, "input shape must be [N, 3]"),
        ({"shape": [2.0, 3]}, "input shape must be [N, 3]"),
        ({"shape": [True, 3]}, "input shape must be [N, 3]"),
        ({"shape": "2x3"}, "input shape must be [N, 3]"),
        ({"shape": [3, 3]}, "nested input 'data' must be 3 arrays of 3"),
        ({"data": [[1, 2, 3], [4, 5]]}, "nested input 'data' must be 2 arrays of 3"),
        ({"data": [1, 2, 3, 4, 5]}, "input 'data' holds 5 values; shape [2, 3] needs 6"),
        ({"data": [1, 2, 3, 4, 5, "6"]}, "value 5: expected a number or null, got a string"),
        ({"data": [1, 2, 3, 4, 5, True]}, "value 5: expected a number or null, got a boolean"),
        ({"data": {"a": 1}}, "input 'data' must be an array"),
        ({"data": [1, 2, 3, 4, 5, 10**400]}, "holds a number out of range"),
    ],
)
def test_data_that_does_not_fit_its_shape_is_400(
    manifest: Manifest, changes: dict[str, Any], fragment: str
) -> None:
    error = refused(manifest, body(tensor(**changes)))
    assert error.status == 400 and fragment in error.message


def test_more_rows_than_the_limit_is_413(manifest: Manifest) -> None:
    rows = MAX_ROWS + 1
    error = refused(manifest, body(tensor(shape=[rows, 3], data=[[0, 0, 0]] * rows)))
    assert (error.status, error.message) == (
        413,
        f"{rows} rows exceed the limit of 100 per request",
    )


# --- names and structure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([tensor(name="x")], "unknown input 'x'; the model's input is 'input'"),
        ([tensor(name=None)], "unknown input null"),
        ([tensor(name=3)], "unknown input an integer"),
        ([{k: v for k, v in tensor().items() if k != "name"}], "unknown input null"),
        ([tensor(), tensor()], "the model has one input 'input'; got 2 inputs"),
        ([], "got 0 inputs"),
        (["input"], "inputs[0] must be an object, not a string"),
        ([tensor(colour="red")], "inputs[0] has an unknown key 'colour'"),
    ],
)
def test_the_one_input_is_named_input(manifest: Manifest, inputs: list[Any], fragment: str) -> None:
    data = json.dumps({"inputs": inputs}).encode()
    assert fragment in refused(manifest, data).message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"[]", "infer request must be a JSON object, not an array"),
        (b'{"inputs": {}}', "infer request needs 'inputs', an array with one tensor"),
        (b'{"model": "x", "inputs": []}', "infer request has an unknown key 'model'"),
        (b'{"parameters": [], "inputs": []}', "request 'parameters' must be an object"),
        (b"{", "invalid JSON body"),
    ],
)
def test_a_malformed_request_is_400(manifest: Manifest, data: bytes, fragment: str) -> None:
    error = refused(manifest, data)
    assert error.status == 400 and fragment in error.message


def test_the_id_is_kept(manifest: Manifest) -> None:
    assert parse(manifest, body(id="req-42")).id == "req-42"
    assert parse(manifest, body()).id is None
    assert refused(manifest, body(id=7)).message == "request 'id' must be a string, not an integer"


def test_every_output_is_answered_in_json_unless_asked(manifest: Manifest) -> None:
    assert parse(manifest, body()).outputs == (
        RequestedOutput("probability", binary=False),
        RequestedOutput("label", binary=False),
    )


def test_outputs_asked_for_by_name_each_binary_or_not(manifest: Manifest) -> None:
    outputs = [{"name": "label"}, {"name": "probability", "parameters": {"binary_data": True}}]
    request = parse(manifest, body(outputs=outputs, parameters={"binary_data_output": False}))
    assert request.outputs == (
        RequestedOutput("label", binary=False),
        RequestedOutput("probability", binary=True),
    )


def test_binary_data_output_is_every_output_s_default(manifest: Manifest) -> None:
    outputs = [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probability"}]
    request = parse(manifest, body(outputs=outputs, parameters={"binary_data_output": True}))
    assert [output.binary for output in request.outputs] == [False, True]


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ([{"name": "margin"}], "outputs[0]: unknown output 'margin'; the model has"),
        ([{"name": "label"}, {"name": "label"}], "outputs[1]: output 'label' is requested twice"),
        ([{"name": "label", "parameters": {"classification": 2}}], "classification"),
        ([{"name": "label", "parameters": {"shared_memory_region": "r"}}], "shared memory"),
        ([{"name": "label", "parameters": {"binary_data": 1}}], "must be true or false"),
        ([{"name": "label", "colour": "red"}], "outputs[0] has an unknown key 'colour'"),
        ({"name": "label"}, "'outputs' must be an array"),
    ],
)
def test_requested_outputs_are_checked(manifest: Manifest, outputs: Any, fragment: str) -> None:
    assert fragment in refused(manifest, body(outputs=outputs)).message


def test_shared_memory_inputs_are_refused(manifest: Manifest) -> None:
    data = body(tensor(parameters={"shared_memory_region": "r"}))
    assert "shared memory is not supported" in refused(manifest, data).message


# --- binary tensors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8")])
def test_binary_tensors_are_read_little_endian(
    manifest: Manifest, datatype: str, dtype: str
) -> None:
    data, length = binary(EXPECTED.astype(dtype), datatype)
    np.testing.assert_array_equal(parse(manifest, data, length).x, EXPECTED)  # NaN: missing


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [("FP16", "<f2"), ("INT8", "i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8"),
     ("UINT8", "u1"), ("UINT16", "<u2"), ("UINT32", "<u4"), ("UINT64", "<u8")],
)
def test_binary_tensors_of_every_numeric_datatype(
    manifest: Manifest, datatype: str, dtype: str
) -> None:
    info = np.finfo(dtype) if dtype[-2] == "f" else np.iinfo(dtype)
    values = np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=dtype)
    data, length = binary(values, datatype)
    assert np.dtype(dtype).byteorder in "<|="  # sent little-endian, as the extension says
    with np.errstate(over="ignore"):
        expected = values.astype(np.float32)
    np.testing.assert_array_equal(parse(manifest, data, length).x, expected)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d, n: (d, "abc"), "must be a decimal number of bytes"),
        (lambda d, n: (d, "0"), "is 0, but the body holds"),
        (lambda d, n: (d, str(len(d) + 1)), "but the body holds"),
        (lambda d, n: (d + b"\0", n), "the body holds 25 bytes of binary data"),
        (lambda d, n: (d[:-1], n), "the body holds 23 bytes of binary data"),
        (lambda d, n: (d, None), "JSON body is not valid UTF-8"),  # the binary part read as JSON
    ],
)
def test_binary_sizes_are_checked(manifest: Manifest, change: Any, fragment: str) -> None:
    data, length = change(*binary(EXPECTED, "FP32"))
    error = refused(manifest, data, length)
    assert error.status == 400 and fragment in error.message


def test_a_binary_size_that_does_not_fit_the_shape_is_400(manifest: Manifest) -> None:
    data, length = binary(EXPECTED[:1], "FP32")
    data = data.replace(b'"shape": [1, 3]', b'"shape": [2, 3]')
    assert (
        "binary_data_size is 12; the shape needs 24 bytes"
        in refused(manifest, data, length).message
    )


def test_binary_bytes_without_a_binary_input_are_400(manifest: Manifest) -> None:
    text = body()
    error = refused(manifest, text + b"\0\0\0\0", str(len(text)))
    assert "the body has binary data but the input has no binary_data_size" in error.message


# --- responses --------------------------------------------------------------------------------


def scored() -> dict[str, np.ndarray[Any, Any]]:
    return {
        "probability": np.array([0.1, np.nan], dtype=np.float32),
        "label": np.array([0, 1], dtype=np.int64),
    }


def test_a_json_response_holds_each_output_with_its_datatype_and_shape(manifest: Manifest) -> None:
    request = parse(manifest, body(id="r1"))
    data, header_length = encode_infer(manifest, request, scored())
    assert header_length is None
    assert json.loads(data) == {
        "model_name": "fraud-score",
        "model_version": "1.4.0-rc.1+build.7",
        "id": "r1",
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.1, None]},
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]},
        ],
    }


def test_binary_outputs_follow_the_json_part(manifest: Manifest) -> None:
    outputs = [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probability"}]
    request = parse(manifest, body(outputs=outputs))
    data, header_length = encode_infer(manifest, request, scored())
    assert header_length is not None
    header = json.loads(data[:header_length])
    assert "id" not in header
    assert header["outputs"][0] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "parameters": {"binary_data_size": 16},
    }
    assert header["outputs"][1]["data"] == [0.1, None]
    np.testing.assert_array_equal(np.frombuffer(data[header_length:], "<i8"), [0, 1])


def test_model_metadata_describes_the_input_and_outputs(manifest: Manifest) -> None:
    metadata = model_metadata(manifest)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert metadata["outputs"] == [
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["parameters"]["features"] == ["amount", "merchant category", "hour"]
