"""The models other converters refuse, small and real: dart, gblinear, several quantiles,
several targets (one tree per target and vector leaves), each with rows to score and XGBoost's
own answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from tests.support.xgbmodels import NAMES, features, labels, threshold_rows

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ZooModel:
    name: str
    path: Path
    rows: F32  # held-out rows plus rows on and around every threshold, NaN = missing
    expected: npt.NDArray[np.float32]  # Booster.predict on ``rows``: what every scorer must give
    classifier: bool  # the primary output is a probability (budget 0.01 absolute)


def _two_targets(x: F32) -> npt.NDArray[np.float64]:
    return np.stack([labels("reg:squarederror", x), np.nan_to_num(x[:, 3] * 2 - x[:, 5])], axis=1)


_X = features(600)
_DART = {"booster": "dart", "rate_drop": 0.3, "skip_drop": 0.0}
_RECIPES: dict[str, tuple[dict[str, Any], Callable[[F32], npt.NDArray[np.float64]]]] = {
    "dart-binary": (
        {"objective": "binary:logistic", **_DART},
        lambda x: labels("binary:logistic", x),
    ),
    "dart-regression": ({"objective": "reg:squarederror", **_DART}, lambda x: labels("r", x)),
    "quantiles-3": (
        {"objective": "reg:quantileerror", "quantile_alpha": [0.1, 0.5, 0.9]},
        lambda x: labels("r", x),
    ),
    "gblinear-regression": (
        {"booster": "gblinear", "objective": "reg:squarederror"},
        lambda x: labels("r", x),
    ),
    "gblinear-binary": (
        {"booster": "gblinear", "objective": "binary:logistic"},
        lambda x: labels("binary:logistic", x),
    ),
    "targets-2": ({"multi_strategy": "one_output_per_tree"}, _two_targets),
    "targets-2-vector-leaves": ({"multi_strategy": "multi_output_tree"}, _two_targets),
}
ZOO = tuple(sorted(_RECIPES))


def train_zoo(name: str, out: Path) -> ZooModel:
    """Train the zoo model ``name`` on 500 rows; score 100 held-out rows and threshold rows."""
    params, target = _RECIPES[name]
    train_x = _X[:500]
    dtrain = xgb.DMatrix(train_x, label=target(train_x), missing=np.nan, feature_names=list(NAMES))
    config = {"tree_method": "hist", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 3}
    booster = xgb.train({**config, **params}, dtrain, num_boost_round=15)
    path = out / f"{name}.json"
    booster.save_model(path)
    rows = np.concatenate([_X[500:], threshold_rows(booster, len(NAMES))[:200]])
    expected = booster.predict(xgb.DMatrix(rows, missing=np.nan, feature_names=list(NAMES)))
    return ZooModel(
        name=name,
        path=path,
        rows=rows,
        expected=expected,
        classifier=params.get("objective") == "binary:logistic",
    )
