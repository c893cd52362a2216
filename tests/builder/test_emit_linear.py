"""gblinear's graphs: the float one equals numpy's sum; the int8 one stays within its bound."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgebundle.builder.convert.emit_linear import (
    emit_linear_float,
    emit_linear_int8,
    quantize_weights,
)
from edgebundle.builder.convert.graph import MarginGraph
from edgebundle.builder.convert.ir import Linear
from edgebundle.builder.convert.link import assemble
from edgebundle.builder.convert.objectives import Link


def margins(graph: MarginGraph, rows: np.ndarray, outputs: int) -> np.ndarray:
    columns = tuple(f"target_{k}" for k in range(outputs))
    built = assemble(graph, Link.IDENTITY, rows.shape[1], outputs, columns)
    session = ort.InferenceSession(built.onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["prediction"], {"input": rows})[0], dtype=np.float64)


@pytest.fixture
def linear() -> Linear:
    rng = np.random.default_rng(4)
    weights = rng.normal(size=(5, 3)) * np.asarray([[1e-3], [1], [50], [0], [7]])
    return Linear(weights=weights.astype(np.float32), bias=np.float32([0.5, -1, 2]))


def rows(bound: np.ndarray, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = (rng.uniform(-1, 1, size=(n, len(bound))) * bound).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


def test_float_graph_is_the_weighted_sum_of_present_features(linear: Linear) -> None:
    x = rows(np.full(5, 100.0))
    expected = np.nan_to_num(x).astype(np.float64) @ linear.weights + linear.bias
    np.testing.assert_allclose(margins(emit_linear_float(linear), x, 3), expected, rtol=1e-5)


@pytest.mark.parametrize("bits", [8, 16])
def test_quantized_margins_stay_within_the_reported_bound(linear: Linear, bits: int) -> None:
    bound = np.asarray([10, 1e3, 1, 5, 100], dtype=np.float32)
    graph = emit_linear_int8(linear, bits, bound)
    x = rows(bound)
    exact = np.nan_to_num(x).astype(np.float64) @ linear.weights + linear.bias
    error = np.abs(margins(graph, x, 3) - exact).max()
    reported = graph.info["margin_error_bound"]
    assert 0 < error <= reported * (1 + 1e-4) + 1e-4  # + the float32 Gemm's own rounding
    if bits == 16:
        assert reported < emit_linear_int8(linear, 8, bound).info["margin_error_bound"] / 100


def test_each_feature_has_its_own_scale(linear: Linear) -> None:
    codes, scales = quantize_weights(linear.weights, 8)
    assert codes.dtype == np.int8 and scales.shape == (5,)
    # every feature with a weight uses the whole code range; a feature of zeros codes zeros
    assert list(np.abs(codes).max(axis=1)) == [127, 127, 127, 0, 127]
    np.testing.assert_allclose(codes * scales[:, None], linear.weights, atol=scales.max())
