"""int8 precision: a standard-op ONNX tree traversal over integer-coded tables.

What is stored (bundle bytes):
- thresholds: per feature its sorted distinct float32 split thresholds, once (never merged);
- per tree node: a *segment id* (feature plus default direction; uint8 up to 256 segments) and
  a uint8 *threshold code* (the threshold's rank within its segment). A feature with more than
  256 thresholds spans several 256-threshold segments, so codes stay uint8 without merging;
- leaves: int8 (or int16) codes with one float32 scale per tree.

What runs: at load, onnxruntime's constant folding (graph optimization >= BASIC) turns the coded
tables into int32 column indices and exact float32 thresholds; that costs RAM (8 bytes per node
slot, 4 more for a node-array child pointer, 4 per leaf slot), not bundle bytes. Without folding
the graph is still exact but decodes the tables on every run (~15x slower for one row). Each
inference walks all trees at once, one level per step, on [N, T] int32 positions: look up the
node's column and threshold, compare the input against it in float32 (exactly XGBoost's
``x < t`` goes left), step to a child. Missing values follow each node's default direction
because the input is widened to [N, 2F]: column f keeps NaN (every ``x >= t`` is false, so it
goes left) and column F + f holds +inf instead (always goes right); a node's segment picks the
copy its default direction needs.

Two layouts: ``perfect`` pads every tree to a complete tree of the ensemble's depth (the child
position is arithmetic, no child pointers stored); ``node-array`` stores each tree's nodes with
a left-child pointer (the right child is next to it, leaves point to themselves) and suits deep
or lossguide trees whose 2**depth padding would explode. Automatic choice: whichever stores
fewer bytes (both cost 7 ops per level; perfect measured a little faster at equal depth).

Accuracy: thresholds and traversal are exact. Leaf quantization moves each tree's output by at
most half its scale, so ``|margin - exact margin| <= sum_t scale_t / 2`` per output in exact
arithmetic (``margin_error_bound``). The float32 Gemm that sums the T dequantized leaves adds at
most about ``T * 2**-24 * sum_t max|leaf_t|`` on top, the same order as XGBoost's own float32
accumulation, orders of magnitude below the quantization bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree
from edgebundle.runtime.errors import ConversionError

SCHEME = "threshold-codes+tree-scaled-leaves/1"
LAYOUTS = ("perfect", "node-array")
OPSET = 15  # Shape's start/end attributes; everything else is older
CODES_PER_SEGMENT = 256  # uint8 threshold codes
MAX_PERFECT_SLOTS = 1 << 24  # refuse to pad beyond this even when asked to

_PREFIX = "int8/"
_QMAX = {8: 127, 16: 32767}
_LEAF_DTYPES: dict[int, type[np.signedinteger[Any]]] = {8: np.int8, 16: np.int16}

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


def emit_int8(ensemble: Ensemble, leaf_bits: int = 8, layout: str | None = None) -> MarginGraph:
    """Build the int8 (or int16-leaf) traversal graph computing ``ensemble``'s margins.

    ``layout`` is ``"perfect"``, ``"node-array"`` or None to pick the one with fewer stored bytes.
    """
    if leaf_bits not in _QMAX:
        raise ValueError(f"leaf_bits must be 8 or 16, not {leaf_bits}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, not {layout!r}")
    if not ensemble.trees:
        raise ConversionError("the model has no trees: there is nothing to quantize")
    codebook = build_codebook(ensemble)
    leaves = quantize_leaves(ensemble.trees, leaf_bits)
    depth = max(t.depth() for t in ensemble.trees)
    chosen = layout or choose_layout(ensemble, depth, codebook, leaf_bits)
    tables = (
        _perfect_tables(ensemble, depth, codebook, leaves)
        if chosen == "perfect"
        else _node_array_tables(ensemble, depth, codebook, leaves)
    )
    graph = _Graph()
    _emit_traversal(graph, ensemble, codebook, leaves, tables)
    split_features = codebook.num_split_features
    info = {
        "scheme": SCHEME,
        "layout": chosen,
        "leaf_bits": leaf_bits,
        # Every split feature's codes are uint8: wide features take more segments instead.
        "bin_dtypes": {"uint8": split_features} if split_features else {},
        "margin_error_bound": leaves.error_bound(ensemble),
    }
    return MarginGraph(graph.nodes, graph.initializers, {"": OPSET}, info)


# --- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codebook:
    """Every split threshold once, addressed by (segment id, uint8 code).

    Segments ``0..half-1`` read input column ``feature`` (NaN goes left), segments
    ``half..2*half-1`` the same thresholds from column ``F + feature`` (NaN goes right), and the
    last segment is the sentinel: its only threshold is NaN, so nothing ever goes right there.
    """

    values: FloatArray  # concatenated sorted thresholds per feature, then the NaN sentinel
    segment_offset: IntArray  # index in ``values`` of each segment's code 0
    segment_column: IntArray  # column of the widened [N, 2F] input each segment compares
    feature_first_segment: IntArray  # per feature, its first NaN-goes-left segment
    feature_start: IntArray  # per feature, index in ``values`` of its smallest threshold
    feature_size: IntArray  # per feature, its number of distinct thresholds

    @property
    def sentinel(self) -> int:
        return int(self.segment_offset.shape[0]) - 1

    @property
    def num_split_features(self) -> int:
        return int(np.count_nonzero(self.feature_size))

    def encode(self, tree: Tree) -> tuple[IntArray, IntArray]:
        """Segment id and code of every node of ``tree`` (leaves get the sentinel, code 0)."""
        internal = ~tree.is_leaf
        feature = tree.feature[internal].astype(np.int64)
        threshold = tree.threshold[internal]
        rank = np.empty(feature.shape, dtype=np.int64)
        for f in np.unique(feature):
            here = feature == f
            start = self.feature_start[f]
            own = self.values[start : start + self.feature_size[f]]
            rank[here] = np.searchsorted(own, threshold[here])
        half = (self.segment_offset.shape[0] - 1) // 2
        segment = np.full(tree.num_nodes, self.sentinel, dtype=np.int64)
        code = np.zeros(tree.num_nodes, dtype=np.int64)
        default_right = ~tree.default_left[internal]
        segment[internal] = (
            self.feature_first_segment[feature]
            + rank // CODES_PER_SEGMENT
            + half * default_right.astype(np.int64)
        )
        code[internal] = rank % CODES_PER_SEGMENT
        return segment, code


def build_codebook(ensemble: Ensemble) -> Codebook:
    """Lay out each feature's distinct thresholds and cut them into uint8-addressable segments."""
    per_feature = ensemble.thresholds_per_feature()
    if any(np.isnan(t).any() for t in per_feature):
        raise ConversionError("a split threshold is NaN; XGBoost never writes one")
    sizes = np.array([t.shape[0] for t in per_feature], dtype=np.int64)
    feature_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    segments = -(-sizes // CODES_PER_SEGMENT)
    feature_first_segment = np.concatenate([[0], np.cumsum(segments)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(ensemble.num_features), segments)
    offset = feature_start[owner] + CODES_PER_SEGMENT * (
        np.arange(owner.shape[0]) - feature_first_segment[owner]
    )
    values = np.concatenate([*per_feature, np.array([np.nan], dtype=np.float32)])
    return Codebook(
        values=values.astype(np.float32),
        segment_offset=np.concatenate([offset, offset, [values.shape[0] - 1]]).astype(np.int64),
        segment_column=np.concatenate([owner, owner + ensemble.num_features, [0]]).astype(np.int64),
        feature_first_segment=feature_first_segment,
        feature_start=feature_start,
        feature_size=sizes,
    )


# --- leaves ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafCodes:
    """Per tree: node-indexed integer leaf codes (0 at internal nodes) and the float32 scale."""

    codes: tuple[npt.NDArray[np.signedinteger[Any]], ...]
    scales: FloatArray

    def error_bound(self, ensemble: Ensemble) -> float:
        """Max over outputs of sum(scale / 2) of the trees adding to that output."""
        targets = np.array([t.target for t in ensemble.trees])
        halves = self.scales.astype(np.float64) / 2
        return float(max(halves[targets == c].sum() for c in range(ensemble.num_outputs)))


def quantize_leaves(trees: tuple[Tree, ...], bits: int) -> LeafCodes:
    """Round each tree's leaves to ``bits``-bit codes of one scale, max|leaf| / qmax."""
    qmax = _QMAX[bits]
    scales = np.array([np.abs(t.value[t.is_leaf]).max() / qmax for t in trees], dtype=np.float32)
    codes = tuple(
        _quantize_tree(t, float(s), qmax, _LEAF_DTYPES[bits])
        for t, s in zip(trees, scales, strict=True)
    )
    return LeafCodes(codes=codes, scales=scales)


def _quantize_tree(
    tree: Tree, scale: float, qmax: int, dtype: type[np.signedinteger[Any]]
) -> npt.NDArray[np.signedinteger[Any]]:
    values = np.where(tree.is_leaf, tree.value, 0).astype(np.float64)
    if scale == 0.0:  # every leaf is 0
        return np.zeros(tree.num_nodes, dtype=dtype)
    return np.clip(np.rint(values / scale), -qmax, qmax).astype(dtype)


# --- layouts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """Integer tables of one layout, each [rows, T] (tree t in column t).

    ``levels`` holds one (segment, code) pair per traversal step: per depth level for the
    perfect layout, or the single shared node table for the node-array layout, whose ``left``
    maps a node to its left child (right child = left + 1; leaves map to themselves).
    """

    layout: str
    depth: int
    levels: tuple[tuple[IntArray, IntArray], ...]
    leaves: npt.NDArray[np.signedinteger[Any]]
    left: IntArray | None


def choose_layout(ensemble: Ensemble, depth: int, codebook: Codebook, leaf_bits: int) -> str:
    """The layout storing fewer bytes (ties go to perfect, which stores no child pointers)."""
    if len(ensemble.trees) << depth > MAX_PERFECT_SLOTS:
        return "node-array"
    perfect = _perfect_bytes(ensemble, depth, codebook, leaf_bits)
    smaller = perfect <= _node_array_bytes(ensemble, codebook, leaf_bits)
    return "perfect" if smaller else "node-array"


def _perfect_bytes(ensemble: Ensemble, depth: int, codebook: Codebook, leaf_bits: int) -> int:
    slots = 1 << depth
    node_bytes = _index_itemsize(codebook.sentinel) + 1
    return len(ensemble.trees) * ((slots - 1) * node_bytes + slots * leaf_bits // 8)


def _node_array_bytes(ensemble: Ensemble, codebook: Codebook, leaf_bits: int) -> int:
    width = max(t.num_nodes for t in ensemble.trees)
    node_bytes = _index_itemsize(codebook.sentinel) + 1 + _index_itemsize(width - 1)
    return len(ensemble.trees) * width * (node_bytes + leaf_bits // 8)


def _perfect_tables(
    ensemble: Ensemble, depth: int, codebook: Codebook, leaves: LeafCodes
) -> Tables:
    """Each tree padded to depth D: level l has 2**l slots, slot p's children are 2p and 2p+1."""
    if len(ensemble.trees) << depth > MAX_PERFECT_SLOTS:
        raise ConversionError(
            f"the perfect layout of depth {depth} needs {len(ensemble.trees) << depth} leaf "
            "slots; use the node-array layout"
        )
    per_tree = [_perfect_slots(t, depth) for t in ensemble.trees]
    encoded = [codebook.encode(t) for t in ensemble.trees]
    levels = tuple(
        (
            np.stack(
                [seg[slots[level]] for (seg, _), slots in zip(encoded, per_tree, strict=True)],
                axis=1,
            ),
            np.stack(
                [code[slots[level]] for (_, code), slots in zip(encoded, per_tree, strict=True)],
                axis=1,
            ),
        )
        for level in range(depth)
    )
    leaf_table = np.stack(
        [q[slots[depth]] for q, slots in zip(leaves.codes, per_tree, strict=True)], axis=1
    )
    return Tables("perfect", depth, levels, leaf_table, None)


def _perfect_slots(tree: Tree, depth: int) -> list[IntArray]:
    """Node id in every slot of every level 0..depth; a leaf fills all slots below it."""
    slots = [np.zeros(1, dtype=np.int64)]
    for _ in range(depth):
        nodes = slots[-1]
        leaf = tree.left[nodes] == LEAF
        left = np.where(leaf, nodes, tree.left[nodes])
        right = np.where(leaf, nodes, tree.right[nodes])
        slots.append(np.stack([left, right], axis=1).reshape(-1))
    return slots


def _node_array_tables(
    ensemble: Ensemble, depth: int, codebook: Codebook, leaves: LeafCodes
) -> Tables:
    """Nodes renumbered breadth-first so siblings are adjacent, padded to the largest tree."""
    width = max(t.num_nodes for t in ensemble.trees)
    columns = [
        _node_array_column(t, codebook, q, width)
        for t, q in zip(ensemble.trees, leaves.codes, strict=True)
    ]
    segment, code, left, leaf = (np.stack(parts, axis=1) for parts in zip(*columns, strict=True))
    return Tables("node-array", depth, ((segment, code),), leaf, left)


def _node_array_column(
    tree: Tree, codebook: Codebook, codes: npt.NDArray[np.signedinteger[Any]], width: int
) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.signedinteger[Any]]]:
    order = _breadth_first(tree)
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.shape[0])
    internal = tree.left[order] != LEAF
    left = np.where(
        internal, new_id[np.where(internal, tree.left[order], 0)], np.arange(order.shape[0])
    )
    segment, code = codebook.encode(tree)
    pad = width - tree.num_nodes
    # Padding slots are never reached; they are filled as self-looping sentinel leaves.
    return (
        np.pad(segment[order], (0, pad), constant_values=codebook.sentinel),
        np.pad(code[order], (0, pad)),
        np.concatenate([left, np.arange(tree.num_nodes, width)]),
        np.pad(codes[order], (0, pad)),
    )


