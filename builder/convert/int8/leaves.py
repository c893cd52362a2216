"""Leaf quantization: each tree's leaves as int8 (or int16) codes of one float32 scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgebundle.builder.convert.int8.tables import FloatArray, LeafArray
from edgebundle.builder.convert.ir import Ensemble, Tree

_QMAX = {8: 127, 16: 32767}
_LEAF_DTYPES: dict[int, type[np.signedinteger[Any]]] = {8: np.int8, 16: np.int16}
LEAF_BITS = tuple(_QMAX)


@dataclass(frozen=True)
class LeafCodes:
    """Per tree: node-indexed integer leaf codes (0 at internal nodes) and the float32 scale."""

    codes: tuple[LeafArray, ...]
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
) -> LeafArray:
    values = np.where(tree.is_leaf, tree.value, 0).astype(np.float64)
    if scale == 0.0:  # every leaf is 0
        return np.zeros(tree.num_nodes, dtype=dtype)
    return np.clip(np.rint(values / scale), -qmax, qmax).astype(dtype)
