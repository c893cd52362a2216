"""The int8 emitter's pure parts on hand-built trees, without onnxruntime: the threshold
codebook, leaf quantization, both layouts' tables (walked here in numpy, as the graph walks
them), the stored index widths and the choice between the layouts."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgebundle.builder.convert.emit_int8 import choose_layout
from edgebundle.builder.convert.int8.codebook import Codebook, build_codebook
from edgebundle.builder.convert.int8.leaves import quantize_leaves
from edgebundle.builder.convert.int8.node_array import node_array_bytes, node_array_tables
from edgebundle.builder.convert.int8.perfect import perfect_bytes, perfect_tables
from edgebundle.builder.convert.int8.tables import Tables, index_itemsize, narrow
from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree


def tree(
    left: list[int],
    right: list[int],
    feature: list[int],
    threshold: list[float],
    default_left: list[bool],
    value: list[float],
    target: int = 0,
) -> Tree:
    return Tree(
        left=np.array(left, dtype=np.int32),
        right=np.array(right, dtype=np.int32),
        feature=np.array(feature, dtype=np.int32),
        threshold=np.array(threshold, dtype=np.float32),
        default_left=np.array(default_left),
        value=np.array(value, dtype=np.float32),
        target=target,
    )


# Node ids out of level order, as XGBoost may number them:
#   0: x0 < 1 (missing left) ── left 3: x1 < 5 (missing right) ── left 4: leaf 1.0
#                            │                                  └ right 2: leaf -2.0
#                            └ right 1: leaf 4.0
SHUFFLED = tree(
    left=[3, LEAF, LEAF, 4, LEAF],
    right=[1, LEAF, LEAF, 2, LEAF],
    feature=[0, 0, 0, 1, 0],
    threshold=[1.0, 0, 0, 5.0, 0],
    default_left=[True, False, False, False, False],
    value=[0, 4.0, -2.0, 0, 1.0],
)
# x0 < 3 (missing left): 0.5, else -0.5
STUMP = tree(
    left=[1, LEAF, LEAF],
    right=[2, LEAF, LEAF],
    feature=[0, 0, 0],
    threshold=[3.0, 0, 0],
    default_left=[True, False, False],
    value=[0, 0.5, -0.5],
)
ROWS = np.array(
    [[0.5, 4.0], [2.0, np.nan], [np.nan, np.nan], [5.0, 9.0], [0.9, 5.0]], dtype=np.float32
)
# by hand from the trees above: int8 codes of 1.0, 4.0, -2.0, -2.0, 4.0 (scale 4/127) and
# of 0.5, 0.5, 0.5, -0.5, 0.5 (scale 0.5/127)
EXPECTED_CODES = [[32, 127], [127, 127], [-64, 127], [127, -127], [-64, 127]]


def ensemble(*trees: Tree, num_features: int = 2, num_outputs: int = 1) -> Ensemble:
    return Ensemble(
        trees=trees,
        num_features=num_features,
        num_outputs=num_outputs,
        base_margin=np.zeros(num_outputs, dtype=np.float32),
    )


PAIR = ensemble(SHUFFLED, STUMP)


# --- thresholds --------------------------------------------------------------------------------


def test_codebook_stores_each_threshold_once_with_a_nan_sentinel() -> None:
    codebook = build_codebook(PAIR)
    np.testing.assert_array_equal(codebook.values, [1.0, 3.0, 5.0, np.nan])
    # segments: x0 and x1 with missing left, the same with missing right, then the sentinel
    np.testing.assert_array_equal(codebook.segment_column, [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(codebook.segment_offset, [0, 2, 0, 2, 3])
    assert codebook.sentinel == 4 and codebook.num_split_features == 2


def test_encode_picks_the_segment_of_the_default_direction() -> None:
    codebook = build_codebook(PAIR)
    segment, code = codebook.encode(SHUFFLED)
    np.testing.assert_array_equal(segment, [0, 4, 4, 3, 4])  # node 3: x1, missing right
    np.testing.assert_array_equal(code, [0, 0, 0, 0, 0])
    segment, code = codebook.encode(STUMP)
    np.testing.assert_array_equal(segment, [0, 4, 4])
    np.testing.assert_array_equal(code, [1, 0, 0])  # 3.0 is x0's second threshold


def test_a_wide_feature_spans_segments_and_its_codes_stay_uint8() -> None:
    stumps = [
        tree([1, LEAF, LEAF], [2, LEAF, LEAF], [0, 0, 0], [t, 0, 0], [t != 299, True, True],
             [0, 1, -1])
        for t in range(300)
    ]  # fmt: skip
    codebook = build_codebook(ensemble(*stumps, num_features=1))
    np.testing.assert_array_equal(codebook.segment_offset, [0, 256, 0, 256, 300])
    assert codebook.values.shape == (301,)
    segment, code = codebook.encode(stumps[299])
    assert (segment[0], code[0]) == (1 + 2, 299 - 256)  # second segment, missing right
    segment, code = codebook.encode(stumps[255])
    assert (segment[0], code[0]) == (0, 255)


# --- leaves ------------------------------------------------------------------------------------


def test_leaves_round_to_one_scale_per_tree() -> None:
    leaves = quantize_leaves(PAIR.trees, 8)
    np.testing.assert_array_equal(leaves.scales, np.array([4 / 127, 0.5 / 127], np.float32))
    np.testing.assert_array_equal(leaves.codes[0], [0, 127, -64, 0, 32])  # -63.5 rounds to even
    assert leaves.codes[0].dtype == np.int8
    wide = quantize_leaves(PAIR.trees, 16)
    np.testing.assert_array_equal(wide.codes[0], [0, 32767, -16384, 0, 8192])
    assert wide.codes[0].dtype == np.int16


def test_error_bound_is_the_worst_outputs_half_scales() -> None:
    trees = (SHUFFLED, STUMP, dataclasses.replace(STUMP, target=1))
    leaves = quantize_leaves(trees, 8)
    halves = leaves.scales.astype(np.float64) / 2
    bound = leaves.error_bound(ensemble(*trees, num_outputs=2))
    assert bound == pytest.approx(max(halves[0] + halves[1], halves[2]), rel=1e-15)


# --- layouts -----------------------------------------------------------------------------------


def walk(tables: Tables, codebook: Codebook, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """The graph's traversal in numpy: each row's leaf code in every tree, [N, T]."""
    wide = np.concatenate([x, np.where(np.isnan(x), np.inf, x)], axis=1)
    rows = np.arange(x.shape[0])[:, None]
    trees = np.arange(tables.leaves.shape[1])[None, :]
    position = np.zeros((x.shape[0], tables.leaves.shape[1]), dtype=np.int64)
    for step in range(tables.depth):
        segment, code = tables.levels[step if tables.layout == "perfect" else 0]
        seg = segment[position, trees]
        threshold = codebook.values[codebook.segment_offset[seg] + code[position, trees]]
        right = (wide[rows, codebook.segment_column[seg]] >= threshold).astype(np.int64)
        if tables.left is None:
            position = 2 * position + right
        else:
            position = tables.left[position, trees] + right
    return tables.leaves[position, trees].astype(np.int64)


def test_perfect_tables_pad_each_leaf_down_to_the_last_level() -> None:
    codebook, leaves = build_codebook(PAIR), quantize_leaves(PAIR.trees, 8)
    tables = perfect_tables(PAIR, 2, codebook, leaves)
    assert tables.left is None and len(tables.levels) == 2
    np.testing.assert_array_equal(tables.levels[0][0], [[0, 0]])
    np.testing.assert_array_equal(tables.levels[0][1], [[0, 1]])
    np.testing.assert_array_equal(tables.levels[1][0], [[3, 4], [4, 4]])
    # slots under the leaf 4.0 (code 127) repeat it
    np.testing.assert_array_equal(tables.leaves, [[32, 127], [-64, 127], [127, -127], [127, -127]])
    np.testing.assert_array_equal(walk(tables, codebook, ROWS), EXPECTED_CODES)


def test_node_array_renumbers_level_by_level_with_siblings_adjacent() -> None:
    codebook, leaves = build_codebook(PAIR), quantize_leaves(PAIR.trees, 8)
    tables = node_array_tables(PAIR, 2, codebook, leaves)
    assert tables.left is not None and len(tables.levels) == 1
    segment, code = tables.levels[0]
    # SHUFFLED in level order is old nodes 0, 3, 1, 4, 2; STUMP is padded with two
    # self-looping sentinel leaves to the larger tree's 5 nodes
    np.testing.assert_array_equal(tables.left.T, [[1, 3, 2, 3, 4], [1, 1, 2, 3, 4]])
    np.testing.assert_array_equal(segment.T, [[0, 3, 4, 4, 4], [0, 4, 4, 4, 4]])
    np.testing.assert_array_equal(code.T, [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(tables.leaves.T, [[0, 0, 127, 32, -64], [0, 127, -127, 0, 0]])
    np.testing.assert_array_equal(walk(tables, codebook, ROWS), EXPECTED_CODES)


def test_stored_bytes_of_each_layout() -> None:
    codebook = build_codebook(PAIR)
    # perfect: per tree 3 node slots of (segment, code) and 4 leaf slots
    assert perfect_bytes(PAIR, 2, codebook, 8) == 2 * (3 * 2 + 4 * 1)
    assert perfect_bytes(PAIR, 2, codebook, 16) == 2 * (3 * 2 + 4 * 2)
    # node-array: per tree 5 nodes of (segment, code, left child, leaf)
    assert node_array_bytes(PAIR, codebook, 8) == 2 * 5 * (3 + 1)
    assert choose_layout(PAIR, 2, codebook, 8) == "perfect"


def chain(depth: int) -> Tree:
    """``depth`` splits, each with a leaf on the left: 2 * depth + 1 nodes."""
    n = 2 * depth + 1
    internal = np.arange(depth) * 2
    left = np.full(n, LEAF)
    right = np.full(n, LEAF)
    left[internal], right[internal] = internal + 1, internal + 2
    threshold = np.zeros(n)
    threshold[internal] = np.arange(depth)
    return tree(
        left.tolist(), right.tolist(), [0] * n, threshold.tolist(), [True] * n,
        np.where(left == LEAF, 1.0, 0.0).tolist(),
    )  # fmt: skip


@pytest.mark.parametrize(("depth", "layout"), [(1, "perfect"), (12, "node-array")])
def test_choice_follows_the_stored_bytes(depth: int, layout: str) -> None:
    deep = ensemble(chain(depth))
    codebook = build_codebook(deep)
    perfect = perfect_bytes(deep, depth, codebook, 8)
    assert (perfect <= node_array_bytes(deep, codebook, 8)) == (layout == "perfect")
    assert choose_layout(deep, depth, codebook, 8) == layout


def test_padding_beyond_the_limit_is_never_chosen() -> None:
    deep = ensemble(chain(30))
    assert choose_layout(deep, 30, build_codebook(deep), 8) == "node-array"


@pytest.mark.parametrize(
    ("largest", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65536, np.int32)]
)
def test_indices_are_stored_narrow(largest: int, dtype: type[np.integer[Any]]) -> None:
    assert narrow(np.array([0, largest])).dtype == dtype
    assert index_itemsize(largest) == np.dtype(dtype).itemsize