def _breadth_first(tree: Tree) -> IntArray:
    """Node ids in level order, each internal node's two children enqueued together."""
    levels = [np.zeros(1, dtype=np.int64)]
    while levels[-1].shape[0]:
        nodes = levels[-1][tree.left[levels[-1]] != LEAF]
        levels.append(np.stack([tree.left[nodes], tree.right[nodes]], axis=1).reshape(-1))
    return np.concatenate(levels).astype(np.int64)


# --- graph -----------------------------------------------------------------------------------


class _Graph:
    """Collects uniquely named nodes and initializers under the emitter's prefix."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, array: npt.NDArray[Any]) -> str:
        full = _PREFIX + name
        self.initializers.append(numpy_helper.from_array(array, full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, output: str = "", **attrs: Any) -> str:
        out = output or _PREFIX + name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=_PREFIX + name, **attrs))
        return out

    def cast32(self, value: str, name: str) -> str:
        return self.op("Cast", [value], name, to=TensorProto.INT32)


@dataclass(frozen=True)
class _CodebookInputs:
    """Names of the stored codebook tensors every decoded table reads."""

    segment_column: str
    segment_offset: str
    values: str


@dataclass(frozen=True)
class _NodeTables:
    """Folded-at-load tensors for one (segment, code) table: input column and threshold."""

    column: str  # int32 [rows, T]
    threshold: str  # float32 [rows, T]


def _emit_traversal(
    graph: _Graph, ensemble: Ensemble, codebook: Codebook, leaves: LeafCodes, tables: Tables
) -> None:
    rows = graph.op(
        "Concat",
        [graph.op("Shape", [INPUT_NAME], "rows", end=1), graph.const("one", np.array([1]))],
        "rows_by_one",
        axis=0,
    )
    leaf_values = graph.op(
        "Cast", [graph.const("leaf_codes", tables.leaves)], "leaf_values", to=TensorProto.FLOAT
    )
    if tables.depth == 0:
        leaf = graph.op("Expand", [leaf_values, rows], "leaf")
    else:
        position = _walk(graph, _codebook_inputs(graph, codebook), tables, rows)
        leaf = graph.op("GatherElements", [leaf_values, position], "leaf", axis=0)
    base = graph.const("base_margin", ensemble.base_margin.astype(np.float32))
    graph.op("Gemm", [leaf, _dequantizer(graph, ensemble, leaves), base], "margin", MARGIN_NAME)


def _codebook_inputs(graph: _Graph, codebook: Codebook) -> _CodebookInputs:
    return _CodebookInputs(
        segment_column=graph.const("segment_column", _narrow(codebook.segment_column)),
        segment_offset=graph.const("segment_offset", _narrow(codebook.segment_offset)),
        values=graph.const("thresholds", codebook.values),
    )


def _widened_input(graph: _Graph) -> str:
    """[N, 2F]: the input, then a copy where NaN is +inf (so missing goes right)."""
    nan_high = graph.op(
        "Where",
        [
            graph.op("IsNaN", [INPUT_NAME], "missing"),
            graph.const("inf", np.array(np.inf, dtype=np.float32)),
            INPUT_NAME,
        ],
        "input_nan_high",
    )
    return graph.op("Concat", [INPUT_NAME, nan_high], "input_wide", axis=1)


def _walk(graph: _Graph, codebook: _CodebookInputs, tables: Tables, rows: str) -> str:
    """Unrolled descent: each tree's final row index into the leaf table, [N, T] int32."""
    wide = _widened_input(graph)
    decoded = [
        _decode(graph, codebook, segment, code, f"table{i}")
        for i, (segment, code) in enumerate(tables.levels)
    ]
    left = None
    if tables.left is not None:
        left = graph.cast32(graph.const("left_child", _narrow(tables.left)), "left_child_i32")
    # Every input row starts at row 0 of the first table; broadcasting that row to [N, T] is
    # far cheaper than a per-element Gather along the feature axis.
    root = decoded[0]
    column = graph.op("Expand", [_first_row(graph, root.column, "root_column"), rows], "s0/column")
    position = _step(graph, wide, column, _first_row(graph, root.threshold, "root_threshold"), "s0")
    if left is not None:
        position = graph.op("Add", [position, _first_row(graph, left, "root_left")], "s0/next")
    for step in range(1, tables.depth):
        table = decoded[step if tables.layout == "perfect" else 0]
        name = f"s{step}"
        column = graph.op("GatherElements", [table.column, position], f"{name}/column", axis=0)
        threshold = graph.op(
            "GatherElements", [table.threshold, position], f"{name}/threshold", axis=0
        )
        right = _step(graph, wide, column, threshold, name)
        if left is None:
            child = graph.op("Add", [position, position], f"{name}/left")
        else:
            child = graph.op("GatherElements", [left, position], f"{name}/left", axis=0)
        position = graph.op("Add", [child, right], f"{name}/next")
    return position


