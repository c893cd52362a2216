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
ZOO = tuple(sorted(_RECIPES))  # the categorical ones: CATEGORICAL, below


def train_zoo(name: str, out: Path) -> ZooModel:
    """Train the zoo model ``name`` on 500 rows; score 100 held-out rows and threshold rows."""
    if name in CATEGORICAL:
        booster, path, rows = train_categorical(name, out)
        expected = categorical_predict(booster, rows)
        return ZooModel(name=name, path=path, rows=rows, expected=expected, classifier=False)
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


# --- categorical features -----------------------------------------------------------------------

CATEGORICAL = {
    # name: (categories, max_cat_to_onehot): 1 makes every split a partition; above the
    # category count every split is one-hot (one category against the rest)
    "cat-3-onehot": (3, 8),
    "cat-50-partition": (50, 1),
    "cat-50-onehot": (50, 64),
    "cat-1000-partition": (1000, 1),
}
CAT_NAMES = ("shop", "z", "w")


def categorical_rows(categories: int, rows: int, seed: int = 0) -> F32:
    """[shop code, z, w]: shop in 0..categories-1, 5% of each column missing."""
    rng = np.random.default_rng(seed)
    x = np.stack(
        [rng.integers(0, categories, rows), rng.normal(size=rows), rng.normal(size=rows)], axis=1
    ).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def categorical_target(x: F32, categories: int) -> npt.NDArray[np.float64]:
    effect = np.random.default_rng(7).normal(size=categories + 1)
    shop = np.nan_to_num(x[:, 0], nan=categories).astype(int)
    return effect[shop] + 0.5 * np.nan_to_num(x[:, 1])


def probe_rows(categories: int) -> F32:
    """Every category, unseen ones above, negative and non-integer codes, and missing."""
    codes = np.concatenate(
        [np.arange(categories), [categories, categories + 7, -1, -0.5, 1.5, 2.99, np.nan]]
    )
    z = np.random.default_rng(9).normal(size=(len(codes), 2))
    return np.concatenate([codes[:, None], z], axis=1).astype(np.float32)


def train_categorical(
    name: str, out: Path, ordinal: bool = False, rounds: int = 15
) -> tuple[xgb.Booster, Path, F32]:
    """The zoo's categorical model ``name`` (or, ``ordinal``, the same data with the shop code
    as a number); its path and rows to score."""
    categories, onehot = CATEGORICAL[name]
    x = categorical_rows(categories, 3000)
    types = ["q" if ordinal else "c", "q", "q"]
    dtrain = xgb.DMatrix(
        x, label=categorical_target(x, categories), missing=np.nan,
        feature_names=list(CAT_NAMES), feature_types=types, enable_categorical=True,
    )
    config = {
        "tree_method": "hist", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 3,
        "max_cat_to_onehot": onehot, "max_bin": 1024,
    }
    booster = xgb.train(config, dtrain, num_boost_round=rounds)
    path = out / f"{name}{'-ordinal' if ordinal else ''}.json"
    booster.save_model(path)
    rows = np.concatenate([categorical_rows(categories, 100, seed=1), probe_rows(categories)])
    return booster, path, rows


def categorical_predict(booster: xgb.Booster, rows: F32) -> npt.NDArray[np.float32]:
    dm = xgb.DMatrix(
        rows, missing=np.nan, feature_names=list(CAT_NAMES), feature_types=["c", "q", "q"],
        enable_categorical=True,
    )
    return booster.predict(dm)  # type: ignore[no-any-return]


SHOPS = tuple(f"shop-{i:02d}" for i in range(12))


def train_named(out: Path) -> tuple[xgb.Booster, Path, Any]:
    """A model trained on a pandas DataFrame whose shop column holds category names; the
    DataFrame it is checked on has every name and missing shops."""
    import pandas as pd

    def frame(rows: int, seed: int) -> Any:
        x = categorical_rows(len(SHOPS), rows, seed)
        shop = [None if np.isnan(c) else SHOPS[int(c)] for c in x[:, 0]]
        return pd.DataFrame(
            {"shop": pd.Categorical(shop, categories=SHOPS), "z": x[:, 1], "w": x[:, 2]}
        ), x

    train, x = frame(2000, 0)
    dtrain = xgb.DMatrix(train, label=categorical_target(x, len(SHOPS)), enable_categorical=True)
    config = {"tree_method": "hist", "max_depth": 4, "nthread": 1, "max_cat_to_onehot": 1}
    booster = xgb.train(config, dtrain, num_boost_round=10)
    path = out / "named.json"
    booster.save_model(path)
    return booster, path, frame(60, 1)[0]
