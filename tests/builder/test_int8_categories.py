"""int8 graphs of categorical splits: every category a split lists, unseen and negative codes,
non-integer codes and missing values reach XGBoost's leaves, in both layouts and leaf widths.

The graph's margin must equal the sum of the quantized leaves XGBoost's ``pred_leaf`` names
(to float32 summation), so a single wrong branch in any tree shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import xgboost as xgb
from onnx import TensorProto, helper

from edgebundle.builder.convert.categories import split_categories
from edgebundle.builder.convert.emit_int8 import emit_int8
from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.int8.leaves import quantize_leaves
from edgebundle.builder.convert.ir import Ensemble
from edgebundle.builder.convert.load import load_model
from tests.support.zoo import CAT_NAMES, CATEGORICAL, train_categorical

F32 = npt.NDArray[np.float32]


def _margins(graph: MarginGraph, ensemble: Ensemble, x: F32) -> F32:
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "int8_categories",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, x.shape[1]])],
            [helper.make_tensor_value_info(MARGIN_NAME, TensorProto.FLOAT, [None, 1])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in graph.opsets.items()],
    )
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (margin,) = session.run([MARGIN_NAME], {INPUT_NAME: x})
    return np.asarray(margin)[:, 0]


def _matrix(x: F32) -> xgb.DMatrix:
    return xgb.DMatrix(
        x, missing=np.nan, feature_names=list(CAT_NAMES), feature_types=["c", "q", "q"],
        enable_categorical=True,
    )


def _quantized_margins(
    booster: xgb.Booster, ensemble: Ensemble, leaf_bits: int, x: F32
) -> npt.NDArray[np.float64]:
    """Base margin plus, per tree, the quantized value of the leaf XGBoost reaches."""
    reached = np.asarray(booster.predict(_matrix(x), pred_leaf=True), dtype=np.int64)
    leaves = quantize_leaves(ensemble.trees, leaf_bits)
    total = np.full(x.shape[0], float(ensemble.base_margin[0]))
    for t in range(len(ensemble.trees)):
        total += leaves.codes[t][reached[:, t]].astype(np.float64) * float(leaves.scales[t])
    return total


@pytest.fixture(scope="module", params=sorted(CATEGORICAL))
def model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[xgb.Booster, Ensemble, F32]:
    booster, path, rows = train_categorical(request.param, tmp_path_factory.mktemp("cat"))
    return booster, load_model(Path(path)).ensemble, rows


@pytest.mark.parametrize("layout", ["perfect", "node-array"])
@pytest.mark.parametrize("leaf_bits", [8, 16])
def test_every_category_unseen_negative_fractional_and_missing_code_takes_xgboosts_branch(
    model: tuple[xgb.Booster, Ensemble, F32], layout: str, leaf_bits: int
) -> None:
    booster, ensemble, rows = model
    assert ensemble.has_category_splits
    graph = emit_int8(ensemble, leaf_bits, layout)
    got = _margins(graph, ensemble, rows).astype(np.float64)
    expected = _quantized_margins(booster, ensemble, leaf_bits, rows)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    exact = np.asarray(booster.predict(_matrix(rows), output_margin=True), dtype=np.float64)
    assert np.abs(got - exact).max() <= graph.info["margin_error_bound"] + 1e-5


def test_codes_far_past_the_listed_ones_and_infinities_go_left(
    model: tuple[xgb.Booster, Ensemble, F32],
) -> None:
    """Codes no split lists, however large, are the 'other' row: as XGBoost, they go left."""
    booster, ensemble, rows = model
    graph = emit_int8(ensemble, 16)
    far = np.repeat(rows[:1], 4, axis=0)
    far[:, 0] = [2.0**24 + 2, 1e9, 3e38, -1e9]
    unseen = far.copy()
    unseen[:, 0] = float(ensemble.categories_per_feature()[0].max() + 1)
    np.testing.assert_array_equal(_margins(graph, ensemble, far), _margins(graph, ensemble, unseen))
    expected = _quantized_margins(booster, ensemble, 16, unseen)
    np.testing.assert_allclose(_margins(graph, ensemble, far), expected, rtol=0, atol=1e-5)


def test_each_distinct_set_is_one_bit_per_category(
    model: tuple[xgb.Booster, Ensemble, F32],
) -> None:
    """Stored: ceil(sets / 8) bytes for each listed category and one 'other' row, no more."""
    _, ensemble, _ = model
    numeric, memberships = split_categories(ensemble)
    (shop,) = memberships
    sets = {
        np.asarray(m).tobytes() for t in ensemble.trees for m in t.categories.values()
    }
    assert shop.feature == 0 and shop.sets == len(sets)
    codes = int(ensemble.categories_per_feature()[0].max()) + 1
    assert shop.bits.shape == (codes + 1, -(-len(sets) // 8)) and shop.bits.dtype == np.uint8
    assert not shop.bits[codes].any()  # the 'other' row: no set lists it
    assert not numeric.has_category_splits
    assert numeric.num_features == ensemble.num_features + len(sets)
