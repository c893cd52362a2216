"""XGBoost's JSON trees → IR trees: scalar leaves as they are, vector leaves one tree per target.

Every leaf value is multiplied by the tree's weight (1 but for dart), in float32 as
``predict()`` multiplies it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.builder.convert.ir import LEAF, Tree
from edgebundle.builder.errors import ConversionError

F32 = npt.NDArray[np.float32]


def read_tree(
    doc: dict[str, Any], target: int, num_features: int, weight: float
) -> tuple[Tree, ...]:
    """The IR trees of one XGBoost tree: itself, or for a vector-leaf tree
    (``multi_strategy='multi_output_tree'``) one copy per target carrying that target's leaf."""
    tree_id = doc["id"]
    left = np.asarray(doc["left_children"], dtype=np.int32)
    right = np.asarray(doc["right_children"], dtype=np.int32)
    feature = np.asarray(doc["split_indices"], dtype=np.int32)
    conditions = np.asarray(doc["split_conditions"], dtype=np.float32)
    is_leaf = left == LEAF
    _check_structure(tree_id, left, right, feature, conditions, num_features)
    categories = _category_sets(tree_id, doc, is_leaf)
    width = int(doc["tree_param"].get("size_leaf_vector", "1"))
    if width > 1:
        leaf_values = _vector_leaves(tree_id, doc, right, is_leaf, width)
    else:
        leaf_values = conditions[None, :]
    weighted = leaf_values * np.float32(weight)
    return tuple(
        Tree(
            left=left,
            right=np.where(is_leaf, LEAF, right).astype(np.int32),
            feature=np.where(is_leaf, 0, feature).astype(np.int32),
            threshold=np.where(is_leaf, np.float32(0), conditions).astype(np.float32),
            default_left=np.asarray(doc["default_left"], dtype=np.int8).astype(np.bool_),
            value=np.where(is_leaf, weighted[k], np.float32(0)).astype(np.float32),
            target=target + k,
            categories=categories,
        )
        for k in range(weighted.shape[0])
    )


def _category_sets(
    tree_id: int, doc: dict[str, Any], is_leaf: npt.NDArray[np.bool_]
) -> dict[int, npt.NDArray[np.int32]]:
    """Each categorical split's set: ``categories[segment : segment + size]`` of the node's
    entry in ``categories_nodes`` (node ids whose ``split_type`` is 1)."""
    split_type = np.asarray(doc["split_type"], dtype=np.int64)
    flat = np.asarray(doc["categories"], dtype=np.int64)
    nodes = [int(n) for n in doc["categories_nodes"]]
    segments = [int(v) for v in doc["categories_segments"]]
    sizes = [int(v) for v in doc["categories_sizes"]]
    categorical = sorted(int(n) for n in np.flatnonzero((split_type == 1) & ~is_leaf))
    if sorted(nodes) != categorical or not len(segments) == len(sizes) == len(nodes):
        raise ConversionError(f"tree {tree_id} is malformed (categorical split lists disagree)")
    sets = {}
    for node, start, size in zip(nodes, segments, sizes, strict=True):
        members = flat[start : start + size] if start >= 0 and size > 0 else flat[:0]
        # float32 holds every integer below 2**24: a set beyond it could not be tested exactly
        if len(members) != size or np.any((members < 0) | (members >= 2**24)):
            raise ConversionError(f"tree {tree_id} is malformed (bad category set)")
        sets[node] = np.unique(members).astype(np.int32)
    return sets


def _vector_leaves(
    tree_id: int,
    doc: dict[str, Any],
    right: npt.NDArray[np.int32],
    is_leaf: npt.NDArray[np.bool_],
    width: int,
) -> F32:
    """[width, nodes] leaf values: a vector leaf's ``right_children`` entry indexes its row of
    ``leaf_weights`` (``width`` values per leaf)."""
    weights = np.asarray(doc.get("leaf_weights", []), dtype=np.float32).reshape(-1)
    if weights.size % width:
        raise ConversionError(f"tree {tree_id} has {weights.size} leaf weights for width {width}")
    table = weights.reshape(-1, width)
    index = np.where(is_leaf, right, 0)
    if np.any(index < 0) or np.any(index >= max(len(table), 1)) or not len(table):
        raise ConversionError(f"tree {tree_id} is malformed (bad leaf index)")
    values: F32 = table[index].T.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ConversionError(f"tree {tree_id} is malformed (bad child, feature or value)")
    return values


def _check_structure(
    tree_id: int,
    left: npt.NDArray[np.int32],
    right: npt.NDArray[np.int32],
    feature: npt.NDArray[np.int32],
    conditions: npt.NDArray[np.float32],
    num_features: int,
) -> None:
    """Reject what the emitters would mis-read: the nodes reachable from the root must form
    a tree with in-range children and features, and finite thresholds and leaves."""
    n = left.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    stack = [0] if n else []
    ok = n > 0
    while stack and ok:
        node = stack.pop()
        ok = not seen[node]
        seen[node] = True
        if left[node] != LEAF:
            children = (int(left[node]), int(right[node]))
            ok = ok and all(0 < c < n for c in children) and 0 <= feature[node] < num_features
            stack.extend(children)
        ok = ok and bool(np.isfinite(conditions[node]))
    if not ok:
        raise ConversionError(f"tree {tree_id} is malformed (bad child, feature or value)")


