"""Split thresholds as (segment id, uint8 code): every distinct threshold stored once, exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgebundle.builder.convert.int8.tables import FloatArray, IntArray
from edgebundle.builder.convert.ir import Ensemble, Tree
from edgebundle.builder.errors import ConversionError

CODES_PER_SEGMENT = 256  # uint8 threshold codes


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