def _step(graph: _Graph, wide: str, column: str, threshold: str, name: str) -> str:
    """1 where the row goes right (x >= threshold, or missing with default right), else 0."""
    value = graph.op("GatherElements", [wide, column], f"{name}/value", axis=1)
    goes_right = graph.op("GreaterOrEqual", [value, threshold], f"{name}/goes_right")
    return graph.cast32(goes_right, f"{name}/right")


def _decode(
    graph: _Graph, codebook: _CodebookInputs, segment: IntArray, code: IntArray, name: str
) -> _NodeTables:
    """Constant subgraph (folded at load) from stored codes to int32 columns and thresholds."""
    stored = graph.const(f"{name}/segment", _narrow(segment))
    segment_i32 = graph.cast32(stored, f"{name}/segment_i32")
    column = graph.op("Gather", [codebook.segment_column, segment_i32], f"{name}/column_n")
    offset = graph.op("Gather", [codebook.segment_offset, segment_i32], f"{name}/offset_n")
    code_i32 = graph.cast32(graph.const(f"{name}/code", code.astype(np.uint8)), f"{name}/code_i32")
    index = graph.op(
        "Add", [graph.cast32(offset, f"{name}/offset"), code_i32], f"{name}/threshold_index"
    )
    return _NodeTables(
        column=graph.cast32(column, f"{name}/column"),
        threshold=graph.op("Gather", [codebook.values, index], f"{name}/threshold"),
    )


