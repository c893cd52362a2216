"""The memory and work a graph may ask of onnxruntime, summed over all its tensors at once."""

from __future__ import annotations

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck.schema import DTYPES, WHAT
from edgebundle.runtime.graphcheck.shapes import NONE, Dim, Tensor, at, elements, shape_text

# Summed over every tensor at once at the scorer's largest batch (see Budget): 1000 trees of
# depth 8 count 116 MB as int8 (onnxruntime's peak for it: ~30 MB) and 90 MB as float (peak
# ~65 MB), so this admits models about 4x those, and no graph that could take more than half
# a gigabyte.
MAX_GRAPH_BYTES = 512 << 20
# Only Gemm and ReduceSum do more work than they write elements: ~1 s of one slow core. The
# int8 Gemm sums [N, trees] leaves per class: 1000 trees x 10 classes at 512 rows is 5.1M;
# ReduceSum (one output) reads each of the [N, trees] leaves once.
MAX_MULTIPLY_ADDS = 1 << 30


class Budget:
    """Sums every tensor's bytes and Gemm's multiply-adds at ``rows`` rows, refusing the
    first that takes either total over its cap. A tensor whose size does not grow with the
    rows counts twice: onnxruntime may compute it at load (constant folding), and then holds
    it twice while it turns the value into an initializer (measured: a 128 MiB Expand
    raised the peak by 265 MB)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.graph_bytes = 0
        self.multiply_adds = 0

    def add(self, what: str, tensor: Tensor, work: Dim = NONE) -> None:
        growth = elements(tensor.shape, what)
        count = at(growth, self.rows)
        multiply_adds = at(work, self.rows)
        self.graph_bytes += count * DTYPES[tensor.dtype][1] * (1 if growth.per_row else 2)
        self.multiply_adds += multiply_adds
        if self.graph_bytes > MAX_GRAPH_BYTES:
            name, size = DTYPES[tensor.dtype]
            raise FormatError(
                f"{WHAT}: {what}: a {name} {shape_text(tensor.shape)} tensor "
                f"({count * size:,} bytes at {self.rows} rows) takes the graph over its "
                f"{MAX_GRAPH_BYTES:,}-byte budget"
            )
        if self.multiply_adds > MAX_MULTIPLY_ADDS:
            raise FormatError(
                f"{WHAT}: {what}: {multiply_adds:,} multiply-adds at {self.rows} rows take the "
                f"graph over its budget of {MAX_MULTIPLY_ADDS:,}"
            )

    def hold(self, what: str, size: int, held: str) -> None:
        """Memory an op keeps for itself whatever the rows: ``held`` says what for."""
        self.graph_bytes += size
        if self.graph_bytes > MAX_GRAPH_BYTES:
            raise FormatError(
                f"{WHAT}: {what}: {held} ({size:,} bytes) take the graph over its "
                f"{MAX_GRAPH_BYTES:,}-byte budget"
            )
