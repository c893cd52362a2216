"""The drift baseline stored in a bundle built with ``--data`` (``runtime.stats`` format)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgebundle.builder.convert.ir import Ensemble
from edgebundle.builder.convert.objectives import Link
from edgebundle.runtime.scoring import to_python
from edgebundle.runtime.stats import (
    MAX_GROUPS,
    SHARE_DIGITS,
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
        edges=_float32_text(edges),
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
    # Shares estimated from at most a few thousand rows: digits past the sixth are noise.
    return tuple(round(float(c) / total, SHARE_DIGITS) for c in counts)


def _float32_text(edges: F32) -> tuple[float, ...]:
    """float32 edges as the floats whose repr is their shortest float32 text (``0.18905339``,
    not ``0.18905338644981384``): half the bytes, and read back as float32 they are exact."""
    return tuple(to_python(edges.astype(np.float32)))


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
        edges = np.asarray(_DECILES, dtype=np.float32)
        return PredictionBaseline(
            kind="probability", edges=_float32_text(edges), shares=_shares(values, edges)
        )
    # Predictions are float32: so are their deciles, compared as the device will compare them.
    deciles = np.unique(np.quantile(values, np.asarray(_DECILES)).astype(np.float32))
    return PredictionBaseline(
        kind="value", edges=_float32_text(deciles), shares=_shares(values, deciles)
    )
