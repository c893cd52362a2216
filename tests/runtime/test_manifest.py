from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.manifest import FORMAT, Manifest, parse_manifest
from edgebundle.runtime.semver import Version

Path_ = tuple[str | int, ...]
class _Delete:
    def __repr__(self) -> str:  # stable test ids across pytest-xdist workers
        return "DELETE"


DELETE = _Delete()


def changed(d: dict[str, Any], path: Path_, value: object) -> dict[str, Any]:
    """A deep copy of ``d`` with the value at ``path`` replaced (or removed with DELETE)."""
    out = copy.deepcopy(d)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


def test_round_trip_dict(manifest_dict: dict[str, Any]) -> None:
    assert Manifest.from_dict(manifest_dict).to_dict() == manifest_dict


def test_round_trip_bytes_is_canonical_and_stable(
    manifest_dict: dict[str, Any], manifest_bytes: bytes
) -> None:
    m = Manifest.from_dict(manifest_dict)
    data = m.to_bytes()
    assert data == manifest_bytes
    assert parse_manifest(data) == m
    assert parse_manifest(data).to_bytes() == data
    assert data.endswith(b"}\n")


def test_key_order_and_whitespace_do_not_matter_to_the_parser(
    manifest_dict: dict[str, Any], manifest_bytes: bytes
) -> None:
    compact = json.dumps(manifest_dict, separators=(",", ":")).encode()
    assert parse_manifest(compact).to_bytes() == manifest_bytes


def test_typed_fields(manifest_dict: dict[str, Any]) -> None:
    m = Manifest.from_dict(manifest_dict)
    assert m.version == Version.parse("1.4.0-rc.1")
    assert str(m.version) == "1.4.0-rc.1+build.7"
    assert [f.name for f in m.inputs.features] == ["amount", "merchant category", "hour"]
    assert m.outputs[0].shape == (-1,)
    assert m.quantization is not None and m.quantization.bin_dtypes == {"uint8": 2, "uint16": 1}
    assert m.files["model.onnx"].size == 720
    assert m.requirements.opsets == {"": 17, "ai.onnx.ml": 3}


def test_float_precision_has_null_quantization(manifest_dict: dict[str, Any]) -> None:
    d = changed(changed(manifest_dict, ("precision",), "float"), ("quantization",), None)
    assert Manifest.from_dict(d).quantization is None
    assert Manifest.from_dict(d).to_dict() == d


def test_multiclass_and_regression_shapes(manifest_dict: dict[str, Any]) -> None:
    d = changed(manifest_dict, ("task",), "multiclass")
    d = changed(d, ("source", "num_class"), 3)
    d = changed(d, ("outputs",), [{"name": "probabilities", "dtype": "float32", "shape": [-1, 3]}])
    d = changed(d, ("parity", "label_agreement"), None)
    d = changed(d, ("parity", "budget", "min_label_agreement"), None)
    assert Manifest.from_dict(d).to_dict() == d


def test_named_output_columns_are_an_optional_extension(manifest_dict: dict[str, Any]) -> None:
    """Several quantiles or targets name their columns; a manifest without the key (every
    bundle built before it existed) reads as before and is written back byte for byte."""
    spec = {"name": "prediction", "dtype": "float32", "shape": [-1, 2]}
    d = changed(manifest_dict, ("outputs",), [{**spec, "columns": ["quantile_0.1", "q9"]}])
    assert Manifest.from_dict(d).outputs[0].columns == ("quantile_0.1", "q9")
    assert Manifest.from_dict(d).to_dict() == d
    plain = changed(manifest_dict, ("outputs",), [spec])
    assert Manifest.from_dict(plain).outputs[0].columns is None
    assert Manifest.from_dict(plain).to_dict() == plain


@pytest.mark.parametrize(
    ("columns", "fragment"),
    [
        (None, "leave the key out"),
        (["a"], "names 1 columns for an output of shape [-1, 2]"),
        (["a", "a"], "duplicate column name"),
        ([], "must not be empty"),
        (["a", "b\nc"], "control characters"),
    ],
)
def test_bad_output_columns_are_refused(
    manifest_dict: dict[str, Any], columns: object, fragment: str
) -> None:
    spec = {"name": "prediction", "dtype": "float32", "shape": [-1, 2], "columns": columns}
    with pytest.raises(ManifestError) as excinfo:
        Manifest.from_dict(changed(manifest_dict, ("outputs",), [spec]))
    assert fragment in str(excinfo.value)
    assert excinfo.value.context.startswith("outputs[0]")


def test_integers_are_accepted_as_floats(manifest_dict: dict[str, Any]) -> None:
    d = changed(manifest_dict, ("parity", "max_abs_error"), 0)
    assert Manifest.from_dict(d).parity.max_abs_error == 0.0


