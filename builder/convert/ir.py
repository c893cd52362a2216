"""Typed intermediate representation of a tree ensemble, independent of XGBoost and ONNX.

Every emitter (float tree op, int8 tensor traversal) reads only this; the loader is the only
place that knows XGBoost's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

LEAF = -1
_NO_INT = np.zeros(0, dtype=np.int32)
_NO_FLOAT = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Tree:
    """One regression tree in XGBoost's node-array form (node 0 is the root).

    A node is a leaf where ``left == LEAF``. Internal node ``i`` sends a row left when
    ``x[feature[i]] < threshold[i]`` (float32 comparison), right otherwise, and a missing
    (NaN) value left when ``default_left[i]``. A categorical split (a node in ``categories``)
    sends a row right when its category is in the node's set, and left otherwise: for a
    category the model never saw, a negative one, and one past float32's integers too. A
    non-integer category counts as its integer part (measured against xgboost 3.2).
    """

    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float32]
    default_left: npt.NDArray[np.bool_]
    value: npt.NDArray[np.float32]  # leaf value where left == LEAF, unused elsewhere
    target: int  # output column this tree adds to (the class for multiclass)
    # categorical split node -> its sorted categories (the ones that go right)
    categories: Mapping[int, npt.NDArray[np.int32]] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.left.shape[0])

    @property
    def is_leaf(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.left == LEAF)

    @property
    def numeric_splits(self) -> npt.NDArray[np.bool_]:
        """Internal nodes that compare against a threshold (not a category set)."""
        split: npt.NDArray[np.bool_] = np.asarray(self.left != LEAF)
        split[list(self.categories)] = False
        return split

    def depth(self) -> int:
        """Number of splits on the longest root-to-leaf path (a lone leaf has depth 0)."""
        deepest = 0
        stack = [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if self.left[node] == LEAF:
                deepest = max(deepest, depth)
            else:
                stack.append((int(self.left[node]), depth + 1))
                stack.append((int(self.right[node]), depth + 1))
        return deepest


@dataclass(frozen=True, eq=False)
class Ensemble:
    """The trees that ``predict()`` uses, and what turns their sum into its output.

    ``margin[c] = base_margin[c] + sum(leaf of tree t for trees with target c)`` for each of the
    ``num_outputs`` columns (1, or the number of classes for multiclass).
    """

    trees: tuple[Tree, ...]
    num_features: int
    num_outputs: int
    base_margin: npt.NDArray[np.float32]  # shape [num_outputs], already in margin space
    categorical: frozenset[int] = frozenset()  # features whose splits are category sets

    @property
    def has_category_splits(self) -> bool:
        return any(t.categories for t in self.trees)

    def categories_per_feature(self) -> dict[int, npt.NDArray[np.int32]]:
        """Sorted distinct categories the splits on each categorical feature list."""
        found: dict[int, list[npt.NDArray[np.int32]]] = {f: [] for f in self.categorical}
        for tree in self.trees:
            for node, members in tree.categories.items():
                found.setdefault(int(tree.feature[node]), []).append(members)
        return {f: np.unique(np.concatenate([*lists, _NO_INT])) for f, lists in found.items()}

    def thresholds_per_feature(self) -> list[npt.NDArray[np.float32]]:
        """Sorted distinct split thresholds of each feature (empty for unused features and for
        categorical ones)."""
        features = np.concatenate([t.feature[t.numeric_splits] for t in self.trees] + [_NO_INT])
        thresholds = np.concatenate(
            [t.threshold[t.numeric_splits] for t in self.trees] + [_NO_FLOAT]
        )
        return [np.unique(thresholds[features == f]) for f in range(self.num_features)]


@dataclass(frozen=True, eq=False)
class Linear:
    """A gblinear model: ``margin = bias + sum over present features of x[f] * weights[f]``.

    XGBoost skips a missing feature (NaN), so it adds nothing: the same as a 0 value.
    """

    weights: npt.NDArray[np.float32]  # [num_features, num_outputs]
    bias: npt.NDArray[np.float32]  # [num_outputs], XGBoost's bias plus the base margin

    @property
    def num_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_outputs(self) -> int:
        return int(self.weights.shape[1])
