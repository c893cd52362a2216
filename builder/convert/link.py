"""Append the objective's link to a margin graph and assemble the ONNX model.

The graph's outputs are the scoring contract's record keys, first the value equal
to ``Booster.predict()``; the runtime turns them into records without knowing objectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.objectives import Link
from edgebundle.runtime.manifest import OutputSpec

IR_VERSION = 10  # onnx 1.16 / onnxruntime 1.20: the oldest that knows ai.onnx.ml opset 5
_DEFAULT_OPSET = 17


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltModel:
    onnx_bytes: bytes
    outputs: tuple[OutputSpec, ...]
    opsets: dict[str, int]


@dataclass
class _LinkGraph:
    """Nodes after the margin, named under ``link/`` so they never clash with emitters'."""

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def column(self) -> str:
        axes = self.const("link/axis1", np.asarray([1], dtype=np.int64))
        return self.op("Squeeze", [MARGIN_NAME, axes], "link/margin0")

    def positive(self, value: str, threshold: float, output: str) -> str:
        cut = self.const("link/cut", np.asarray(threshold, dtype=np.float32))
        above = self.op("Greater", [value, cut], "link/above")
        return self.op("Cast", [above], output, to=TensorProto.INT64)


def _apply_link(
    g: _LinkGraph, link: Link, num_outputs: int, columns: tuple[str, ...] | None
) -> tuple[OutputSpec, ...]:
    """Emit the link's nodes; each output node's name is its graph output name. Several
    targets or quantiles (``columns``) keep the margin's [N, K] shape, element-wise links."""
    if link in (Link.SOFTPROB, Link.SOFTMAX):
        g.op("Softmax", [MARGIN_NAME], "probabilities", axis=1)
        # argmax of margins, first maximum on ties, as XGBoost's softmax prediction does
        g.op("ArgMax", [MARGIN_NAME], "label", axis=1, keepdims=0)
        probs = OutputSpec(name="probabilities", dtype="float32", shape=(-1, num_outputs))
        label = OutputSpec(name="label", dtype="int64", shape=(-1,))
        return (probs, label) if link is Link.SOFTPROB else (label, probs)
    dims = () if columns is None else (num_outputs,)

    def spec(name: str, dtype: str = "float32") -> OutputSpec:
        return OutputSpec(name=name, dtype=dtype, shape=(-1, *dims), columns=columns)

    margin = g.column() if columns is None else MARGIN_NAME
    if link is Link.PROBABILITY:
        g.op("Sigmoid", [margin], "probability")
        g.positive("probability", 0.5, "label")
        return (spec("probability"), spec("label", "int64"))
    if link is Link.SCORE:
        g.op("Identity", [margin], "score")
        g.positive(margin, 0.0, "label")
        return (spec("score"), spec("label", "int64"))
    if link is Link.HINGE:
        g.positive(margin, 0.0, "label")
        return (spec("label", "int64"),)
    transform = {Link.IDENTITY: "Identity", Link.SIGMOID: "Sigmoid", Link.EXP: "Exp"}[link]
    g.op(transform, [margin], "prediction")
    return (spec("prediction"),)


def assemble(
    margin: MarginGraph,
    link: Link,
    num_features: int,
    num_outputs: int,
    columns: tuple[str, ...] | None = None,
) -> BuiltModel:
    """The whole model: ``input`` float32 [N, F] → the link's named outputs; ``columns`` names
    the outputs of a multi-target or multi-quantile model (None: one output)."""
    g = _LinkGraph(nodes=[], initializers=[])
    outputs = _apply_link(g, link, num_outputs, columns)
    opsets = {"": _DEFAULT_OPSET, **margin.opsets}
    opsets[""] = max(opsets[""], _DEFAULT_OPSET)
    graph = helper.make_graph(
        [*margin.nodes, *g.nodes],
        "edgebundle",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", num_features])],
        [_value_info(spec) for spec in outputs],
        initializer=[*margin.initializers, *g.initializers],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in sorted(opsets.items())],
        ir_version=IR_VERSION,
        producer_name="edgebundle",
    )
    onnx.checker.check_model(model, full_check=True)
    return BuiltModel(onnx_bytes=model.SerializeToString(), outputs=outputs, opsets=opsets)


def _value_info(spec: OutputSpec) -> onnx.ValueInfoProto:
    elem = TensorProto.FLOAT if spec.dtype == "float32" else TensorProto.INT64
    dims: list[str | int] = ["N", *spec.shape[1:]]
    return helper.make_tensor_value_info(spec.name, elem, dims)
