"""How NEW's outputs agree with OLD's on the same rows, no labels needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgebundle.builder.compare.metrics import Outputs


@dataclass(frozen=True, kw_only=True, slots=True)
class Shift:
    """How the first per-row float output moved from OLD to NEW."""

    output: str
    mean_old: float
    mean_new: float
    max_abs_diff: float

    @property
    def mean_diff(self) -> float:
        return self.mean_new - self.mean_old

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "mean_old": self.mean_old,
            "mean_new": self.mean_new,
            "mean_diff": self.mean_diff,
            "max_abs_diff": self.max_abs_diff,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Agreement:
    rows: int
    labels: float | None  # share of identical labels; None when the models output none
    shift: Shift | None  # None when there is no per-row float output (multiclass, hinge)
    # Mean over rows of ½Σ|Δp| over classes: |Δp| for a binary model, and for a multiclass
    # one the probability mass that moved, on the same 0..1 scale.
    probability_diff: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "label_agreement": self.labels,
            "shift": None if self.shift is None else self.shift.to_dict(),
            "mean_abs_probability_diff": self.probability_diff,
        }


def agreement(old: Outputs, new: Outputs) -> Agreement:
    rows = len(next(iter(old.values())))
    labels = None
    if "label" in old and "label" in new:
        labels = float(np.mean(old["label"] == new["label"]))
    return Agreement(
        rows=rows,
        labels=labels,
        shift=_shift(old, new),
        probability_diff=_probability_diff(old, new),
    )


def _shift(old: Outputs, new: Outputs) -> Shift | None:
    name = next((n for n, v in old.items() if v.dtype == np.float32 and v.ndim == 1), None)
    if name is None or name not in new or new[name].ndim != 1:
        return None
    a, b = old[name].astype(np.float64), new[name].astype(np.float64)
    return Shift(
        output=name,
        mean_old=float(a.mean()),
        mean_new=float(b.mean()),
        max_abs_diff=float(np.abs(b - a).max()),
    )


def _probability_diff(old: Outputs, new: Outputs) -> float | None:
    if "probability" in old and "probability" in new:
        diff = new["probability"].astype(np.float64) - old["probability"]
        return float(np.abs(diff).mean())
    if "probabilities" in old and "probabilities" in new:
        diff = new["probabilities"].astype(np.float64) - old["probabilities"]
        return float((0.5 * np.abs(diff).sum(axis=1)).mean())
    return None
