"""Tensor shapes as functions of the batch size N: each dimension is ``per_row * N + fixed``.

Keeping N a variable checks a graph once for every batch size: a shape says both what its
tensor takes at the scorer's largest batch and whether it grows faster than the rows do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck.schema import WHAT


class Dim(NamedTuple):
    """A dimension (or a tracked integer) as ``per_row * N + fixed``, N the batch size."""

    per_row: int
    fixed: int

    def __str__(self) -> str:
        if not self.per_row:
            return str(self.fixed)
        rows = "N" if self.per_row == 1 else f"{self.per_row}N"
        return f"{rows}+{self.fixed}" if self.fixed else rows


ROWS = Dim(1, 0)
ONE = Dim(0, 1)
NONE = Dim(0, 0)
Shape = tuple[Dim, ...]


def fixed(size: int) -> Dim:
    return Dim(0, size)


@dataclass(frozen=True, slots=True)
class Tensor:
    shape: Shape
    dtype: int
    value: tuple[Dim, ...] | None = None  # the contents, for the small integer tensors shapes,
    # axes and slice bounds are made of; None when not known before scoring


def elements(shape: Shape, what: str) -> Dim:
    """The element count, which must be linear in N: at most one dimension may grow with it."""
    growing = [dim for dim in shape if dim.per_row]
    constant = math.prod(dim.fixed for dim in shape if not dim.per_row)
    if len(growing) > 1:
        raise FormatError(
            f"{WHAT}: {what}: a {shape_text(shape)} tensor grows faster than the number of rows"
        )
    if not growing:
        return fixed(constant)
    return Dim(growing[0].per_row * constant, growing[0].fixed * constant)


def at(dim: Dim, rows: int) -> int:
    return dim.per_row * rows + dim.fixed


def shape_text(shape: Shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
