"""Parity: compare a converted model's outputs with XGBoost's ``predict()`` on check rows.

Check rows are the user's data (if any) plus rows synthesized from the model's own thresholds,
so every branch and every missing-value direction is exercised even without data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgebundle.builder.convert.ir import Ensemble
from edgebundle.builder.convert.objectives import Link
from edgebundle.runtime.manifest import Budget, Parity

F32 = npt.NDArray[np.float32]
REFERENCE = "xgboost.Booster.predict"
_MISSING_RATE = 0.1


def synthesize_rows(ensemble: Ensemble, random_rows: int = 256, seed: int = 0) -> F32:
    """Rows that put every feature on, just below and just above each of its thresholds
    (in shuffled combinations), each feature missing in turn, all features missing, and
    random mixes of those values with missing ones; a categorical feature takes every
    category its splits list, one they do not, a negative and a non-integer one instead.
    Deterministic for reproducible bundles."""
    rng = np.random.default_rng(seed)
    candidates = [_around(t) for t in ensemble.thresholds_per_feature()]
    for feature, categories in ensemble.categories_per_feature().items():
        candidates[feature] = _categories(categories)
    sweep = max(len(c) for c in candidates)
    columns = [np.resize(rng.permutation(c), sweep) for c in candidates]
    grid = np.stack(columns, axis=1).astype(np.float32)
    one_missing = np.resize(grid, (ensemble.num_features, ensemble.num_features)).copy()
    np.fill_diagonal(one_missing, np.nan)
    all_missing = np.full((1, ensemble.num_features), np.nan, dtype=np.float32)
    mixed = np.stack([rng.choice(c, size=random_rows) for c in candidates], axis=1)
    mixed[rng.random(mixed.shape) < _MISSING_RATE] = np.nan
    return np.concatenate([grid, one_missing, all_missing, mixed.astype(np.float32)])


def synthesize_linear_rows(num_features: int, random_rows: int = 256, seed: int = 0) -> F32:
    """Rows for a gblinear model, which has no thresholds to sweep: values of every magnitude
    from 1e-2 to 1e4 and both signs, 10% missing, each feature missing in turn and all missing.
    Deterministic for reproducible bundles."""
    rng = np.random.default_rng(seed)
    shape = (random_rows, num_features)
    mixed = rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 5, shape)
    mixed[rng.random(shape) < _MISSING_RATE] = np.nan
    one_missing = np.ones((num_features, num_features))
    np.fill_diagonal(one_missing, np.nan)
    all_missing = np.full((1, num_features), np.nan)
    return np.concatenate([mixed, one_missing, all_missing]).astype(np.float32)


def _categories(listed: npt.NDArray[np.int32]) -> F32:
    """Every listed category, an unseen one, a negative one (both go left in XGBoost) and a
    non-integer one (read as its integer part)."""
    top = int(listed.max()) if listed.size else 0
    extra = [top + 1, -1, (int(listed[0]) if listed.size else 0) + 0.5]
    return np.concatenate([listed, extra]).astype(np.float32)


def _around(thresholds: F32) -> F32:
    """Each threshold and its float32 neighbours; 0 for a feature the model never splits on."""
    if thresholds.size == 0:
        return np.zeros(1, dtype=np.float32)
    below = np.nextafter(thresholds, np.float32(-np.inf))
    above = np.nextafter(thresholds, np.float32(np.inf))
    return np.unique(np.concatenate([thresholds, below, above])).astype(np.float32)


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """XGBoost's answers on the check rows, in the shape of the graph's outputs."""

    primary: npt.NDArray[np.float64]  # what the first output must equal
    labels: npt.NDArray[np.int64] | None  # None for regressors

    @classmethod
    def from_predictions(
        cls,
        link: Link,
        predicted: npt.NDArray[np.float32],
        margins: npt.NDArray[np.float32],
    ) -> Reference:
        pred = predicted.astype(np.float64)
        if link is Link.PROBABILITY:
            return cls(primary=pred, labels=(pred > 0.5).astype(np.int64))
        if link is Link.SCORE:
            return cls(primary=pred, labels=(pred > 0.0).astype(np.int64))
        if link is Link.HINGE:
            return cls(primary=pred, labels=pred.astype(np.int64))
        if link is Link.SOFTPROB:
            return cls(primary=pred, labels=np.argmax(pred, axis=1).astype(np.int64))
        if link is Link.SOFTMAX:
            # predict() gives only labels; the probabilities are compared with the softmax of
            # XGBoost's own margins.
            m = margins.astype(np.float64)
            e = np.exp(m - m.max(axis=1, keepdims=True))
            return cls(primary=e / e.sum(axis=1, keepdims=True), labels=pred.astype(np.int64))
        return cls(primary=pred, labels=None)


def default_budget(link: Link) -> Budget:
    """Documented in the README: probabilities within 0.01 and ≥ 99.5% identical labels for
    classifiers; within 0.5% of the prediction range for regressors and raw scores."""
    if link in (Link.PROBABILITY, Link.SOFTPROB, Link.SOFTMAX):
        return Budget(max_error=0.01, min_label_agreement=0.995)
    if link is Link.SCORE:
        return Budget(max_error=0.005, min_label_agreement=0.995)
    if link is Link.HINGE:
        # the only output is the label: agreement is the whole budget
        return Budget(max_error=1.0, min_label_agreement=0.995)
    return Budget(max_error=0.005, min_label_agreement=None)


def error_scale(link: Link, reference: Reference) -> float:
    """What errors are measured relative to: 1 for probabilities and labels, else the range
    (of the narrowest column when there are several)."""
    if link in (Link.PROBABILITY, Link.SOFTPROB, Link.SOFTMAX, Link.HINGE):
        return 1.0
    # several targets or quantiles: the narrowest column's scale, so none hides behind another
    columns = reference.primary.reshape(len(reference.primary), -1).T
    return min((_column_scale(c) for c in columns), default=1.0)


def _column_scale(values: npt.NDArray[np.float64]) -> float:
    spread = float(np.ptp(values)) if values.size else 0.0
    return spread if spread > 0 else max(1.0, float(np.max(np.abs(values), initial=0)))


def compared_output(link: Link, output_names: list[str]) -> str:
    """The output whose values are compared: predict()'s own, except for multi:softmax, whose
    labels are judged by agreement and whose probabilities carry the error."""
    return "probabilities" if link is Link.SOFTMAX else output_names[0]


def compare(
    link: Link,
    outputs: dict[str, npt.NDArray[np.generic]],
    reference: Reference,
    budget: Budget,
    data_rows: int,
) -> Parity:
    """Errors of one converted model against the reference, judged against the budget."""
    ours = np.asarray(outputs[compared_output(link, list(outputs))], dtype=np.float64)
    rows = int(reference.primary.shape[0])
    max_abs = float(np.max(np.abs(ours - reference.primary), initial=0.0))
    scale = error_scale(link, reference)
    agreement = None
    if reference.labels is not None:
        same = np.asarray(outputs["label"]) == reference.labels
        agreement = float(np.mean(same)) if rows else 1.0
    max_error = max_abs / scale
    passed = max_error <= budget.max_error and (
        budget.min_label_agreement is None
        or (agreement is not None and agreement >= budget.min_label_agreement)
    )
    return Parity(
        reference=REFERENCE,
        rows=rows,
        data_rows=data_rows,
        synthesized_rows=rows - data_rows,
        max_abs_error=max_abs,
        error_scale=scale,
        max_error=max_error,
        label_agreement=agreement,
        budget=budget,
        passed=passed,
    )
