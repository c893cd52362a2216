"""``selftest.json``: strict format, exact round trip of the golden rows, and real comparisons."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.errors import InputError, ManifestError
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.selftest import FORMAT, Selftest, Tolerance, parse_selftest, run_selftest
from tests.support.helpers_runtime import Model, multiclass, regression, rows, selftest_bytes

VALID: dict[str, Any] = {
    "format": FORMAT,
    "rows": [[1, 2.5, None, -3], [0.1, None, None, 1e-3]],
    "expected": {"probabilities": [[0.2, 0.8], [1, 0]], "label": [1, 0]},
    "tolerance": {"abs": 1e-6, "rel": 0.0},
}


def scorer_for(model: Model) -> Scorer:
    return Scorer(model.onnx, model.features, model.outputs)


def with_change(path: str, value: object) -> dict[str, Any]:
    """VALID with the value at a dotted path replaced (a missing last key is added)."""
    d = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target: Any = d
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return d


def test_round_trip() -> None:
    selftest = Selftest.from_dict(VALID)
    assert selftest.to_dict() == VALID
    assert parse_selftest(selftest.to_bytes()) == selftest


def test_outputs_keep_the_order_they_were_recorded_in() -> None:
    # run_selftest reports the first failure in this order: a reader must not reorder them.
    d = with_change("expected", {"z": [1, 0], "a": [0, 1]})
    assert list(Selftest.from_dict(d).expected) == ["z", "a"]


def test_to_bytes_is_canonical_json() -> None:
    data = Selftest.from_dict(VALID).to_bytes()
    assert data.endswith(b"}\n")
    assert json.loads(data) == VALID


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (with_change("format", "edgebundle.selftest/2"), "unsupported selftest format"),
        (with_change("extra", 1), "unknown.* key 'extra'"),
        (with_change("rows", []), "rows: must hold at least one row"),
        (with_change("rows.1", [1, 2]), r"rows\[1\]: expected 4 values like row 0, got 2"),
        (with_change("rows.0", []), r"rows\[0\]: must not be empty"),
        (with_change("rows.0", {"f0": 1}), r"rows\[0\]: expected an array, got an object"),
        (with_change("rows.0.2", True), r"rows\[0\]\[2\]: expected a number, got a boolean"),
        (with_change("rows.0.2", "1"), r"rows\[0\]\[2\]: expected a number, got a string"),
        (with_change("rows.0.2", 10**400), r"rows\[0\]\[2\]: number out of range"),
        (with_change("expected", {}), "expected: must name at least one output"),
        (with_change("expected.label", [1]), r"expected.label: expected one value per row \(2\)"),
        (with_change("expected.label", [1, None]), r"expected.label\[1\]: expected a number"),
        (
            with_change("expected.probabilities", [[0.2, 0.8], [1]]),
            r"expected.probabilities\[1\]: expected an array of 2 numbers",
        ),
        (
            with_change("expected.probabilities", [[0.2, 0.8], 1]),
            r"expected.probabilities\[1\]: expected an array of 2 numbers",
        ),
        (with_change("tolerance.abs", -1), "tolerance.abs: must be >= 0"),
        (with_change("tolerance.rel", "0"), "tolerance.rel: expected a number, got a string"),
        (with_change("tolerance.ulp", 1), "tolerance.*: unknown.* key 'ulp'"),
    ],
)
def test_invalid_selftest_rejected(d: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Selftest.from_dict(d)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"format": "edgebundle.selftest/1", "format": "x"}', "duplicate key 'format'"),
        (b'{"rows": [[NaN]]}', "contains NaN"),
        (b"\xff", "not valid UTF-8"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_unparsable_selftest_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_selftest(data)


def test_errors_name_the_file_section() -> None:
    data = json.dumps(with_change("tolerance.abs", -1)).encode()
    with pytest.raises(ManifestError) as info:
        parse_selftest(data)
    assert str(info.value) == "selftest.tolerance.abs: must be >= 0, got -1.0"


def test_from_arrays_keeps_rows_bit_exact_and_missing_as_null() -> None:
    x = rows(50, seed=5, missing=0.3)
    x[0, 0] = np.float32(0.1)
    x[0, 1] = np.float32(1e-40)  # subnormal
    outputs = {"prediction": np.linspace(0, 1, 50, dtype=np.float32)}
    selftest = parse_selftest(Selftest.from_arrays(x, outputs, Tolerance(abs=0, rel=0)).to_bytes())
    assert selftest.rows[0][0] == 0.1
    back = np.array(
        [[np.nan if v is None else v for v in row] for row in selftest.rows], dtype=np.float64
    ).astype(np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), x.view(np.uint32))


def test_from_arrays_refuses_infinity() -> None:
    x = np.array([[np.inf, 0, 0, 0]], dtype=np.float32)
    outputs = {"prediction": np.zeros(1, dtype=np.float32)}
    with pytest.raises(InputError, match="must not hold inf"):
        Selftest.from_arrays(x, outputs, Tolerance(abs=0, rel=0))


@pytest.mark.parametrize("make", [regression, multiclass], ids=["regression", "multiclass"])
def test_builder_selftest_passes_on_the_real_scorer(make: Any) -> None:
    model = make()
    result = run_selftest(scorer_for(model), parse_selftest(selftest_bytes(model)))
    assert result.passed, result.detail
    assert result.rows == 16
    assert result.max_abs_error < 1e-5
    assert result.detail.startswith("16 rows match (max abs error ")


def test_exact_outputs_pass_with_zero_tolerance() -> None:
    model = multiclass()
    scorer = scorer_for(model)
    x = rows(20, seed=6)
    selftest = Selftest.from_arrays(x, scorer.predict(x), Tolerance(abs=0, rel=0))
    result = run_selftest(scorer, parse_selftest(selftest.to_bytes()))
    assert (result.passed, result.max_abs_error) == (True, 0.0)


def moved(model: Model, output: str, row: int, column: int | None, delta: float) -> Selftest:
    d = json.loads(selftest_bytes(model))
    values = d["expected"][output]
    if column is None:
        values[row] += delta
    else:
        values[row][column] += delta
    return Selftest.from_dict(d)


def test_a_moved_float_fails_and_names_the_value() -> None:
    model = multiclass()
    result = run_selftest(scorer_for(model), moved(model, "probabilities", 3, 2, 0.01))
    assert not result.passed
    assert result.detail.startswith("output 'probabilities' row 3[2]: got ")
    assert result.detail.endswith("(tolerance abs 1e-05, rel 1e-05)")
    assert 0.0099 < result.max_abs_error < 0.0101


def test_relative_tolerance_scales_with_the_value() -> None:
    model = regression()
    d = json.loads(selftest_bytes(model))
    d["expected"]["prediction"] = [v * (1 + 1e-3) for v in d["expected"]["prediction"]]
    d["tolerance"] = {"abs": 0.0, "rel": 2e-3}
    assert run_selftest(scorer_for(model), Selftest.from_dict(d)).passed
    d["tolerance"] = {"abs": 0.0, "rel": 5e-4}
    result = run_selftest(scorer_for(model), Selftest.from_dict(d))
    assert not result.passed
    assert "(and 15 more)" in result.detail


def test_labels_must_match_exactly() -> None:
    model = multiclass()
    d = json.loads(selftest_bytes(model))
    d["tolerance"] = {"abs": 10.0, "rel": 10.0}  # generous: labels ignore it
    d["expected"]["label"][7] = (d["expected"]["label"][7] + 1) % 3
    result = run_selftest(scorer_for(model), Selftest.from_dict(d))
    assert not result.passed
    assert result.detail.startswith("output 'label' row 7: got ")
    assert result.detail.endswith("(must match exactly)")


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            lambda d: d.update(rows=[row[:3] for row in d["rows"]]),
            "selftest rows have 3 values, the model takes 4",
        ),
        (
            lambda d: d["expected"].pop("label"),
            "selftest expects outputs ['probabilities'], the model has ['label', 'probabilities']",
        ),
        (
            lambda d: d["expected"].update(label=[[v] for v in d["expected"]["label"]]),
            "selftest values for 'label' have shape [N, 1], the model's have [N]",
        ),
    ],
    ids=["width", "outputs", "shape"],
)
def test_selftest_for_another_model_fails(change: Any, detail: str) -> None:
    model = multiclass()
    d = json.loads(selftest_bytes(model))
    change(d)
    result = run_selftest(scorer_for(model), Selftest.from_dict(d))
    assert (result.passed, result.detail) == (False, detail)
