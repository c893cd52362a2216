"""The contract between emitters and the objective's link: a graph computing margins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INPUT_NAME = "input"  # float32 [N, num_features], NaN = missing
MARGIN_NAME = "margin"  # float32 [N, num_outputs], base margin included


@dataclass
class MarginGraph:
    """ONNX nodes and initializers that map ``INPUT_NAME`` to ``MARGIN_NAME``.

    Node and initializer names are unique within the graph; the link function appends its own
    under the ``link/`` prefix. ``opsets`` maps an ONNX domain ("" or "ai.onnx.ml") to the
    opset version the nodes need. ``info`` carries what the emitter wants in the manifest's
    quantization report (layout, bin widths, leaf bits, error bound...). ``min_onnxruntime``
    goes into the manifest's requirements: a device with an older one refuses the bundle.
    """

    nodes: list[Any]  # onnx.NodeProto; builder-only, so onnx stays out of type stubs here
    initializers: list[Any]  # onnx.TensorProto
    opsets: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)
    min_onnxruntime: str = "1.20.0"  # the oldest onnxruntime with kernels for every node
