"""How a categorical feature's distinct sets are stored, and decoded at load into a 0/1 table.

Either encoding ends as the same float32 [C + 2, K] table (``categories.py`` gathers its rows):
row c < C holds 1 in column j where set j lists category c, row C (every other category) is
all 0 and row C + 1 (missing) all NaN. Both are constant subgraphs of standard ops that
onnxruntime folds at load, and ``decoded_table`` stores whichever takes fewer bytes.

- Bit table: ceil(K/8) bytes a code (set j is bit ``j // B`` of byte ``j % B``, B bytes a
  row), decoded by eight whole-table multiplies with no bitwise ops (bit k of b is
  ``floor(b / 2**k) - 2 * floor(b / 2**(k+1))``). One bit per (code, set): dense sets.
- Sparse steps: each set by its smaller side (its members, or the codes below C it does not
  list, marked as complemented), the listed cells of the code-major [C, K] table as one
  ascending sequence of flat positions ``c * K + j``, stored as uint8 steps from the previous
  position (from -1 for the first). A step of 1..255 moves that far and lists the cell it
  reaches; 0 moves 255 and lists nothing, for a gap longer than 255 (such a stop always falls
  strictly between two listed cells, so it never clears one). At load the steps are summed
  (``CumSum``) into positions, scattered (``ScatterElements``) into a zero table, reshaped to
  [C, K] and complemented where marked. About one byte a listed cell, so sets listing under
  1 in 8 codes on their smaller side store smaller than as bits. XGBoost's partitions keep
  one side small (``max_cat_threshold``, 64 by default: the zoo's 1000-category model lists
  2-63 or 937-995 codes a set), so many categories store ~3 times smaller (5.7 KB against
  16 KB there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from edgebundle.builder.convert.opgraph import OpGraph

_BITS = 8
_STRIDE = 255  # the longest step; a 0 step moves this far and lists nothing


@dataclass(frozen=True)
class Membership:
    """One categorical feature's distinct sets, in the order of their columns."""

    feature: int
    members: tuple[npt.NDArray[np.int32], ...]  # each set's categories, ascending, non-negative

    @property
    def sets(self) -> int:
        """K, its virtual columns."""
        return len(self.members)

    @property
    def codes(self) -> int:
        """C: categories 0..C-1 have their own row."""
        return max((int(s.max()) + 1 for s in self.members if s.size), default=0)

    @property
    def bits(self) -> npt.NDArray[np.uint8]:
        """[C + 1, B]: row c holds the sets listing category c; row C, no set."""
        width = -(-self.sets // _BITS)
        dense = np.zeros((self.codes + 1, _BITS * width), dtype=np.uint8)
        for j, listed in enumerate(self.members):
            dense[listed, j] = 1
        weights = (1 << np.arange(_BITS, dtype=np.uint32))[None, :, None]
        packed = (dense.reshape(self.codes + 1, _BITS, width) * weights).sum(axis=1)
        return np.asarray(packed, dtype=np.uint8)

    def steps(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """The sparse encoding: uint8 steps between listed flat positions, and per set 1 where
        its complement below C is listed instead of its members."""
        codes, sets = self.codes, self.sets
        complemented = np.zeros(sets, dtype=np.uint8)
        positions = []
        for j, members in enumerate(self.members):
            listed = np.unique(members)
            if 2 * listed.size > codes:
                listed = np.setdiff1d(np.arange(codes, dtype=np.int32), listed)
                complemented[j] = 1
            positions.append(listed.astype(np.int64) * sets + j)
        flat = np.sort(np.concatenate([np.zeros(0, np.int64), *positions]))
        gaps = np.diff(flat, prepend=-1)
        stops = (gaps - 1) // _STRIDE  # 0 steps before each listed cell
        steps = np.zeros(int(stops.sum() + gaps.size), dtype=np.uint8)
        steps[np.cumsum(stops + 1) - 1] = gaps - _STRIDE * stops
        return steps, complemented


def decoded_table(graph: OpGraph, m: Membership, name: str) -> str:
    """Float32 [C + 2, K] (see the module's docstring), from whichever encoding stores fewer
    bytes (the bit table on a tie, or where the sparse one lists nothing)."""
    candidates = [bit_table]
    if m.steps()[0].size:
        candidates.append(sparse_table)
    built: list[tuple[int, int, OpGraph, str]] = []
    for decode in candidates:
        scratch = OpGraph(graph.prefix)
        table = decode(scratch, m, name)
        size = sum(part.ByteSize() for part in [*scratch.nodes, *scratch.initializers])
        built.append((size, len(built), scratch, table))
    _, _, chosen, table = min(built, key=lambda b: b[:2])
    graph.nodes.extend(chosen.nodes)
    graph.initializers.extend(chosen.initializers)
    return table


def joined(graph: OpGraph, parts: list[str], name: str, axis: int) -> str:
    """Concat as a chain of two-input nodes: graphcheck admits no wider one."""
    result = parts[0]
    for i, part in enumerate(parts[1:]):
        result = graph.op("Concat", [result, part], f"{name}{i}", axis=axis)
    return result


def bit_table(graph: OpGraph, m: Membership, name: str) -> str:
    """The decoded table from the bit table (``name``'s nodes and initializers)."""
    packed = graph.op("Cast", [graph.const(f"{name}/bits", m.bits)], f"{name}/bits_f", to=_FLOAT)
    shifted = [
        graph.op(
            "Mul", [packed, graph.const(f"{name}/scale{k}", _float(2.0**-k))], f"{name}/shift{k}"
        )
        for k in range(_BITS)
    ]
    high = graph.op("Floor", [joined(graph, shifted, f"{name}/planes", axis=1)], f"{name}/high")
    halved = graph.op("Mul", [high, graph.const(f"{name}/half", _float(0.5))], f"{name}/halved")
    above = graph.op("Floor", [halved], f"{name}/above")
    drop = graph.op("Mul", [above, graph.const(f"{name}/minus_two", _float(-2.0))], f"{name}/drop")
    bit = graph.op("Add", [high, drop], f"{name}/bit")
    kept = graph.op(
        "Slice",
        [
            bit,
            graph.const(f"{name}/start", np.array([0])),
            graph.const(f"{name}/end", np.array([m.sets])),
            graph.const(f"{name}/axis", np.array([1])),
        ],
        f"{name}/sets",
    )
    missing = graph.op(
        "Expand",
        [
            graph.const(f"{name}/nan", _float(np.nan)),
            graph.const(f"{name}/nan_shape", _shape(1, m)),
        ],
        f"{name}/missing_row",
    )
    return graph.op("Concat", [kept, missing], f"{name}/table", axis=0)


def sparse_table(graph: OpGraph, m: Membership, name: str) -> str:
    """The decoded table from the sparse steps (``name``'s nodes and initializers)."""
    steps, complemented = m.steps()
    stored = graph.const(f"{name}/steps", steps)
    step = graph.op("Cast", [stored], f"{name}/step", to=TensorProto.INT64)
    zero = graph.const(f"{name}/zero", np.array(0, dtype=np.int64))
    moved = graph.op(
        "Where",
        [
            graph.op("Equal", [step, zero], f"{name}/stop"),
            graph.const(f"{name}/stride", np.array(_STRIDE, dtype=np.int64)),
            step,
        ],
        f"{name}/moved",
    )
    reached = graph.op("CumSum", [moved, zero], f"{name}/reached")
    before = graph.const(f"{name}/minus_one", np.array(-1, dtype=np.int64))
    position = graph.op("Add", [reached, before], f"{name}/position")
    listed = graph.op(
        "Cast", [graph.op("Greater", [step, zero], f"{name}/lists")], f"{name}/listed", to=_FLOAT
    )
    size = np.array([m.codes * m.sets])
    blank = graph.op(
        "Expand",
        [graph.const(f"{name}/zero_f", _float(0.0)), graph.const(f"{name}/cells", size)],
        f"{name}/blank",
    )
    flat = graph.op("ScatterElements", [blank, position, listed], f"{name}/flat", axis=0)
    cells = graph.op(
        "Reshape", [flat, graph.const(f"{name}/grid", _shape(m.codes, m))], f"{name}/cells_kc"
    )
    # XOR with the complemented flags: a + b - 2ab for 0/1 values.
    flags = graph.op(
        "Cast", [graph.const(f"{name}/complemented", complemented)], f"{name}/flags", to=_FLOAT
    )
    both = graph.op("Mul", [cells, flags], f"{name}/both")
    twice = graph.op("Mul", [both, graph.const(f"{name}/minus_two", _float(-2.0))], f"{name}/twice")
    kept = graph.op("Add", [graph.op("Add", [cells, flags], f"{name}/either"), twice], f"{name}/in")
    tail = graph.op(
        "Expand",
        [
            graph.const(f"{name}/tail_rows", np.array([[0.0], [np.nan]], dtype=np.float32)),
            graph.const(f"{name}/tail_shape", _shape(2, m)),
        ],
        f"{name}/tail",
    )
    return graph.op("Concat", [kept, tail], f"{name}/table", axis=0)


_FLOAT = TensorProto.FLOAT


def _float(value: float) -> npt.NDArray[np.float32]:
    return np.array(value, dtype=np.float32)


def _shape(rows: int, m: Membership) -> npt.NDArray[np.int64]:
    return np.array([rows, m.sets], dtype=np.int64)
