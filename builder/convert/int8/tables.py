"""The contract between a layout and the traversal graph: integer tables, stored narrow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
LeafArray = npt.NDArray[np.signedinteger[Any]]  # int8 or int16 leaf codes


@dataclass(frozen=True)
class Tables:
    """Integer tables of one layout, each [rows, T] (tree t in column t).

    ``levels`` holds one (segment, code) pair per traversal step: per depth level for the
    perfect layout, or the single shared node table for the node-array layout, whose ``left``
    maps a node to its left child (right child = left + 1; leaves map to themselves).
    """

    layout: str
    depth: int
    levels: tuple[tuple[IntArray, IntArray], ...]
    leaves: LeafArray
    left: IntArray | None


def narrow(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The narrowest unsigned (or int32) dtype holding these non-negative indices."""
    return values.astype(_index_dtype(int(values.max(initial=0))))


def index_itemsize(largest: int) -> int:
    """Bytes per stored index up to ``largest``, as ``narrow`` would store it."""
    return int(np.dtype(_index_dtype(largest)).itemsize)


def _index_dtype(largest: int) -> type[np.integer[Any]]:
    if largest <= np.iinfo(np.uint8).max:
        return np.uint8
    if largest <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.int32
