"""int8 tensor-traversal emitter against real XGBoost models, run in real onnxruntime.

The traversal must be exact (every row reaches the leaf XGBoost reaches, in every tree, at every
threshold +-1 ulp, for NaN, +-0 and +-inf), so margins differ from XGBoost's only by the leaf
quantization, which ``margin_error_bound`` bounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.emit_int8 import emit_int8
from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.int8.leaves import quantize_leaves
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree
from edgebundle.builder.errors import ConversionError

LEAF_TENSOR = "int8/leaf"  # the emitter's [N, T] dequantized leaf values before the sum


# --- IR from XGBoost (test-only stand-in for builder/convert/load.py) ------------------------


def ensemble_from_booster(booster: xgb.Booster, rows: npt.NDArray[np.float32]) -> Ensemble:
    """Trees from the booster's JSON; base margin = XGBoost's margin minus its own leaf sum."""
    learner = json.loads(booster.save_raw("json"))["learner"]
    model = learner["gradient_booster"]["model"]
    trees = tuple(
        _tree(t, int(target)) for t, target in zip(model["trees"], model["tree_info"], strict=True)
    )
    num_outputs = max(1, int(learner["learner_model_param"]["num_class"]))
    margins = booster.predict(xgb.DMatrix(rows), output_margin=True).reshape(len(rows), -1)
    leaf_sums = _leaf_sums(trees, num_outputs, booster.predict(xgb.DMatrix(rows), pred_leaf=True))
    return Ensemble(
        trees=trees,
        num_features=int(learner["learner_model_param"]["num_feature"]),
        num_outputs=num_outputs,
        base_margin=np.median(margins - leaf_sums, axis=0).astype(np.float32),
    )


def _tree(raw: dict[str, Any], target: int) -> Tree:
    left = np.array(raw["left_children"], dtype=np.int32)
    conditions = np.array(raw["split_conditions"], dtype=np.float32)
    leaf = left == -1
    return Tree(
        left=np.where(leaf, LEAF, left).astype(np.int32),
        right=np.array(raw["right_children"], dtype=np.int32),
        feature=np.array(raw["split_indices"], dtype=np.int32),
        threshold=conditions,
        default_left=np.array(raw["default_left"], dtype=bool),
        value=np.where(leaf, conditions, 0).astype(np.float32),
        target=target,
    )


def _leaf_sums(
    trees: tuple[Tree, ...], num_outputs: int, leaf_ids: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    ids = leaf_ids.astype(np.int64).reshape(leaf_ids.shape[0], -1)
    sums = np.zeros((ids.shape[0], num_outputs))
    for t, tree in enumerate(trees):
        sums[:, tree.target] += tree.value[ids[:, t]]
    return sums


# --- reference traversal and the graph under test ---------------------------------------------


def reference_leaves(ensemble: Ensemble, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """XGBoost's rule in numpy: go left when x < threshold, or when missing and default_left."""
    out = np.empty((x.shape[0], len(ensemble.trees)), dtype=np.int64)
    rows = np.arange(x.shape[0])
    for t, tree in enumerate(ensemble.trees):
        node = np.zeros(x.shape[0], dtype=np.int64)
        for _ in range(tree.depth()):
            value = x[rows, tree.feature[node]]
            go_left = np.where(
                np.isnan(value), tree.default_left[node], value < tree.threshold[node]
            )
            child = np.where(go_left, tree.left[node], tree.right[node])
            node = np.where(tree.left[node] == LEAF, node, child)
        out[:, t] = node
    return out


@dataclass
class Scored:
    margin: npt.NDArray[np.float32]  # [N, num_outputs]
    leaf_values: npt.NDArray[np.float32]  # [N, T]: code x scale (+ base in tree 0, one output)


