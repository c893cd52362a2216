"""Open Inference Protocol v2 (KServe, Triton): metadata documents and the infer codec.

A model has one input, ``"input"``, FP32 ``[-1, F]``, and one output per manifest output.
An infer request sends that input as FP32, or as any other real numeric datatype (FP16, FP64,
INT8 to INT64, UINT8 to UINT64), converted to float32 as XGBoost converts such an array; shape
``[N, F]``, its ``data`` flat in row-major order or nested as ``N`` rows of ``F``. JSON ``null``
in ``data`` is a missing value (NaN), as is NaN in binary data; an integer tensor has no missing
value (its JSON ``data`` holds integers in the datatype's range).

The binary tensor data extension is implemented because off-the-shelf clients use it by
default: with an ``Inference-Header-Content-Length`` header the body is that many bytes of JSON
followed by the raw little-endian tensors, each input sized by its ``binary_data_size``
parameter; outputs asked for with ``"binary_data": true`` (per output, or for all outputs with
the request parameter ``binary_data_output``) come back the same way; outputs in JSON render
float32 values as the shortest decimal that reads back as the same float32 (``to_records``), and
a non-finite value as ``null``.

Structure is checked strictly (an unknown key is refused rather than ignored). Scheduling hints
without meaning here (``priority``, ``timeout``, sequence ids, custom request parameters) are
ignored; features that would change the answer and are not implemented (shared memory,
classification outputs) are refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from edgebundle.runtime import __version__
from edgebundle.runtime._json import json_type, quote
from edgebundle.runtime.manifest import Manifest, OutputSpec
from edgebundle.runtime.scoring import INPUT_NAME, to_python
from edgebundle.runtime.serve.httpio import HttpError, bad_request, decode_json, encode_json

SERVER_NAME = "edgebundle"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
# The datatypes an input is read from: what XGBoost converts to float32 itself (real numbers).
# BOOL and BYTES are no numbers, as JSON true and strings are not in a row.
_INPUT_TYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in (
        ("FP32", "<f4"), ("FP64", "<f8"), ("FP16", "<f2"),
        ("INT8", "i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8"),
        ("UINT8", "u1"), ("UINT16", "<u2"), ("UINT32", "<u4"), ("UINT64", "<u8"),
    )
}  # fmt: skip
_OUTPUT_TYPES = {"float32": "FP32", "int64": "INT64"}
_WIRE_TYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}
_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_INPUT_KEYS = ("name", "shape", "datatype", "parameters", "data")
_OUTPUT_KEYS = ("name", "parameters")
_NUMBER_TYPES = frozenset({int, float, type(None)})  # exact types: bool is no number here
_INTEGER_TYPES = frozenset({int})


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    id: str | None
    x: npt.NDArray[np.float32]  # [N, F], NaN = missing
    outputs: tuple[RequestedOutput, ...]


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(manifest: Manifest) -> dict[str, Any]:
    features = [feature.name for feature in manifest.inputs.features]
    return {
        "name": manifest.name,
        "versions": [str(manifest.version)],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, len(features)]}],
        "outputs": [
            {"name": spec.name, "datatype": _OUTPUT_TYPES[spec.dtype], "shape": list(spec.shape)}
            for spec in manifest.outputs
        ],
        "parameters": {
            "features": features,
            "task": manifest.task,
            "precision": manifest.precision,
        },
    }


def parse_infer(
    body: bytes, header_length: str | None, manifest: Manifest, max_rows: int
) -> InferRequest:
    """Read an infer request body; raises ``HttpError`` (400, or 413 for too many rows)."""
    json_part, binary = _split_body(body, header_length)
    request = decode_json(json_part)
    if not isinstance(request, dict):
        raise bad_request(f"infer request must be a JSON object, not {json_type(request)}")
    _reject_unknown(request, _REQUEST_KEYS, "infer request")
    parameters = _object(request, "parameters", "request")
    binary_default = _bool(parameters, "binary_data_output", "request parameters")
    x = _read_input(_single_input(request), binary, len(manifest.inputs.features), max_rows)
    return InferRequest(
        id=_request_id(request),
        x=x,
        outputs=_requested_outputs(request, manifest.outputs, binary_default),
    )


def encode_infer(
    manifest: Manifest, request: InferRequest, scored: Mapping[str, npt.NDArray[Any]]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the length of its JSON part."""
    tensors: list[dict[str, Any]] = []
    raw: list[bytes] = []
    dtypes = {spec.name: spec.dtype for spec in manifest.outputs}
    for output in request.outputs:
        value = scored[output.name]
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": _OUTPUT_TYPES[dtypes[output.name]],
            "shape": list(value.shape),
        }
        if output.binary:
            data = value.astype(_WIRE_TYPES[dtypes[output.name]], copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = to_python(value.reshape(-1))
        tensors.append(tensor)
    response: dict[str, Any] = {
        "model_name": manifest.name,
        "model_version": str(manifest.version),
    }
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = tensors
    header = encode_json(response)
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise bad_request(f"{HEADER_LENGTH} must be a decimal number of bytes")
    length = int(text)
    if not 0 < length <= len(body):
        raise bad_request(f"{HEADER_LENGTH} is {length}, but the body holds {len(body)} bytes")
    return body[:length], body[length:]


def _reject_unknown(obj: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        raise bad_request(f"{what} has an unknown key {quote(unknown[0])}")


def _object(obj: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise bad_request(f"{what} {key!r} must be an object, not {json_type(value)}")
    return value


def _bool(parameters: Mapping[str, Any], key: str, what: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{what}: {key!r} must be true or false, not {json_type(value)}")
    return value


def _request_id(request: Mapping[str, Any]) -> str | None:
    value = request.get("id")
    if value is not None and not isinstance(value, str):
        raise bad_request(f"request 'id' must be a string, not {json_type(value)}")
    return value


def _single_input(request: Mapping[str, Any]) -> dict[str, Any]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise bad_request("infer request needs 'inputs', an array with one tensor")
    if len(inputs) != 1:
        raise bad_request(f"the model has one input {INPUT_NAME!r}; got {len(inputs)} inputs")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise bad_request(f"inputs[0] must be an object, not {json_type(tensor)}")
    _reject_unknown(tensor, _INPUT_KEYS, "inputs[0]")
    name = tensor.get("name")
    if name != INPUT_NAME:
        shown = quote(name) if isinstance(name, str) else json_type(name)
        raise bad_request(f"unknown input {shown}; the model's input is {INPUT_NAME!r}")
    return tensor


def _read_input(
    tensor: Mapping[str, Any], binary: bytes, num_features: int, max_rows: int
) -> npt.NDArray[np.float32]:
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _INPUT_TYPES:
        shown = quote(datatype) if isinstance(datatype, str) else json_type(datatype)
        raise bad_request(f"input datatype must be one of {', '.join(_INPUT_TYPES)}, got {shown}")
    dtype = _INPUT_TYPES[datatype]
    rows = _input_rows(tensor.get("shape"), num_features)
    if rows > max_rows:
        raise HttpError(413, f"{rows} rows exceed the limit of {max_rows} per request")
    parameters = _object(tensor, "parameters", "input")
    for key in parameters:
        if key.startswith("shared_memory"):
            raise bad_request("shared memory is not supported; send the data in the request")
    size = parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise bad_request("the body has binary data but the input has no binary_data_size")
        values = _json_values(tensor.get("data"), rows, num_features, datatype)
    else:
        if "data" in tensor:
            raise bad_request("input has both 'data' and a binary_data_size")
        values = _binary_values(binary, size, dtype, rows * num_features)
    with np.errstate(over="ignore"):  # beyond float32 range becomes ±inf, as in XGBoost
        return values.reshape(rows, num_features).astype(np.float32)


def _input_rows(shape: object, num_features: int) -> int:
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(dim) is int and dim >= 0 for dim in shape)
    ):
        raise bad_request(f"input shape must be [N, {num_features}] with N >= 0, got {shape!r}")
    rows, features = shape
    if features != num_features:
        raise bad_request(
            f"input shape {shape} does not match the model: it has {num_features} features"
        )
    return int(rows)


def _json_values(
    data: object, rows: int, num_features: int, datatype: str
) -> npt.NDArray[Any]:
    """The values of JSON ``data``, of the tensor's datatype."""
    if not isinstance(data, list):
        raise bad_request(f"input 'data' must be an array, not {json_type(data)}")
    flat = data
    if data and isinstance(data[0], list):
        if len(data) != rows or any(
            not isinstance(row, list) or len(row) != num_features for row in data
        ):
            raise bad_request(f"nested input 'data' must be {rows} arrays of {num_features}")
        flat = list(itertools.chain.from_iterable(data))
    if len(flat) != rows * num_features:
        raise bad_request(
            f"input 'data' holds {len(flat)} values; shape [{rows}, {num_features}] "
            f"needs {rows * num_features}"
        )
    dtype = _INPUT_TYPES[datatype]
    if dtype.kind in "iu":
        return _json_integers(flat, datatype)
    # One pass in C over the types; the loop that names the bad value runs only when one is.
    if not set(map(type, flat)) <= _NUMBER_TYPES:
        _name_the_bad_value(flat, _NUMBER_TYPES, "a number or null")
    try:
        values = np.array(flat, dtype=np.float64)  # None becomes NaN: missing
    except OverflowError:  # an integer literal beyond float64
        raise bad_request("input 'data' holds a number out of range") from None
    if np.isinf(values).any():  # a literal such as 1e400, beyond float64
        raise bad_request("input 'data' holds a number out of range")
    with np.errstate(over="ignore"):  # FP16: as the datatype holds them (±inf beyond its range)
        return values.astype(dtype)


def _json_integers(flat: list[Any], datatype: str) -> npt.NDArray[Any]:
    if not set(map(type, flat)) <= _INTEGER_TYPES:
        _name_the_bad_value(flat, _INTEGER_TYPES, f"an integer ({datatype} has no missing value)")
    limits = np.iinfo(_INPUT_TYPES[datatype])
    if flat and (min(flat) < limits.min or max(flat) > limits.max):
        raise bad_request(f"input 'data' holds an integer out of {datatype}'s range")
    return np.array(flat, dtype=_INPUT_TYPES[datatype])


def _name_the_bad_value(flat: list[Any], allowed: frozenset[object], expected: str) -> NoReturn:
    index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in allowed)
    raise bad_request(f"input 'data' value {index}: expected {expected}, got {json_type(value)}")


def _binary_values(
    binary: bytes, size: object, dtype: np.dtype[Any], count: int
) -> npt.NDArray[Any]:
    if type(size) is not int or size < 0:
        raise bad_request("input binary_data_size must be a non-negative integer")
    expected = count * dtype.itemsize
    if size != expected:
        raise bad_request(f"input binary_data_size is {size}; the shape needs {expected} bytes")
    if len(binary) != size:
        raise bad_request(
            f"the body holds {len(binary)} bytes of binary data; binary_data_size says {size}"
        )
    return np.frombuffer(binary, dtype=dtype)


def _requested_outputs(
    request: Mapping[str, Any], specs: Sequence[OutputSpec], binary_default: bool
) -> tuple[RequestedOutput, ...]:
    outputs = request.get("outputs")
    if outputs is None:
        return tuple(RequestedOutput(spec.name, binary_default) for spec in specs)
    if not isinstance(outputs, list):
        raise bad_request(f"'outputs' must be an array, not {json_type(outputs)}")
    known = [spec.name for spec in specs]
    requested: list[RequestedOutput] = []
    for index, item in enumerate(outputs):
        what = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{what} must be an object, not {json_type(item)}")
        _reject_unknown(item, _OUTPUT_KEYS, what)
        name = item.get("name")
        if not isinstance(name, str) or name not in known:
            shown = quote(name) if isinstance(name, str) else json_type(name)
            raise bad_request(f"{what}: unknown output {shown}; the model has {known}")
        if any(output.name == name for output in requested):
            raise bad_request(f"{what}: output {name!r} is requested twice")
        parameters = _object(item, "parameters", what)
        if parameters.get("classification"):
            raise bad_request(f"{what}: classification outputs are not supported")
        if any(key.startswith("shared_memory") for key in parameters):
            raise bad_request("shared memory is not supported; take the data in the response")
        binary = _bool(parameters, "binary_data", f"{what} parameters", binary_default)
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)