def _first_row(graph: _Graph, table: str, name: str) -> str:
    return graph.op(
        "Slice",
        [
            table,
            graph.const(f"{name}/start", np.array([0])),
            graph.const(f"{name}/end", np.array([1])),
        ],
        name,
    )


def _dequantizer(graph: _Graph, ensemble: Ensemble, leaves: LeafCodes) -> str:
    """[T, num_outputs]: row t holds tree t's scale in the column of the output it adds to."""
    targets = np.array([[t.target] for t in ensemble.trees])
    one_hot = graph.op(
        "Equal",
        [
            graph.cast32(graph.const("tree_target", _narrow(targets)), "tree_target_i32"),
            graph.const("outputs", np.arange(ensemble.num_outputs, dtype=np.int32)),
        ],
        "tree_output",
    )
    return graph.op(
        "Mul",
        [
            graph.op("Cast", [one_hot], "tree_output_f", to=TensorProto.FLOAT),
            graph.const("tree_scale", leaves.scales.reshape(-1, 1)),
        ],
        "dequantize",
    )


def _narrow(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The narrowest unsigned (or int32) dtype holding these non-negative indices."""
    return values.astype(_index_dtype(int(values.max(initial=0))))


def _index_dtype(largest: int) -> type[np.integer[Any]]:
    if largest <= np.iinfo(np.uint8).max:
        return np.uint8
    if largest <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.int32


def _index_itemsize(largest: int) -> int:
    return int(np.dtype(_index_dtype(largest)).itemsize)
