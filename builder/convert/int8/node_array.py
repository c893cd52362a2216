"""The node-array layout: each tree's nodes with a left-child pointer, for deep or lossguide
trees whose padding to a perfect tree would explode.

Siblings are adjacent (right child = left + 1) and leaves point to themselves, so a walk of
the ensemble's depth steps stays put once it reaches a leaf.
"""

from __future__ import annotations

import numpy as np

from edgebundle.builder.convert.int8.codebook import Codebook
from edgebundle.builder.convert.int8.leaves import LeafCodes
from edgebundle.builder.convert.int8.tables import IntArray, LeafArray, Tables, index_itemsize
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree


def node_array_bytes(ensemble: Ensemble, codebook: Codebook, leaf_bits: int) -> int:
    width = max(t.num_nodes for t in ensemble.trees)
    node_bytes = index_itemsize(codebook.sentinel) + 1 + index_itemsize(width - 1)
    return len(ensemble.trees) * width * (node_bytes + leaf_bits // 8)


def node_array_tables(
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
    tree: Tree, codebook: Codebook, codes: LeafArray, width: int
) -> tuple[IntArray, IntArray, IntArray, LeafArray]:
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
