"""The Scorer runs real converted XGBoost models and refuses graphs that break the contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.emit_int8 import emit_int8
from edgebundle.builder.convert.link import assemble
from edgebundle.builder.convert.load import load_model
from edgebundle.runtime.errors import CompatibilityError, FormatError, InputError
from edgebundle.runtime.graphcheck import check_model
from edgebundle.runtime.graphcheck.shapes import ROWS, fixed
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.scoring import (
    MAX_ROWS_PER_RUN,
    Scorer,
    check_onnxruntime,
    to_python,
    to_records,
)
from tests.support.helpers_runtime import FEATURES, Model, binary, multiclass, regression, rows
from tests.support.xgbmodels import NAMES, train

MODELS = [regression, multiclass, binary]


def scorer_for(model: Model, threads: int = 0) -> Scorer:
    return Scorer(model.onnx, model.features, model.outputs, threads=threads)


@pytest.mark.parametrize("make", MODELS, ids=lambda make: make.__name__)
def test_outputs_match_xgboost_predict(make: Callable[[], Model]) -> None:
    model = make()
    x = rows(300, seed=7, missing=0.2)
    got = scorer_for(model).predict(x)
    want = model.reference(x)
    assert list(got) == [spec.name for spec in model.outputs]
    for spec in model.outputs:
        assert got[spec.name].dtype == np.dtype(spec.dtype)
        if spec.dtype == "float32":
            np.testing.assert_allclose(got[spec.name], want[spec.name], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got[spec.name], want[spec.name])


def test_all_missing_row_scores_like_xgboost() -> None:
    model = regression()
    x = np.full((1, len(FEATURES)), np.nan, dtype=np.float32)
    got = scorer_for(model).predict(x)["prediction"]
    np.testing.assert_allclose(got, model.reference(x)["prediction"], rtol=1e-5, atol=1e-5)


def test_empty_batch_gives_empty_outputs_of_the_right_shape() -> None:
    got = scorer_for(multiclass()).predict(np.zeros((0, len(FEATURES)), dtype=np.float32))
    assert got["probabilities"].shape == (0, 3)
    assert got["probabilities"].dtype == np.float32
    assert got["label"].shape == (0,)
    assert got["label"].dtype == np.int64
    assert to_records(got) == []


def test_threads_option_changes_only_summation_order() -> None:
    # Several threads sum the trees in another order: the last bit may differ, no more.
    x = rows(64, seed=3)
    one = scorer_for(regression(), threads=1).predict(x)["prediction"]
    four = scorer_for(regression(), threads=4).predict(x)["prediction"]
    np.testing.assert_allclose(one, four, rtol=1e-6, atol=1e-5)


def test_negative_threads_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        scorer_for(regression(), threads=-1)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 3), dtype=np.float32), r"shape \[N, 4\], got \[2, 3\]"),
        (np.zeros(4, dtype=np.float32), r"shape \[N, 4\], got \[4\]"),
        (np.zeros((2, 4), dtype=np.float64), "must be float32, got float64"),
    ],
)
def test_predict_refuses_wrong_input(x: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        scorer_for(regression()).predict(x)


def test_byte_swapped_float32_is_refused_like_any_other_dtype() -> None:
    x = rows(3).astype(">f4")
    with pytest.raises(InputError, match=r"must be float32, got >f4"):
        scorer_for(regression()).predict(x)


@pytest.mark.parametrize("make", MODELS, ids=lambda make: make.__name__)
def test_one_row_fast_path_agrees_with_batches_and_strided_input(
    make: Callable[[], Model],
) -> None:
    # A row alone, a row of a batch over the slice limit, and a column-major copy (which
    # onnxruntime makes contiguous itself) all score the same.
    scorer = scorer_for(make(), threads=1)
    x = rows(MAX_ROWS_PER_RUN + 3, seed=5)
    batch = scorer.predict(x)
    strided = scorer.predict(np.asfortranarray(x[:40]))
    for i in (0, 39):
        alone = scorer.predict(x[i : i + 1])
        assert list(alone) == list(batch)
        for name, value in alone.items():
            assert value.dtype == batch[name].dtype
            np.testing.assert_array_equal(value[0], batch[name][i])
            np.testing.assert_array_equal(strided[name][i], batch[name][i])


@pytest.mark.parametrize("make", MODELS, ids=lambda make: make.__name__)
def test_graph_check_gives_each_output_its_exact_shape(make: Callable[[], Model]) -> None:
    model = make()
    shapes = check_model(model.onnx, len(model.features), MAX_ROWS_PER_RUN)
    assert set(shapes) == {spec.name for spec in model.outputs}
    for spec in model.outputs:
        assert shapes[spec.name] == tuple(ROWS if d == -1 else fixed(d) for d in spec.shape)


def test_concurrent_predict_calls_agree() -> None:
    scorer = scorer_for(multiclass())
    batches = [rows(50, seed=seed) for seed in range(32)]
    expected = [scorer.predict(x)["probabilities"] for x in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda x: scorer.predict(x)["probabilities"], batches))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


# --- the graph contract is checked at load -------------------------------------------------


def _with_opset(model_bytes: bytes, domain: str, version: int) -> bytes:
    proto = onnx.load_from_string(model_bytes)
    for opset in proto.opset_import:
        if opset.domain == domain:
            opset.version = version
    serialized: bytes = proto.SerializeToString()
    return serialized


def test_garbage_model_is_refused_before_onnxruntime_parses_it() -> None:
    with pytest.raises(FormatError) as info:
        Scorer(b"not an onnx model", FEATURES, regression().outputs)
    assert str(info.value) == "model.onnx: top level: unexpected field 13 in a ModelProto"


def test_unsupported_opset_is_refused_before_onnxruntime_parses_it() -> None:
    future = _with_opset(regression().onnx, "ai.onnx.ml", 99)
    with pytest.raises(FormatError) as info:
        Scorer(future, FEATURES, regression().outputs)
    assert str(info.value) == (
        "model.onnx: imports opset 'ai.onnx.ml' version 99; edgebundle writes '' 15-22, "
        "'ai.onnx.ml' 5"
    )


def test_onnxruntime_load_error_is_one_trimmed_line() -> None:
    proto = onnx.load_from_string(regression().onnx)
    [base] = [t for t in proto.graph.initializer if t.name == "float/base_margin"]
    base.CopyFrom(numpy_helper.from_array(np.zeros((1, 1), dtype=np.int64), base.name))
    with pytest.raises(CompatibilityError, match="onnxruntime cannot load the model") as info:
        Scorer(proto.SerializeToString(), FEATURES, regression().outputs)
    message = str(info.value)
    assert "bound to different types" in message
    assert "\n" not in message
    assert "[ONNXRuntimeError]" not in message  # status codes and C++ locations trimmed


def test_feature_count_mismatch_refused() -> None:
    with pytest.raises(CompatibilityError, match="lists 3 features"):
        Scorer(regression().onnx, FEATURES[:3], regression().outputs)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ((OutputSpec(name="score", dtype="float32", shape=(-1,)),), "do not match"),
        (
            (
                OutputSpec(name="prediction", dtype="float32", shape=(-1,)),
                OutputSpec(name="label", dtype="int64", shape=(-1,)),
            ),
            "do not match",
        ),
        ((OutputSpec(name="prediction", dtype="int64", shape=(-1,)),), "the manifest says int64"),
        ((OutputSpec(name="prediction", dtype="float32", shape=(-1, 1)),), "has shape"),
    ],
    ids=["wrong-name", "missing-output", "wrong-dtype", "wrong-rank"],
)
def test_output_mismatch_refused(outputs: tuple[OutputSpec, ...], message: str) -> None:
    with pytest.raises(CompatibilityError, match=message):
        Scorer(regression().onnx, FEATURES, outputs)


def test_class_count_mismatch_refused() -> None:
    outputs = (
        OutputSpec(name="probabilities", dtype="float32", shape=(-1, 4)),
        OutputSpec(name="label", dtype="int64", shape=(-1,)),
    )
    with pytest.raises(CompatibilityError, match="'probabilities' has shape"):
        Scorer(multiclass().onnx, FEATURES, outputs)


def test_input_with_another_name_refused() -> None:
    proto = onnx.load_from_string(regression().onnx)
    proto.graph.input[0].name = "features"
    for node in proto.graph.node:
        node.input[:] = ["features" if name == "input" else name for name in node.input]
    with pytest.raises(FormatError, match="exactly one input 'input', has 'features'"):
        Scorer(proto.SerializeToString(), FEATURES, regression().outputs)


def _identity_model(elem_type: int, input_shape: list[int | None] | None) -> bytes:
    """``prediction = input``: built only of ops edgebundle emits, so onnxruntime sees it."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["prediction"])],
        "identity",
        [helper.make_tensor_value_info("input", elem_type, input_shape)],
        [helper.make_tensor_value_info("prediction", elem_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    serialized: bytes = model.SerializeToString()
    return serialized


def test_double_input_refused() -> None:
    model = _identity_model(TensorProto.DOUBLE, [None, 4])
    with pytest.raises(CompatibilityError, match="must be float32, is tensor"):
        Scorer(model, FEATURES, regression().outputs)


def test_output_shape_checked_after_run_when_graph_has_no_shapes() -> None:
    # An input of unknown rank leaves the output's rank unknown: only the returned array can
    # be checked.
    scorer = Scorer(_identity_model(TensorProto.FLOAT, None), FEATURES, regression().outputs)
    with pytest.raises(CompatibilityError, match=r"came back as float32 \[2, 4\]"):
        scorer.predict(np.zeros((2, 4), dtype=np.float32))


# --- rendering ---------------------------------------------------------------------------


def test_records_per_row_with_lists_and_ints() -> None:
    outputs: dict[str, np.ndarray] = {
        "probabilities": np.array([[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]], dtype=np.float32),
        "label": np.array([2, 0], dtype=np.int64),
    }
    records = to_records(outputs)
    assert records == [
        {"probabilities": [0.1, 0.2, 0.7], "label": 2},
        {"probabilities": [1.0, 0.0, 0.0], "label": 0},
    ]
    assert type(records[0]["label"]) is int
    assert json.dumps(records[0]) == '{"probabilities": [0.1, 0.2, 0.7], "label": 2}'


def test_float32_rendered_as_shortest_round_tripping_decimal() -> None:
    values = np.array([0.1, 1 / 3, 16777217, 1e-40, 3.4028235e38, -0.0, 2.5e-8], np.float32)
    texts = [json.dumps(v) for v in to_python(values)]
    assert texts == [
        "0.1",
        "0.33333334",
        "16777216.0",
        "1e-40",
        "3.4028235e+38",
        "-0.0",
        "2.5e-08",
    ]


def test_float32_rendering_round_trips_bit_exactly() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    special = [0, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x80000000, 0x80000001, 0xFF7FFFFF]
    values = np.concatenate([bits, np.array(special, dtype=np.uint32)]).view(np.float32)
    values = values[np.isfinite(values)]
    text = json.dumps(to_python(values))
    back = np.array(json.loads(text), dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), values.view(np.uint32))
    # Shortest: never more significant digits than numpy's own shortest repr.
    for rendered, value in zip(json.loads(text)[:2000], values[:2000], strict=True):
        assert _digits(repr(rendered)) <= _digits(str(value))


def _digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    return len(mantissa)


def test_non_finite_outputs_render_as_null() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    assert to_python(values) == [None, None, None, 1.5]


def test_few_and_many_float32_values_render_alike() -> None:
    """Small answers take a per-value path; it must write exactly what the batch path does."""
    rng = np.random.default_rng(0)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4028235e38, 1e-45, 0.1, 16777217.0]
    values = np.concatenate(
        [
            rng.normal(size=3000).astype(np.float32),
            rng.uniform(0, 1, 3000).astype(np.float32),
            np.array(specials, dtype=np.float32),
        ]
    )
    many = to_python(values)
    few = [to_python(values[i : i + 1])[0] for i in range(len(values))]
    assert [repr(v) for v in few] == [repr(v) for v in many]
    grid = values[:12].reshape(6, 2)
    assert to_python(grid) == [many[i : i + 2] for i in range(0, 12, 2)]