def onnx_model(graph: MarginGraph, ensemble: Ensemble) -> onnx.ModelProto:
    outputs = [
        helper.make_tensor_value_info(MARGIN_NAME, TensorProto.FLOAT, [None, ensemble.num_outputs]),
        helper.make_tensor_value_info(LEAF_TENSOR, TensorProto.FLOAT, [None, len(ensemble.trees)]),
    ]
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "int8_margin",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, None])],
            outputs,
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in graph.opsets.items()],
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def score(graph: MarginGraph, ensemble: Ensemble, x: npt.NDArray[np.float32]) -> Scored:
    session = ort.InferenceSession(
        onnx_model(graph, ensemble).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    margin, leaf_values = session.run([MARGIN_NAME, LEAF_TENSOR], {INPUT_NAME: x})
    return Scored(margin=margin, leaf_values=leaf_values)


def quantized_codes(ensemble: Ensemble, leaf_bits: int, leaf_ids: npt.NDArray[np.int64]) -> Any:
    codes = quantize_leaves(ensemble.trees, leaf_bits).codes
    return np.stack([codes[t][leaf_ids[:, t]] for t in range(len(codes))], axis=1)


def leaf_values(ensemble: Ensemble, leaf_bits: int, leaf_ids: npt.NDArray[np.int64]) -> Any:
    """What the graph's leaf tensor must hold exactly: each reached leaf's code x its tree's
    scale in float32, plus the base margin in tree 0 when there is one output."""
    scales = quantize_leaves(ensemble.trees, leaf_bits).scales
    values = quantized_codes(ensemble, leaf_bits, leaf_ids).astype(np.float32) * scales
    if ensemble.num_outputs == 1:
        values[:, 0] += ensemble.base_margin[0]
    return values


def summation_tolerance(ensemble: Ensemble) -> float:
    """Room for float32 accumulation of T leaves: generous multiple of T * eps * sum|leaf|."""
    magnitude = sum(float(np.abs(t.value).max()) for t in ensemble.trees)
    magnitude += float(np.abs(ensemble.base_margin).max())
    return 8 * len(ensemble.trees) * float(np.finfo(np.float32).eps) * magnitude + 1e-6


# --- models and rows ---------------------------------------------------------------------------


@dataclass
class Case:
    booster: xgb.Booster
    ensemble: Ensemble
    rows: npt.NDArray[np.float32]  # edge rows + random rows, all finite or NaN


def _train(params: dict[str, Any], x: Any, y: Any, rounds: int) -> xgb.Booster:
    return xgb.train({"nthread": 1, "seed": 0, **params}, xgb.DMatrix(x, label=y), rounds)


def _data(rng: np.random.Generator, n: int, f: int, nan: float = 0.0) -> npt.NDArray[np.float32]:
    x = rng.normal(size=(n, f)).astype(np.float32)
    x[rng.random(x.shape) < nan] = np.nan
    return x


def _signal(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    clean = np.nan_to_num(x.astype(np.float64))
    return 2 * clean[:, 0] + clean[:, 1] ** 2 - clean[:, 2]


def _build_booster(name: str) -> tuple[xgb.Booster, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(7)
    y: npt.NDArray[Any]
    if name == "binary":
        x = _data(rng, 1500, 6, nan=0.1)
        y = _signal(x) + rng.normal(size=len(x)) > 0
        return _train({"objective": "binary:logistic", "max_depth": 5}, x, y, 25), x
    if name == "multiclass":
        x = _data(rng, 1200, 5, nan=0.05)
        y = np.digitize(_signal(x), [-1.0, 1.0])
        params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 4}
        return _train(params, x, y, 8), x
    if name == "regression":
        x = _data(rng, 1500, 4)
        y = 100 * _signal(x) + rng.normal(size=len(x))
        return _train({"objective": "reg:squarederror", "max_depth": 6}, x, y, 20), x
    if name == "lossguide":
        x = _data(rng, 3000, 4, nan=0.05)
        y = _signal(x) + rng.normal(size=len(x))
        params = {"grow_policy": "lossguide", "max_depth": 0, "max_leaves": 128}
        return _train({"objective": "reg:squarederror", **params}, x, y, 8), x
    if name == "wide":  # exact method: >256 distinct thresholds in a feature
        x = _data(rng, 1500, 3)
        params = {"objective": "reg:squarederror", "tree_method": "exact", "max_depth": 6}
        return _train(params, x, _signal(x), 30), x
    if name == "single_leaf_trees":  # later trees cannot pay the split cost: one leaf each
        x = _data(rng, 600, 3, nan=0.1)
        y = 3.0 * (np.nan_to_num(x[:, 0]) > 0) + 10.0
        params = {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.5, "gamma": 20}
        return _train({**params, "base_score": 0.0}, x, y, 12), x
    raise AssertionError(name)


def edge_rows(ensemble: Ensemble, sample: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows on, 1 ulp below and 1 ulp above every threshold; NaN, +-0 and denormals per feature."""
    probes = []
    for f, thresholds in enumerate(ensemble.thresholds_per_feature()):
        below = np.nextafter(thresholds, np.float32(-np.inf))
        above = np.nextafter(thresholds, np.float32(np.inf))
        specials = np.array([np.nan, 0.0, -0.0, 1e-45, -1e-45], dtype=np.float32)
        for value in np.concatenate([thresholds, below, above, specials]):
            probes.append((f, value))
    rows: npt.NDArray[np.float32] = sample[np.arange(len(probes)) % len(sample)]
    for i, (f, value) in enumerate(probes):
        rows[i, f] = value
    return rows


CASES = ["binary", "multiclass", "regression", "lossguide", "wide", "single_leaf_trees"]


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    booster, x = _build_booster(request.param)
    ensemble = ensemble_from_booster(booster, x[:50])
    rows = np.concatenate([edge_rows(ensemble, x[:200]), x[-300:]])
    return Case(booster=booster, ensemble=ensemble, rows=rows)


def _layouts(ensemble: Ensemble) -> list[str]:
    shallow = max(t.depth() for t in ensemble.trees) <= 8
    return ["perfect", "node-array"] if shallow else ["node-array"]


# --- tests -------------------------------------------------------------------------------------


def test_reference_traversal_is_xgboost(case: Case) -> None:
    xgb_leaves = case.booster.predict(xgb.DMatrix(case.rows), pred_leaf=True)
    expected = xgb_leaves.astype(np.int64).reshape(len(case.rows), -1)
    np.testing.assert_array_equal(reference_leaves(case.ensemble, case.rows), expected)


def test_every_row_reaches_xgboosts_leaf(case: Case) -> None:
    leaf_ids = case.booster.predict(xgb.DMatrix(case.rows), pred_leaf=True)
    leaf_ids = leaf_ids.astype(np.int64).reshape(len(case.rows), -1)
    expected_codes = quantized_codes(case.ensemble, 16, leaf_ids)
    scales = quantize_leaves(case.ensemble.trees, 16).scales.astype(np.float64)
    routed = np.zeros((len(case.ensemble.trees), case.ensemble.num_outputs))
    routed[np.arange(len(scales)), [t.target for t in case.ensemble.trees]] = scales
    expected_margin = expected_codes @ routed + case.ensemble.base_margin
    for layout in _layouts(case.ensemble):
        scored = score(emit_int8(case.ensemble, 16, layout), case.ensemble, case.rows)
        expected = leaf_values(case.ensemble, 16, leaf_ids)
        np.testing.assert_array_equal(scored.leaf_values, expected, err_msg=layout)
        np.testing.assert_allclose(
            scored.margin, expected_margin, rtol=0, atol=summation_tolerance(case.ensemble)
        )


def test_infinities_compare_like_xgboost(case: Case) -> None:
    rows = case.rows[:200].copy()
    rows[::2, : case.ensemble.num_features // 2] = np.inf
    rows[1::2, case.ensemble.num_features // 2 :] = -np.inf
    expected = leaf_values(case.ensemble, 16, reference_leaves(case.ensemble, rows))
    for layout in _layouts(case.ensemble):
        scored = score(emit_int8(case.ensemble, 16, layout), case.ensemble, rows)
        np.testing.assert_array_equal(scored.leaf_values, expected, err_msg=layout)


@pytest.mark.parametrize("leaf_bits", [8, 16])
def test_margin_error_within_reported_bound(case: Case, leaf_bits: int) -> None:
    graph = emit_int8(case.ensemble, leaf_bits)
    margin = score(graph, case.ensemble, case.rows).margin
    xgb_margin = case.booster.predict(xgb.DMatrix(case.rows), output_margin=True)
    error = np.abs(margin - xgb_margin.reshape(margin.shape)).max()
    bound = graph.info["margin_error_bound"]
    assert isinstance(bound, float)
    assert error <= bound + summation_tolerance(case.ensemble)


def test_int16_bound_is_about_258_times_tighter(case: Case) -> None:
    bound8 = emit_int8(case.ensemble, 8).info["margin_error_bound"]
    bound16 = emit_int8(case.ensemble, 16).info["margin_error_bound"]
    assert bound16 * 257 <= bound8 <= bound16 * 259


def test_stored_tables_are_narrow_and_reported_truthfully(case: Case) -> None:
    for leaf_bits, leaf_dtype in [(8, np.int8), (16, np.int16)]:
        graph = emit_int8(case.ensemble, leaf_bits)
        stored = {i.name: numpy_helper.to_array(i) for i in graph.initializers}
        assert stored["int8/leaf_codes"].dtype == leaf_dtype
        codes = [v for k, v in stored.items() if k.endswith("/code")]
        segments = [v for k, v in stored.items() if k.endswith("/segment")]
        assert all(c.dtype == np.uint8 for c in codes)
        assert all(s.dtype == np.uint8 for s in segments)
        if "int8/left_child" in stored:
            assert stored["int8/left_child"].dtype == np.uint8
        # Floats stored: only the thresholds (each once), per-tree scales and the base margin.
        floats = {k for k, v in stored.items() if v.dtype == np.float32 and v.size > 1}
        assert floats <= {"int8/thresholds", "int8/tree_scale", "int8/base_margin"}
        split_features = sum(len(t) > 0 for t in case.ensemble.thresholds_per_feature())
        expected = {"uint8": split_features} if split_features else {}
        assert graph.info["bin_dtypes"] == expected


def test_info_names_and_opsets(case: Case) -> None:
    graph = emit_int8(case.ensemble)
    assert set(graph.info) == {
        "scheme",
        "layout",
        "leaf_bits",
        "bin_dtypes",
        "margin_error_bound",
    }
    assert graph.info["leaf_bits"] == 8
    assert graph.opsets == {"": 15}
    assert all(n.domain in ("", "ai.onnx") for n in graph.nodes)
    node_names = [n.name for n in graph.nodes]
    tensor_names = [o for n in graph.nodes for o in n.output] + [i.name for i in graph.initializers]
    for names in (node_names, tensor_names):
        assert len(names) == len(set(names))
        assert not any(name.startswith("link/") for name in names)
    assert MARGIN_NAME in tensor_names


def test_wide_feature_keeps_every_threshold_in_uint8_segments() -> None:
    booster, x = _build_booster("wide")
    ensemble = ensemble_from_booster(booster, x[:50])
    widest = max(len(t) for t in ensemble.thresholds_per_feature())
    assert widest > 256  # the scenario this test is about
    stored = {i.name: numpy_helper.to_array(i) for i in emit_int8(ensemble).initializers}
    assert (
        stored["int8/thresholds"].size == sum(len(t) for t in ensemble.thresholds_per_feature()) + 1
    )  # + the NaN sentinel: nothing merged
    assert len(stored["int8/segment_offset"]) > 2 * ensemble.num_features + 1


def test_layouts_give_identical_margins() -> None:
    booster, x = _build_booster("binary")
    ensemble = ensemble_from_booster(booster, x[:50])
    rows = np.concatenate([edge_rows(ensemble, x[:100]), x[-200:]])
    perfect = score(emit_int8(ensemble, layout="perfect"), ensemble, rows).margin
    node_array = score(emit_int8(ensemble, layout="node-array"), ensemble, rows).margin
    np.testing.assert_array_equal(perfect, node_array)


@pytest.mark.parametrize(("name", "layout"), [("binary", "perfect"), ("lossguide", "node-array")])
def test_automatic_layout_pads_shallow_trees_and_not_deep_ones(name: str, layout: str) -> None:
    booster, x = _build_booster(name)
    ensemble = ensemble_from_booster(booster, x[:50])
    assert (max(t.depth() for t in ensemble.trees) >= 15) == (layout == "node-array")
    assert emit_int8(ensemble).info["layout"] == layout


# --- synthetic IR edge cases ---------------------------------------------------------------------


def _stump(value_left: float, value_right: float, target: int = 0) -> Tree:
    return Tree(
        left=np.array([1, LEAF, LEAF], dtype=np.int32),
        right=np.array([2, LEAF, LEAF], dtype=np.int32),
        feature=np.array([0, 0, 0], dtype=np.int32),
        threshold=np.array([0.5, 0, 0], dtype=np.float32),
        default_left=np.array([True, False, False]),
        value=np.array([0, value_left, value_right], dtype=np.float32),
        target=target,
    )


def _chain(depth: int) -> Tree:
    """Node i splits on x0 < i: left is a leaf, right continues; ``depth`` splits in all."""
    n = 2 * depth + 1
    internal = np.arange(depth) * 2
    left = np.full(n, LEAF, dtype=np.int32)
    right = np.full(n, LEAF, dtype=np.int32)
    left[internal] = internal + 1
    right[internal] = internal + 2
    threshold = np.zeros(n, dtype=np.float32)
    threshold[internal] = np.arange(depth)
    return Tree(
        left=left,
        right=right,
        feature=np.zeros(n, dtype=np.int32),
        threshold=threshold,
        default_left=np.ones(n, dtype=bool),
        value=np.where(left == LEAF, np.arange(n), 0).astype(np.float32),
        target=0,
    )


def _ensemble(*trees: Tree, base: float = 0.25) -> Ensemble:
    return Ensemble(
        trees=trees,
        num_features=2,
        num_outputs=1,
        base_margin=np.array([base], dtype=np.float32),
    )


def test_all_zero_tree_gets_zero_scale_and_adds_nothing() -> None:
    ensemble = _ensemble(_stump(0.0, 0.0), _stump(-1.0, 1.0))
    graph = emit_int8(ensemble)
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [np.nan, 0.0]], dtype=np.float32)
    margin = score(graph, ensemble, rows).margin[:, 0]
    np.testing.assert_allclose(margin, [0.25 - 1.0, 0.25 + 1.0, 0.25 - 1.0], atol=1e-6)
    assert quantize_leaves(ensemble.trees, 8).scales[0] == 0.0
    assert np.isfinite(graph.info["margin_error_bound"])


def test_chain_deeper_than_padding_allows_uses_node_array() -> None:
    ensemble = _ensemble(_chain(30))
    with pytest.raises(ConversionError, match="node-array"):
        emit_int8(ensemble, layout="perfect")
    rows = np.array([[v, 0.0] for v in (-1.0, 0.0, 7.5, 29.0, 100.0, np.nan)], dtype=np.float32)
    scored = score(emit_int8(ensemble, 16), ensemble, rows)
    assert emit_int8(ensemble).info["layout"] == "node-array"
    expected = leaf_values(ensemble, 16, reference_leaves(ensemble, rows))
    np.testing.assert_array_equal(scored.leaf_values, expected)


def test_rejects_what_it_cannot_emit() -> None:
    with pytest.raises(ValueError, match="leaf_bits"):
        emit_int8(_ensemble(_stump(1.0, 2.0)), leaf_bits=4)
    with pytest.raises(ValueError, match="layout"):
        emit_int8(_ensemble(_stump(1.0, 2.0)), layout="dense")
    with pytest.raises(ConversionError, match="no trees"):
        emit_int8(_ensemble())
