"""Lossless float model: the IR as one ai.onnx.ml opset-5 ``TreeEnsemble`` node.

Opset 5 keeps node modes and splits as tensors instead of per-node string lists, which makes
the file ~2.5× smaller than onnxmltools' TreeEnsembleRegressor at the same
latency. Thresholds and leaves are XGBoost's float32 values, so the margins equal XGBoost's up
to float32 summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgebundle.builder.convert.categories import membership_input, split_categories
from edgebundle.builder.convert.graph import INPUT_NAME, MARGIN_NAME, MarginGraph
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree
from edgebundle.builder.convert.opgraph import OpGraph

_BRANCH_LT = 1  # TreeEnsemble nodes_modes: XGBoost sends x < threshold to the left ("true")
_BRANCH_MEMBER = 6  # x in the node's set of membership_values: XGBoost's categories go right
_ML_DOMAIN = "ai.onnx.ml"
# ai.onnx.ml opset 5's TreeEnsemble has a kernel from onnxruntime 1.21 on; 1.20 knows the
# opset but refuses the node ("Could not find an implementation for TreeEnsemble(5)"). Its
# BRANCH_MEMBER mode (categorical splits) came with the same kernel (onnxruntime PR #22333,
# which unrolls a set into a chain of equality tests), so 1.21 serves both.
MIN_ONNXRUNTIME = "1.21.0"


@dataclass
class _Tables:
    """Flat node and leaf arrays of TreeEnsemble, filled one tree at a time."""

    features: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    tracks_true: list[int] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leafs: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leafs: list[int] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)  # each member node's set, NaN after it
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)

    def add(self, tree: Tree) -> None:
        """Append one tree; a lone-leaf tree gets a dummy split whose branches share the leaf,
        because TreeEnsemble roots must be nodes."""
        node_base = len(self.features)
        self.roots.append(node_base)
        if tree.left[0] == LEAF:
            leaf = self._leaf(tree, 0)
            self._node(0, 0.0, True, (leaf, True), (leaf, True))
            return
        internal = np.flatnonzero(tree.left != LEAF)
        node_index = {int(n): node_base + i for i, n in enumerate(internal)}
        leaf_index = {int(n): self._leaf(tree, int(n)) for n in np.flatnonzero(tree.left == LEAF)}

        def child(n: int) -> tuple[int, bool]:
            return (leaf_index[n], True) if n in leaf_index else (node_index[n], False)

        for n in internal:
            left, right = child(int(tree.left[n])), child(int(tree.right[n]))
            members = tree.categories.get(int(n))
            if members is None:
                self._node(
                    int(tree.feature[n]),
                    float(tree.threshold[n]),
                    bool(tree.default_left[n]),
                    left,
                    right,
                )
            else:
                # "true" is membership, so the right child; missing goes true when it goes right
                self._node(int(tree.feature[n]), 0.0, not tree.default_left[n], right, left)
                self.modes[-1] = _BRANCH_MEMBER
                self.members.extend([*members.astype(np.float32).tolist(), math.nan])

    def _leaf(self, tree: Tree, node: int) -> int:
        self.leaf_targets.append(tree.target)
        self.leaf_weights.append(float(tree.value[node]))
        return len(self.leaf_weights) - 1

    def _node(
        self,
        feature: int,
        split: float,
        missing_left: bool,
        true_child: tuple[int, bool],
        false_child: tuple[int, bool],
    ) -> None:
        self.features.append(feature)
        self.modes.append(_BRANCH_LT)
        self.splits.append(split)
        self.tracks_true.append(int(missing_left))
        self.true_ids.append(true_child[0])
        self.true_leafs.append(int(true_child[1]))
        self.false_ids.append(false_child[0])
        self.false_leafs.append(int(false_child[1]))


def emit_float(ensemble: Ensemble) -> MarginGraph:
    """One TreeEnsemble summing leaves per output, then the base margin added in float32.

    Category sets are members listed in the tree op (``BRANCH_MEMBER``), or, where that at
    least halves the stored bytes (many categories), per-feature tables (bits or sparse steps,
    ``builder/convert/category_tables.py``) that fill one 0/1 column per distinct set, split
    at 0.5 like a threshold (``builder/convert/categories.py``). Both are exact; the table
    lookup costs ~1-3 µs a row (README, "Not yet, or not here"), so a small saving does not
    buy it."""
    prelude, tree_input, initializers = _whole_categories(ensemble)
    listed = _tree_graph(ensemble, prelude, tree_input, initializers)
    if not ensemble.has_category_splits:
        return listed
    numeric, memberships = split_categories(ensemble)
    graph = OpGraph("float/")
    source = membership_input(graph, memberships)
    as_columns = _tree_graph(numeric, graph.nodes, source, graph.initializers)
    return as_columns if 2 * _stored_bytes(as_columns) <= _stored_bytes(listed) else listed


def _stored_bytes(graph: MarginGraph) -> int:
    return sum(part.ByteSize() for part in [*graph.nodes, *graph.initializers])


def _tree_graph(
    ensemble: Ensemble, prelude: list[Any], tree_input: str, initializers: list[Any]
) -> MarginGraph:
    tables = _Tables()
    for tree in ensemble.trees:
        tables.add(tree)
    if not ensemble.trees:
        # An ensemble with no trees still needs a graph: one zero leaf keeps the op valid.
        tables.add(_zero_tree())
    membership = {"membership_values": _float_tensor(tables.members)} if tables.members else {}
    tree_node = helper.make_node(
        "TreeEnsemble",
        [tree_input],
        ["float/sum"],
        name="float/trees",
        domain=_ML_DOMAIN,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE: the link is appended in-graph separately
        n_targets=ensemble.num_outputs,
        tree_roots=tables.roots,
        nodes_featureids=tables.features,
        nodes_splits=_float_tensor(tables.splits),
        nodes_modes=numpy_helper.from_array(np.asarray(tables.modes, dtype=np.uint8)),
        nodes_missing_value_tracks_true=tables.tracks_true,
        nodes_truenodeids=tables.true_ids,
        nodes_trueleafs=tables.true_leafs,
        nodes_falsenodeids=tables.false_ids,
        nodes_falseleafs=tables.false_leafs,
        leaf_targetids=tables.leaf_targets,
        leaf_weights=_float_tensor(tables.leaf_weights),
        **membership,
    )
    base = numpy_helper.from_array(
        ensemble.base_margin.reshape(1, -1).astype(np.float32), "float/base_margin"
    )
    add = helper.make_node("Add", ["float/sum", base.name], [MARGIN_NAME], name="float/add_base")
    return MarginGraph(
        nodes=[*prelude, tree_node, add],
        initializers=[base, *initializers],
        opsets={"": 17, _ML_DOMAIN: 5},
        info={},
        min_onnxruntime=MIN_ONNXRUNTIME,
    )


def _whole_categories(ensemble: Ensemble) -> tuple[list[Any], str, list[Any]]:
    """XGBoost reads a category as its integer part; set membership compares exact floats. So
    categorical columns go through Floor first (negative values stay negative, so outside
    every set, as XGBoost sends them left too; NaN stays missing). No nodes without them."""
    columns = sorted({int(t.feature[n]) for t in ensemble.trees for n in t.categories})
    if not columns:
        return [], INPUT_NAME, []
    mask = np.zeros(ensemble.num_features, dtype=np.bool_)
    mask[columns] = True
    tensor = numpy_helper.from_array(mask, "float/categorical")
    nodes = [
        helper.make_node("Floor", [INPUT_NAME], ["float/floor"], name="float/floor"),
        helper.make_node(
            "Where",
            [tensor.name, "float/floor", INPUT_NAME],
            ["float/input"],
            name="float/whole_categories",
        ),
    ]
    return nodes, "float/input", [tensor]


def _float_tensor(values: list[float]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32))


def _zero_tree() -> Tree:
    return Tree(
        left=np.asarray([LEAF], np.int32),
        right=np.asarray([LEAF], np.int32),
        feature=np.zeros(1, np.int32),
        threshold=np.zeros(1, np.float32),
        default_left=np.ones(1, np.bool_),
        value=np.zeros(1, np.float32),
        target=0,
    )