_RSS_AFTER_A_BATCH = """
import sys
import numpy as np
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.scoring import Scorer

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

model = open(sys.argv[1], "rb").read()
features = [f"f{i}" for i in range(int(sys.argv[2]))]
scorer = Scorer(model, features, [OutputSpec(name="prediction", dtype="float32", shape=(-1,))])
x = np.random.default_rng(0).normal(size=(10_000, len(features))).astype(np.float32)
scorer.predict(x[:1])
loaded = rss_mb()
scorer.predict(x)
print(loaded, rss_mb())
"""


def test_a_big_batch_leaves_no_memory_behind(tmp_path: Path) -> None:
    """The int8 graph's intermediates grow with rows x trees; once a 10k-row batch is scored
    the process is back at its size after loading (onnxruntime's memory arena kept 6 MB more
    here for good, and glibc as much until trimmed)."""
    trained = train("reg:squarederror", tmp_path, rounds=400, max_depth=6)
    source = load_model(trained.path)
    graph = emit_int8(source.ensemble)
    model = assemble(graph, source.objective.link, len(NAMES), source.ensemble.num_outputs)
    (tmp_path / "model.onnx").write_bytes(model.onnx_bytes)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_AFTER_A_BATCH, str(tmp_path / "model.onnx"), str(len(NAMES))],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded, after = map(float, proc.stdout.split())
    assert after - loaded < 2.0, (loaded, after)


@pytest.mark.parametrize(
    ("required", "installed", "refused"),
    [
        ("1.21.0", "1.20.1", True),
        ("1.21.0", "1.21.0", False),
        ("1.21.0", "1.32.0", False),
        ("1.21.0", "1.21.0.dev20250101", False),
        ("1.21.0", "1.21", False),  # Debian trixie's python3-onnxruntime
        ("1.21.0", "1.20", True),
        ("2.0.0", "1.99.9", True),
    ],
)
def test_a_bundle_for_a_newer_onnxruntime_is_refused_in_words(
    required: str, installed: str, refused: bool
) -> None:
    if refused:
        message = f"the bundle needs onnxruntime >= {required}; this device has {installed}"
        with pytest.raises(CompatibilityError, match=re.escape(message)):
            check_onnxruntime(required, installed)
    else:
        check_onnxruntime(required, installed)
