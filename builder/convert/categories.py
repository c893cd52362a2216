"""Categorical splits as numeric ones: each distinct category set becomes a 0/1 input column.

A categorical node of feature f with set S becomes a numeric node on a virtual column (one per
distinct (f, S)) holding 1 where the row's category is in S and 0 otherwise, compared against
0.5: in the set goes right, anything else left, exactly XGBoost's rule. The column is NaN where
f is missing, so the int8 traversal's widened input (and the float tree op's missing rule)
sends it along the node's default direction like any numeric split. Everything after that
(codebook, layouts, traversal) is the numeric path.

The columns come from a float32 [C + 2, K] table per categorical feature with K distinct sets
and largest listed category C - 1, stored compactly and decoded at load
(``category_tables.py``). Each run floors the column (a non-integer category counts as its
integer part, as in the float path), maps NaN to row C + 1 and anything outside [0, C) to row
C, and gathers the row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from edgebundle.builder.convert.category_tables import Membership, decoded_table, joined
from edgebundle.builder.convert.graph import INPUT_NAME
from edgebundle.builder.convert.ir import Ensemble, Tree
from edgebundle.builder.convert.opgraph import OpGraph
from edgebundle.builder.errors import ConversionError

_CUT = np.float32(0.5)  # between "not in the set" (0) and "in the set" (1)


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
        memberships.append(Membership(feature, tuple(found[feature].values())))
    trees = tuple(_numeric(tree, column) for tree in ensemble.trees)
    numeric = replace(
        ensemble, trees=trees, num_features=ensemble.num_features + len(column),
        categorical=frozenset(),
    )
    return numeric, tuple(memberships)


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
    zero = graph.const("category_zero", np.array(0.0, dtype=np.float32))
    columns = [INPUT_NAME]
    for m in memberships:
        name = f"cat{m.feature}"
        table = decoded_table(graph, m, name)
        columns.append(graph.op("Gather", [table, _row(graph, m, name, zero)], f"{name}/in_set"))
    return joined(graph, columns, "input_with_sets", axis=1)


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
