"""gblinear models as ONNX: missing values to 0 (XGBoost skips them), one Gemm, the bias.

Float stores XGBoost's float32 weights. int8 stores each weight as an int8 (or int16) code of
its feature's float32 scale (max |weight| of the feature over the outputs / qmax), decoded by
constant nodes onnxruntime folds at load. A weight moves by at most half its feature's scale,
so a row's margin moves by at most ``sum_f |x_f| * scale_f / 2``; the report states that bound
for the largest |x_f| of the rows the build checked (see ``margin_error_bound``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.ir import Linear

SCHEME = "linear-feature-scaled-weights/1"
LAYOUT = "linear"
_QMAX = {8: 127, 16: 32767}
_CODE_DTYPES: dict[int, type[np.signedinteger[Any]]] = {8: np.int8, 16: np.int16}
_OPSET = 17
MIN_ONNXRUNTIME = "1.20.0"  # standard ops only (IsNaN, Where, Gemm, Cast, Mul)
F32 = npt.NDArray[np.float32]


def emit_linear_float(linear: Linear) -> MarginGraph:
    """The float32 weights as XGBoost stores them."""
    weights = numpy_helper.from_array(linear.weights.astype(np.float32), "linear/weights")
    nodes, initializers = _gemm(weights.name, linear)
    return MarginGraph(
        nodes, [weights, *initializers], {"": _OPSET}, {}, min_onnxruntime=MIN_ONNXRUNTIME
    )


def emit_linear_int8(linear: Linear, bits: int, input_bound: F32) -> MarginGraph:
    """Weights as ``bits``-bit codes with one scale per feature. ``input_bound[f]`` is the
    largest |x_f| the error bound is stated for (the build's check rows)."""
    codes, scales = quantize_weights(linear.weights, bits)
    code_tensor = numpy_helper.from_array(codes, "linear/weight_codes")
    scale_tensor = numpy_helper.from_array(scales[:, None], "linear/weight_scales")
    decoded = [
        helper.make_node(
            "Cast", [code_tensor.name], ["linear/weight_values"], to=TensorProto.FLOAT
        ),
        helper.make_node(
            "Mul", ["linear/weight_values", scale_tensor.name], ["linear/weights"]
        ),
    ]
    nodes, initializers = _gemm("linear/weights", linear)
    dequantized = codes.astype(np.float32) * scales[:, None]
    error = np.abs(dequantized.astype(np.float64) - linear.weights.astype(np.float64))
    bound = float(np.sum(np.nan_to_num(input_bound).astype(np.float64) * error.max(axis=1)))
    info = {
        "scheme": SCHEME,
        "layout": LAYOUT,
        "leaf_bits": bits,  # the weights' code width
        "bin_dtypes": {},
        "margin_error_bound": bound,
    }
    return MarginGraph(
        [*decoded, *nodes],
        [code_tensor, scale_tensor, *initializers],
        {"": _OPSET},
        info,
        min_onnxruntime=MIN_ONNXRUNTIME,
    )


def quantize_weights(weights: F32, bits: int) -> tuple[npt.NDArray[Any], F32]:
    """Per feature (row): codes = round(w / scale), scale = max |w| / qmax (1 for a feature
    whose weights are all 0, so its codes are 0)."""
    qmax = _QMAX[bits]
    peak = np.abs(weights).max(axis=1).astype(np.float32)
    scales = np.where(peak > 0, peak / np.float32(qmax), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(weights / scales[:, None]), -qmax, qmax)
    return codes.astype(_CODE_DTYPES[bits]), scales


def _gemm(weights: str, linear: Linear) -> tuple[list[Any], list[Any]]:
    zero = numpy_helper.from_array(np.zeros((), np.float32), "linear/zero")
    bias = numpy_helper.from_array(linear.bias.astype(np.float32), "linear/bias")
    nodes = [
        helper.make_node("IsNaN", [INPUT_NAME], ["linear/missing"]),
        helper.make_node(
            "Where", ["linear/missing", zero.name, INPUT_NAME], ["linear/present"]
        ),
        helper.make_node("Gemm", ["linear/present", weights, bias.name], [MARGIN_NAME]),
    ]
    return nodes, [zero, bias]
