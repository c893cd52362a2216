"""Task metrics on labelled rows: AUC, log-loss, accuracy, RMSE, MAE, and which apply to a task.

Pure numpy, no scikit-learn (not a dependency): each metric is ``f(y, values) -> float``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import InputError

F64 = npt.NDArray[np.float64]
Outputs = Mapping[str, npt.NDArray[Any]]  # a bundle's outputs by name, as its scorer returns

PROBABILITY_CLIP = 1e-15
# Changes below this share of a metric's value vanish in the 4 significant digits shown.
SAME_RELATIVE = 5e-5


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    key: str
    title: str
    old: float
    new: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        return self.new - self.old

    @property
    def verdict(self) -> str:
        if abs(self.change) <= SAME_RELATIVE * max(abs(self.old), abs(self.new)):
            return "same"
        return "better" if (self.change > 0) == self.higher_is_better else "worse"

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "change": self.change,
            "higher_is_better": self.higher_is_better,
            "verdict": self.verdict,
        }


def auc(y: F64, score: npt.NDArray[Any]) -> float:
    """ROC AUC as the Mann–Whitney U statistic with tie-averaged ranks; NaN with one class."""
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: F64) -> F64:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(values))
    group_rank = (starts + 1 + ends) / 2
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(starts_group) - 1]
    return ranks


def log_loss(y: F64, probability: npt.NDArray[Any]) -> float:
    p = np.clip(probability.astype(np.float64), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def multiclass_log_loss(y: F64, probabilities: npt.NDArray[Any]) -> float:
    p = probabilities.astype(np.float64)[np.arange(len(y)), y.astype(np.int64)]
    return float(-np.mean(np.log(np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP))))


def accuracy(y: F64, label: npt.NDArray[Any]) -> float:
    return float(np.mean(label == y))


def rmse(y: F64, prediction: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean((prediction.astype(np.float64) - y) ** 2)))


def mae(y: F64, prediction: npt.NDArray[Any]) -> float:
    return float(np.mean(np.abs(prediction.astype(np.float64) - y)))


@dataclass(frozen=True, slots=True)
class _MetricSpec:
    key: str
    title: str
    outputs: tuple[str, ...]  # the first of these a bundle has is scored
    higher_is_better: bool
    compute: Callable[[F64, npt.NDArray[Any]], float]


_ACCURACY = _MetricSpec("accuracy", "accuracy", ("label",), True, accuracy)
_TASK_METRICS: Mapping[str, tuple[_MetricSpec, ...]] = {
    "binary": (
        # rank-based, so a logitraw score serves as well as a probability
        _MetricSpec("auc", "AUC", ("probability", "score"), True, auc),
        _MetricSpec("log_loss", "log-loss", ("probability",), False, log_loss),
        _ACCURACY,
    ),
    "multiclass": (
        _MetricSpec("log_loss", "log-loss", ("probabilities",), False, multiclass_log_loss),
        _ACCURACY,
    ),
    "regression": (
        _MetricSpec("rmse", "RMSE", ("prediction",), False, rmse),
        _MetricSpec("mae", "MAE", ("prediction",), False, mae),
    ),
}


def task_metrics(
    task: str, old: Outputs, new: Outputs, y: F64
) -> tuple[tuple[Metric, ...], list[str]]:
    """Each of the task's metrics both bundles can be scored on, over the labelled rows."""
    specs = _TASK_METRICS.get(task)
    if specs is None:
        return (), [f"no task metric for {task} models: agreement only"]
    labelled = ~np.isnan(y)
    if not labelled.any():
        raise InputError("every row's label is missing: nothing to compute metrics on")
    metrics, notes = [], []
    for spec in specs:
        old_values, new_values = _output(old, spec.outputs), _output(new, spec.outputs)
        if old_values is None or new_values is None:
            continue
        a = spec.compute(y[labelled], old_values[labelled])
        b = spec.compute(y[labelled], new_values[labelled])
        if math.isnan(a) or math.isnan(b):
            notes.append(f"{spec.title} is undefined: the labelled rows hold one class only")
            continue
        metrics.append(
            Metric(
                key=spec.key, title=spec.title, old=a, new=b, higher_is_better=spec.higher_is_better
            )
        )
    return tuple(metrics), notes


def _output(outputs: Outputs, names: tuple[str, ...]) -> npt.NDArray[Any] | None:
    return next((outputs[name] for name in names if name in outputs), None)