def test_mappings_are_read_only(manifest_dict: dict[str, Any]) -> None:
    m = Manifest.from_dict(manifest_dict)
    with pytest.raises(TypeError):
        m.files["evil.bin"] = m.files["model.onnx"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"  # type: ignore[misc]


def test_to_bytes_refuses_an_invalid_manifest(manifest_dict: dict[str, Any]) -> None:
    m = dataclasses.replace(Manifest.from_dict(manifest_dict), name="../escape")
    with pytest.raises(ManifestError) as excinfo:
        m.to_bytes()
    assert excinfo.value.context == "name"


INVALID: list[tuple[Path_, object, str, str]] = [
    # (path, new value, expected context, message fragment)
    (("format",), "edgebundle.manifest/2", "format", "unsupported manifest format"),
    (("format",), DELETE, "format", "missing required key"),
    (("extra",), 1, "", "unknown top-level key 'extra'"),
    (("task",), DELETE, "task", "missing required key"),
    (("name",), "../evil", "name", "not a valid model name"),
    (("name",), "", "name", "not a valid model name"),
    (("name",), "a" * 65, "name", "not a valid model name"),
    (("name",), ["fraud"], "name", "expected a string, got an array"),
    (("version",), "v1.0.0", "version", "not a semantic version"),
    (("version",), "1.0", "version", "not a semantic version"),
    (("version",), 1, "version", "expected a string, got an integer"),
    (("created",), "2025-01-31 12:00:00", "created", "RFC 3339"),
    (("created",), "2025-02-30T00:00:00Z", "created", "RFC 3339"),
    (("created",), "2025-01-31T12:00:00+01:00", "created", "RFC 3339"),
    (("created",), "2025-01-31T12:00:60Z", "created", "RFC 3339"),
    (("source",), "xgboost", "source", "expected an object, got a string"),
    (("source", "framework"), "lightgbm", "source.framework", "not one of 'xgboost'"),
    (("source", "framework_version"), "", "source.framework_version", "must not be empty"),
    (("source", "sha256"), "AB" * 32, "source.sha256", "not a sha256 digest"),
    (("source", "sha256"), "ab" * 31, "source.sha256", "not a sha256 digest"),
    (("source", "objective"), "binary:\nlogistic", "source.objective", "control characters"),
    (("source", "num_class"), True, "source.num_class", "expected an integer, got a boolean"),
    (("source", "num_class"), 0, "source.num_class", "must be >= 1"),
    (("source", "num_class"), 2, "source.num_class", "must be 1 for task 'binary'"),
    (("source", "num_class"), 1.0, "source.num_class", "expected an integer, got a number"),
    (("source", "num_trees"), -1, "source.num_trees", "must be >= 0"),
    (("source", "best_iteration"), "3", "source.best_iteration", "expected an integer"),
    (("source", "best_iteration"), DELETE, "source.best_iteration", "missing required key"),
    (("source", "num_features"), 0, "source.num_features", "must be >= 1"),
    (("source", "num_features"), 4, "inputs.features", "source.num_features is 4"),
    (("source", "trees"), 3, "source", "unknown key 'trees'"),
    (("task",), "clustering", "task", "not one of"),
    (("inputs", "features"), [], "inputs.features", "must not be empty"),
    (("inputs", "features", 0), "amount", "inputs.features[0]", "expected an object"),
    (("inputs", "features", 1, "name"), "", "inputs.features[1].name", "must not be empty"),
    (("inputs", "features", 1, "name"), "a\x00b", "inputs.features[1].name", "control"),
    (("inputs", "features", 1, "name"), "a\u2028b", "inputs.features[1].name", "line breaks"),
    (("inputs", "features", 1, "name"), "amount", "inputs.features", "duplicate feature name"),
    (("inputs", "features", 2, "type"), "categorical", "inputs.features[2].type", "not one of"),
    (("inputs", "features", 2, "extra"), 1, "inputs.features[2]", "unknown key"),
    (("inputs", "missing"), "zero", "inputs.missing", "not one of 'nan'"),
    (("outputs",), [], "outputs", "must not be empty"),
    (("outputs", 0, "name"), "Probability", "outputs[0].name", "not a lowercase identifier"),
    (("outputs", 1, "name"), "probability", "outputs", "duplicate output name"),
    (("outputs", 0, "dtype"), "float64", "outputs[0].dtype", "not one of"),
    (("outputs", 0, "shape"), [], "outputs[0].shape", "batch dimension"),
    (("outputs", 0, "shape"), [3], "outputs[0].shape[0]", "batch dimension must be -1"),
    (("outputs", 0, "shape"), [-1, 0], "outputs[0].shape[1]", "must be >= 1"),
    (("outputs", 0, "shape"), [-1, True], "outputs[0].shape[1]", "got a boolean"),
    (("outputs", 0, "shape"), "-1", "outputs[0].shape", "expected an array"),
    (("precision",), "int4", "precision", "not one of"),
    (("precision",), "float", "quantization", "null exactly when precision is 'float'"),
    (("quantization",), None, "quantization", "null exactly when precision is 'float'"),
    (("quantization",), DELETE, "quantization", "missing required key"),
    (("quantization", "layout"), "sparse", "quantization.layout", "not one of"),
    (("quantization", "leaf_bits"), 4, "quantization.leaf_bits", "must be 8 or 16"),
    (("quantization", "leaf_bits"), True, "quantization.leaf_bits", "got a boolean"),
    (("quantization", "escalated"), 0, "quantization.escalated", "expected a boolean"),
    (("quantization", "bin_dtypes"), {"uint32": 1}, "quantization.bin_dtypes", "unknown"),
    (("quantization", "bin_dtypes", "uint8"), -1, "quantization.bin_dtypes.uint8", ">= 0"),
    (("quantization", "bin_dtypes", "uint8"), 9, "quantization.bin_dtypes", "bins 10 features"),
    (("quantization", "margin_error_bound"), -0.1, "quantization.margin_error_bound", ">= 0"),
    (
        ("quantization", "margin_error_bound"),
        float("inf"),
        "quantization.margin_error_bound",
        "finite",
    ),
    (("parity", "rows"), 1499, "parity.rows", "is not data_rows + synthesized_rows"),
    (("parity", "data_rows"), -1, "parity.data_rows", "must be >= 0"),
    (("parity", "max_abs_error"), float("nan"), "parity.max_abs_error", "finite"),
    (("parity", "max_abs_error"), "0.1", "parity.max_abs_error", "expected a number"),
    (("parity", "error_scale"), 0, "parity.error_scale", "must be > 0"),
    (("parity", "label_agreement"), 1.5, "parity.label_agreement", "between 0 and 1"),
    (("parity", "budget", "max_error"), -1, "parity.budget.max_error", "must be >= 0"),
    (
        ("parity", "budget", "min_label_agreement"),
        2,
        "parity.budget.min_label_agreement",
        "0 and 1",
    ),
    (("parity", "budget", "extra"), 2, "parity.budget", "unknown key"),
    (("parity", "passed"), "yes", "parity.passed", "expected a boolean"),
    (("requirements", "onnxruntime"), "1.20", "requirements.onnxruntime", "not a semantic"),
    (("requirements", "onnxruntime"), "1.20.0-rc1", "requirements.onnxruntime", "plain X.Y.Z"),
    (("requirements", "opsets"), {}, "requirements.opsets", "at least one domain"),
    (("requirements", "opsets", "ai.onnx.ml"), 0, "requirements.opsets.ai.onnx.ml", ">= 1"),
    (("requirements", "opsets", "bad domain"), 1, "requirements.opsets", "not an operator set"),
    (("files", "model.onnx"), DELETE, "files", "must list 'model.onnx'"),
    (("files", "selftest.json"), DELETE, "files", "must list 'selftest.json'"),
    (("files", "manifest.sig"), {"sha256": "0" * 64, "size": 1}, "files", "container member"),
    (("files", "a/b"), {"sha256": "0" * 64, "size": 1}, "files", "not a valid member name"),
    (("files", "../x"), {"sha256": "0" * 64, "size": 1}, "files", "not a valid member name"),
    (("files", "model.onnx", "sha256"), "0" * 63, "files.model.onnx.sha256", "not a sha256"),
    (("files", "model.onnx", "size"), -1, "files.model.onnx.size", "must be >= 0"),
    (("files", "model.onnx", "size"), 720.0, "files.model.onnx.size", "expected an integer"),
    (("files", "model.onnx", "mode"), 420, "files.model.onnx", "unknown key"),
    (("files", "model.onnx"), [], "files.model.onnx", "expected an object"),
]


@pytest.mark.parametrize(
    ("path", "value", "context", "fragment"),
    INVALID,
    ids=[f"{'.'.join(map(str, case[0]))}={case[1]!r}"[:60] for case in INVALID],
)
def test_invalid_field_is_refused_with_its_path(
    manifest_dict: dict[str, Any], path: Path_, value: object, context: str, fragment: str
) -> None:
    with pytest.raises(ManifestError) as excinfo:
        Manifest.from_dict(changed(manifest_dict, path, value))
    assert excinfo.value.context == context
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith(f"{context}: " if context else fragment)
    assert "\n" not in str(excinfo.value)


def test_wrong_format_is_reported_before_unknown_keys(manifest_dict: dict[str, Any]) -> None:
    d = changed(changed(manifest_dict, ("format",), "edgebundle.manifest/2"), ("new",), 1)
    with pytest.raises(ManifestError, match=f"unsupported manifest format .* reads '{FORMAT}'"):
        Manifest.from_dict(d)


# --- the byte-level parser ----------------------------------------------------------------


def test_duplicate_top_level_key(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"task": "binary"', b'"task": "binary",\n  "task": "ranking"')
    with pytest.raises(ManifestError, match="duplicate key 'task'"):
        parse_manifest(data)


def test_duplicate_nested_key(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"size": 720', b'"size": 720, "size": 1')
    assert data != manifest_bytes
    with pytest.raises(ManifestError, match="duplicate key 'size'"):
        parse_manifest(data)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants(manifest_bytes: bytes, token: bytes) -> None:
    data = manifest_bytes.replace(b'"max_abs_error": 0.0055', b'"max_abs_error": ' + token)
    with pytest.raises(ManifestError, match=f"contains {token.decode()}, which is not JSON"):
        parse_manifest(data)


def test_number_overflowing_to_infinity(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"max_abs_error": 0.0055', b'"max_abs_error": 1e400')
    with pytest.raises(ManifestError, match="1e400, which overflows"):
        parse_manifest(data)


def test_huge_integer_for_a_float(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"max_abs_error": 0.0055', b'"max_abs_error": 1' + b"0" * 400)
    with pytest.raises(ManifestError, match="must be finite"):
        parse_manifest(data)


def test_bool_for_int_in_bytes(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"num_trees": 300', b'"num_trees": true')
    with pytest.raises(ManifestError) as excinfo:
        parse_manifest(data)
    assert str(excinfo.value) == "source.num_trees: expected an integer, got a boolean"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff{}", "not valid UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a UTF-8 BOM
        (b"[]", "must be a JSON object, not an array"),
        (b'"manifest"', "must be a JSON object, not a string"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{} {}", "not valid JSON"),
    ],
)
def test_not_a_json_object(data: bytes, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        parse_manifest(data)


def test_lone_surrogate_escape(manifest_bytes: bytes) -> None:
    data = manifest_bytes.replace(b'"name": "hour"', b'"name": "h\\ud800"')
    with pytest.raises(ManifestError) as excinfo:
        parse_manifest(data)
    assert excinfo.value.context == "inputs.features[2].name"


def test_non_ascii_text_survives(manifest_dict: dict[str, Any]) -> None:
    d = changed(manifest_dict, ("inputs", "features", 0, "name"), "montant €")
    data = Manifest.from_dict(d).to_bytes()
    assert "montant €".encode() in data
    assert parse_manifest(data).inputs.features[0].name == "montant €"


BUILD_CHOICE = {
    "requested": "auto",
    "optimize": "latency",
    "reason": "optimize latency: float is 40% faster at one row",
    "candidates": [
        {"precision": "float", "model_bytes": 20000, "passed": True, "us_per_row": 10.5,
         "model_rss_bytes": None},
        {"precision": "int8", "model_bytes": 12000, "passed": True, "us_per_row": 14.7,
         "model_rss_bytes": None},
    ],
}  # fmt: skip


def test_manifest_written_before_the_build_section_still_reads(
    manifest_dict: dict[str, Any],
) -> None:
    assert "build" not in manifest_dict
    manifest = Manifest.from_dict(manifest_dict)
    assert manifest.build is None
    assert "build" not in manifest.to_dict()  # None is written by leaving the key out


def test_build_section_round_trips(manifest_dict: dict[str, Any]) -> None:
    d = changed(manifest_dict, ("build",), BUILD_CHOICE)
    manifest = parse_manifest(Manifest.from_dict(d).to_bytes())
    assert manifest.build is not None and manifest.build.candidates[1].us_per_row == 14.7
    assert manifest.to_dict() == d


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        (("build",), None, "build", "expected a value, got null"),
        (("build", "optimize"), "speed", "build.optimize", "not one of"),
        (("build", "requested"), "int4", "build.requested", "not one of"),
        (("build", "candidates"), [], "build.candidates", "must not be empty"),
        (("build", "candidates", 1, "precision"), "float", "build.candidates", "duplicate"),
        (("build", "candidates", 0, "us_per_row"), -1.0, "build.candidates[0].us_per_row", ">= 0"),
        (("build", "reason"), DELETE, "build.reason", "missing required key"),
    ],
)
def test_bad_build_section_is_refused_by_path(
    manifest_dict: dict[str, Any], path: Path_, value: object, field: str, message: str
) -> None:
    d = changed(changed(manifest_dict, ("build",), BUILD_CHOICE), path, value)
    with pytest.raises(ManifestError, match=message) as caught:
        Manifest.from_dict(d)
    assert field in str(caught.value)
