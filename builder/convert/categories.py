"""Categorical splits in the int8 graph: each distinct category set becomes a 0/1 input column.

A categorical node of feature f with set S becomes a numeric node on a virtual column (one per
distinct (f, S)) holding 1 where the row's category is in S and 0 otherwise, compared against
0.5: in the set goes right, anything else left, exactly XGBoost's rule. The column is NaN where
f is missing, so the traversal's widened input sends it along the node's default direction like
any numeric split. Everything after that (codebook, layouts, traversal) is the numeric path.

Stored, per categorical feature with K distinct sets and largest listed category C - 1: a bit
table of C + 1 rows (codes 0..C-1, then an all-zero row for every other category) and ceil(K/8)
bytes a row. Set j is bit ``j // B`` of byte ``j % B`` (B bytes a row), so the load-time decode
is eight whole-table multiplies concatenated in column order, with the ops graphcheck allows
(no bitwise ops: bit k of b is ``floor(b / 2**k) - 2 * floor(b / 2**(k+1))``). onnxruntime folds
that to a float32 [C + 2, K] table (the last row NaN, for missing) at load. Each run floors the
column (a non-integer category counts as its integer part, as in the float path), maps NaN to
row C + 1 and anything outside [0, C) to row C, and gathers the row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from edgebundle.builder.convert.graph import INPUT_NAME
from edgebundle.builder.convert.ir import Ensemble, Tree
from edgebundle.builder.convert.opgraph import OpGraph
from edgebundle.builder.errors import ConversionError

_BITS = 8
_CUT = np.float32(0.5)  # between "not in the set" (0) and "in the set" (1)


@dataclass(frozen=True)
class Membership:
    """One categorical feature's distinct sets as a packed bit table."""

    feature: int
    bits: npt.NDArray[np.uint8]  # [C + 1, B]: row c holds the sets listing category c
    sets: int  # K, its virtual columns

    @property
    def codes(self) -> int:
        """C: categories 0..C-1 have their own row."""
        return int(self.bits.shape[0]) - 1


def split_categories(ensemble: Ensemble) -> tuple[Ensemble, tuple[Membership, ...]]:
    """The numeric ensemble reading virtual columns ``F..F+K-1`` (features in order, each's sets
    in order of first use) in place of category sets, and the tables that fill them."""
    if not ensemble.has_category_splits:
        return ensemble, ()
    found: dict[int, dict[bytes, npt.NDArray[np.int32]]] = {}
    for tree in ensemble.trees:
        for node in sorted(tree.categories):
            members = np.asarray(tree.categories[node], dtype=np.int32)
            if members.size and int(members.min()) < 0:
                raise ConversionError("a categorical split lists a negative category")
            sets = found.setdefault(int(tree.feature[node]), {})
            sets.setdefault(members.tobytes(), members)
    column: dict[tuple[int, bytes], int] = {}
    memberships = []
    for feature in sorted(found):
        for key in found[feature]:
            column[(feature, key)] = ensemble.num_features + len(column)
        memberships.append(_membership(feature, list(found[feature].values())))
    trees = tuple(_numeric(tree, column) for tree in ensemble.trees)
    numeric = replace(
        ensemble, trees=trees, num_features=ensemble.num_features + len(column),
        categorical=frozenset(),
    )
    return numeric, tuple(memberships)


