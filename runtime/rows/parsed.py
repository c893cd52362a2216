"""A parsed input row: float32 values with NaN for missing, or the error standing in for it.

Every value becomes float32 the way XGBoost converts its input (float64, then float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True, eq=False)
class Row:
    """One parsed row: float32 ``[F]`` values (NaN = missing) and what to echo back."""

    values: npt.NDArray[np.float32]
    passthrough: dict[str, object]


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that cannot be scored; ``message`` is one line starting with where it was."""

    message: str
    passthrough: dict[str, object]


def to_float32(values: Sequence[float] | Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    # Each Python float (a float64) is rounded once to float32, as XGBoost converts its input;
    # beyond float32 range a value becomes ±inf, as there.
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np.float32)
