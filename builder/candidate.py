"""One emitted model with its measurements: a row of the build report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.builder.convert.link import BuiltModel
from edgebundle.runtime.manifest import Parity
from edgebundle.runtime.scoring import Scorer


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    precision: str  # float, int8, int16
    model: BuiltModel
    graph_info: dict[str, Any]  # the emitter's quantization report; empty for float
    min_onnxruntime: str  # the oldest onnxruntime that runs the model
    parity: Parity
    outputs: dict[str, npt.NDArray[np.generic]]  # on the check rows
    scorer: Scorer  # kept for the interleaved latency measurement
    load_ms: float
    us_per_row: float = 0.0  # median one-row latency, set by builder/measure.py
    model_rss_bytes: int | None = None  # measured only when optimizing for memory

    @property
    def size(self) -> int:
        return len(self.model.onnx_bytes)
