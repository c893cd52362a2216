"""A small ONNX node and initializer collector for the emitters' tensor graphs."""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper


class OpGraph:
    """Collects uniquely named nodes and initializers under the emitter's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, array: npt.NDArray[Any]) -> str:
        full = self.prefix + name
        self.initializers.append(numpy_helper.from_array(array, full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, output: str = "", **attrs: Any) -> str:
        out = output or self.prefix + name
        node = helper.make_node(op_type, inputs, [out], name=self.prefix + name, **attrs)
        self.nodes.append(node)
        return out

    def cast32(self, value: str, name: str) -> str:
        return self.op("Cast", [value], name, to=TensorProto.INT32)
