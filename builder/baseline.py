"""The drift baseline stored in a bundle built with ``--data`` (``runtime.stats`` format)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from builder.ir import Ensemble
from builder.objectives import Link
from runtime.stats import (
    MAX_GROUPS,
    Baseline,
    FeatureBaseline,
    PredictionBaseline,
    bin_index,
    prediction_values,
)

F32 = npt.NDArray[np.float32]
_DECILES = tuple(round(0.1 * k, 1) for k in range(1, 10))
_CLASS_LINKS = (Link.SOFTPROB, Link.SOFTMAX, Link.HINGE)


def baseline(
    ensemble: Ensemble,
    names: tuple[str, ...],
    rows: F32,
    link: Link,
    predictions: npt.NDArray[np.generic],
) -> Baseline:
    """``rows`` are the user's data rows; ``predictions`` the bundle's first output on them."""
    thresholds = ensemble.thresholds_per_feature()
    features = tuple(_feature(name, rows[:, f], thresholds[f]) for f, name in enumerate(names))
    classes = max(ensemble.num_outputs, 2)
    return Baseline(
        rows=len(rows), features=features, prediction=_prediction(link, predictions, classes)
    )


def _feature(name: str, column: F32, thresholds: F32) -> FeatureBaseline:
    present = column[~np.isnan(column)]
    edges = _group_edges(present, thresholds)
    return FeatureBaseline(
        name=name,
        edges=tuple(float(e) for e in edges),
        shares=_shares(present, edges),
        missing_rate=float(np.mean(np.isnan(column))),
    )


def _group_edges(values: F32, thresholds: F32) -> F32:
    """The model's own thresholds, merged to at most MAX_GROUPS bins of about equal row
    counts: few rows per bin would make the device's PSI noise."""
    if len(thresholds) < MAX_GROUPS or len(values) == 0:
        return thresholds
    counts = np.bincount(bin_index(thresholds, values), minlength=len(thresholds) + 1)
    cumulative = np.cumsum(counts)[:-1]  # rows in bins 0..k, for a cut at thresholds[k]
    targets = len(values) * np.arange(1, MAX_GROUPS) / MAX_GROUPS
    cuts = np.unique(np.searchsorted(cumulative, targets, "left"))
    return thresholds[cuts[cuts < len(thresholds)]]


def _shares(values: npt.NDArray[np.floating], edges: npt.NDArray[np.floating]) -> tuple[float, ...]:
    counts = np.bincount(bin_index(edges, values), minlength=len(edges) + 1)
    total = max(int(counts.sum()), 1)
    return tuple(float(c) / total for c in counts)


def _prediction(
    link: Link, predictions: npt.NDArray[np.generic], classes: int
) -> PredictionBaseline:
    if link in _CLASS_LINKS:
        labels = prediction_values("class", predictions)
        edges = np.arange(classes - 1) + 0.5
        return PredictionBaseline(
            kind="class", edges=tuple(edges.tolist()), shares=_shares(labels, edges)
        )
    values = prediction_values("value", predictions)
    if link is Link.PROBABILITY:
        edges = np.asarray(_DECILES)
        return PredictionBaseline(kind="probability", edges=_DECILES, shares=_shares(values, edges))
    edges = np.unique(np.quantile(values, np.asarray(_DECILES)))
    return PredictionBaseline(
        kind="value", edges=tuple(edges.tolist()), shares=_shares(values, edges)
    )
