"""The perfect layout: every tree padded to a complete tree of the ensemble's depth.

A child's position is arithmetic (slot p's children are 2p and 2p+1), so no child pointers
are stored; the price is 2**depth leaf slots per tree, which deep trees cannot afford.
"""

from __future__ import annotations

import numpy as np

from edgebundle.builder.convert.int8.codebook import Codebook
from edgebundle.builder.convert.int8.leaves import LeafCodes
from edgebundle.builder.convert.int8.tables import IntArray, Tables, index_itemsize
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree
from edgebundle.builder.errors import ConversionError

MAX_PERFECT_SLOTS = 1 << 24  # refuse to pad beyond this even when asked to


def leaf_slots(ensemble: Ensemble, depth: int) -> int:
    """Leaf slots of the whole ensemble padded to ``depth``."""
    return len(ensemble.trees) << depth


def perfect_bytes(ensemble: Ensemble, depth: int, codebook: Codebook, leaf_bits: int) -> int:
    slots = 1 << depth
    node_bytes = index_itemsize(codebook.sentinel) + 1
    return len(ensemble.trees) * ((slots - 1) * node_bytes + slots * leaf_bits // 8)


def perfect_tables(ensemble: Ensemble, depth: int, codebook: Codebook, leaves: LeafCodes) -> Tables:
    """Each tree padded to depth D: level l has 2**l slots, slot p's children are 2p and 2p+1."""
    if leaf_slots(ensemble, depth) > MAX_PERFECT_SLOTS:
        raise ConversionError(
            f"the perfect layout of depth {depth} needs {leaf_slots(ensemble, depth)} leaf "
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