def _membership(feature: int, sets: list[npt.NDArray[np.int32]]) -> Membership:
    codes = max((int(s.max()) + 1 for s in sets if s.size), default=0)
    width = -(-len(sets) // _BITS)
    dense = np.zeros((codes + 1, _BITS * width), dtype=np.uint8)
    for j, members in enumerate(sets):
        dense[members, j] = 1
    weights = (1 << np.arange(_BITS, dtype=np.uint32))[None, :, None]
    bits = (dense.reshape(codes + 1, _BITS, width) * weights).sum(axis=1).astype(np.uint8)
    return Membership(feature=feature, bits=bits, sets=len(sets))


def _numeric(tree: Tree, column: dict[tuple[int, bytes], int]) -> Tree:
    if not tree.categories:
        return tree
    feature = tree.feature.copy()
    threshold = tree.threshold.copy()
    for node, members in tree.categories.items():
        key = np.asarray(members, dtype=np.int32).tobytes()
        feature[node] = column[(int(tree.feature[node]), key)]
        threshold[node] = _CUT
    return replace(tree, feature=feature, threshold=threshold, categories={})


def membership_input(graph: OpGraph, memberships: tuple[Membership, ...]) -> str:
    """[N, F + K]: the input, then every virtual column (``INPUT_NAME`` itself without any)."""
    if not memberships:
        return INPUT_NAME
    scales = [
        graph.const(f"bit_scale{k}", np.array(2.0**-k, dtype=np.float32)) for k in range(_BITS)
    ]
    halves = graph.const("bit_half", np.array(0.5, dtype=np.float32))
    twos = graph.const("bit_minus_two", np.array(-2.0, dtype=np.float32))
    zero = graph.const("category_zero", np.array(0.0, dtype=np.float32))
    columns = [INPUT_NAME]
    for m in memberships:
        name = f"cat{m.feature}"
        table = _decoded(graph, m, name, scales, (halves, twos))
        columns.append(graph.op("Gather", [table, _row(graph, m, name, zero)], f"{name}/in_set"))
    return _joined(graph, columns, "input_with_sets", axis=1)


def _joined(graph: OpGraph, parts: list[str], name: str, axis: int) -> str:
    """Concat as a chain of two-input nodes: graphcheck admits no wider one."""
    joined = parts[0]
    for i, part in enumerate(parts[1:]):
        joined = graph.op("Concat", [joined, part], f"{name}{i}", axis=axis)
    return joined


def _decoded(
    graph: OpGraph, m: Membership, name: str, scales: list[str], constants: tuple[str, str]
) -> str:
    """Constant subgraph (folded at load): float32 [C + 2, K], 0/1 then a NaN row."""
    half, minus_two = constants
    bits = graph.const(f"{name}/bits", m.bits)
    packed = graph.op("Cast", [bits], f"{name}/bits_f", to=TensorProto.FLOAT)
    shifted = [graph.op("Mul", [packed, s], f"{name}/shift{k}") for k, s in enumerate(scales)]
    planes = _joined(graph, shifted, f"{name}/planes", axis=1)
    high = graph.op("Floor", [planes], f"{name}/high")
    above = graph.op("Floor", [graph.op("Mul", [high, half], f"{name}/halved")], f"{name}/above")
    bit = graph.op(
        "Add", [high, graph.op("Mul", [above, minus_two], f"{name}/drop")], f"{name}/bit"
    )
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
            graph.const(f"{name}/nan", np.array(np.nan, dtype=np.float32)),
            graph.const(f"{name}/nan_shape", np.array([1, m.sets])),
        ],
        f"{name}/missing_row",
    )
    return graph.op("Concat", [kept, missing], f"{name}/table", axis=0)


def _row(graph: OpGraph, m: Membership, name: str, zero: str) -> str:
    """[N] int32: floor(x) for a code in [0, C), C for any other category, C + 1 for missing."""
    value = graph.op(
        "Gather",
        [INPUT_NAME, graph.const(f"{name}/feature", np.array(m.feature))],
        f"{name}/value",
        axis=1,
    )
    whole = graph.op("Floor", [value], f"{name}/whole")
    other = graph.const(f"{name}/other", np.array(m.codes, dtype=np.float32))
    below_end = graph.op("Greater", [other, whole], f"{name}/below_end")
    at_least_zero = graph.op("GreaterOrEqual", [whole, zero], f"{name}/not_negative")
    known = graph.op(
        "Where",
        [at_least_zero, graph.op("Where", [below_end, whole, other], f"{name}/capped"), other],
        f"{name}/known",
    )
    row = graph.op(
        "Where",
        [
            graph.op("IsNaN", [value], f"{name}/missing"),
            graph.const(f"{name}/missing_code", np.array(m.codes + 1, dtype=np.float32)),
            known,
        ],
        f"{name}/row_f",
    )
    return graph.cast32(row, f"{name}/row")
