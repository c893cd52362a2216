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
arithmetic (``margin_error_bound``). The float32 sum of the T dequantized leaves (a ReduceSum
for one output, with the base margin folded into tree 0's leaves; a Gemm routing trees to
classes otherwise) adds at most about ``T * 2**-24 * sum_t max|leaf_t|`` on top, the same
order as XGBoost's own float32 accumulation, orders of magnitude below the quantization bound.
"""

from __future__ import annotations

import numpy as np

from edgebundle.builder.convert.categories import split_categories
from edgebundle.builder.convert.graph import MarginGraph
from edgebundle.builder.convert.int8.codebook import Codebook, build_codebook
from edgebundle.builder.convert.int8.leaves import LEAF_BITS, quantize_leaves
from edgebundle.builder.convert.int8.node_array import node_array_bytes, node_array_tables
from edgebundle.builder.convert.int8.perfect import (
    MAX_PERFECT_SLOTS,
    leaf_slots,
    perfect_bytes,
    perfect_tables,
)
from edgebundle.builder.convert.int8.traversal import emit_traversal
from edgebundle.builder.convert.ir import Ensemble
from edgebundle.builder.errors import ConversionError

SCHEME = "threshold-codes+tree-scaled-leaves/1"
LAYOUTS = ("perfect", "node-array")
OPSET = 15  # Shape's start/end attributes; everything else is older
MIN_ONNXRUNTIME = "1.20.0"  # measured: int8 bundles run on 1.20.1


def emit_int8(ensemble: Ensemble, leaf_bits: int = 8, layout: str | None = None) -> MarginGraph:
    """Build the int8 (or int16-leaf) traversal graph computing ``ensemble``'s margins.

    ``layout`` is ``"perfect"``, ``"node-array"`` or None to pick the one with fewer stored bytes.
    """
    if leaf_bits not in LEAF_BITS:
        raise ValueError(f"leaf_bits must be 8 or 16, not {leaf_bits}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, not {layout!r}")
    if not ensemble.trees:
        raise ConversionError("the model has no trees: there is nothing to quantize")
    # Categorical nodes become numeric ones on membership columns (categories.py).
    ensemble, memberships = split_categories(ensemble)
    columns = sum(m.sets for m in memberships)
    codebook = build_codebook(ensemble)
    leaves = quantize_leaves(ensemble.trees, leaf_bits)
    depth = max(t.depth() for t in ensemble.trees)
    chosen = layout or choose_layout(ensemble, depth, codebook, leaf_bits)
    tables = (
        perfect_tables(ensemble, depth, codebook, leaves)
        if chosen == "perfect"
        else node_array_tables(ensemble, depth, codebook, leaves)
    )
    nodes, initializers = emit_traversal(ensemble, codebook, leaves, tables, memberships)
    # Input features that split: numeric ones by uint8 threshold codes, categorical ones by
    # uint8 tables, bits or steps (their membership columns are not input features).
    numeric = int(np.count_nonzero(codebook.feature_size[: ensemble.num_features - columns]))
    split_features = numeric + len(memberships)
    info = {
        "scheme": SCHEME,
        "layout": chosen,
        "leaf_bits": leaf_bits,
        # Every split feature's codes are uint8: wide features take more segments instead.
        "bin_dtypes": {"uint8": split_features} if split_features else {},
        "margin_error_bound": leaves.error_bound(ensemble),
    }
    return MarginGraph(nodes, initializers, {"": OPSET}, info, MIN_ONNXRUNTIME)


def choose_layout(ensemble: Ensemble, depth: int, codebook: Codebook, leaf_bits: int) -> str:
    """The layout storing fewer bytes (ties go to perfect, which stores no child pointers)."""
    if leaf_slots(ensemble, depth) > MAX_PERFECT_SLOTS:
        return "node-array"
    perfect = perfect_bytes(ensemble, depth, codebook, leaf_bits)
    smaller = perfect <= node_array_bytes(ensemble, codebook, leaf_bits)
    return "perfect" if smaller else "node-array"
