"""Real XGBoost models for the tests: small, fast, with real feature names and missing values."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

NAMES = ("age", "income", "debt ratio", "lines", "late_30d", "utilization")
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Trained:
    booster: xgb.Booster
    path: Path
    x_test: npt.NDArray[np.float32]
    objective: str

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        dm = xgb.DMatrix(x, missing=np.nan, feature_names=list(NAMES[: x.shape[1]]))
        best = self.booster.attr("best_iteration")
        rounds = int(best) + 1 if best is not None else 0  # what the bundle holds
        return self.booster.predict(dm, iteration_range=(0, rounds))  # type: ignore[no-any-return]


def features(rows: int, seed: int = 0, missing: float = 0.05) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES))).astype(np.float32)
    x[:, 1] = np.round(np.exp(x[:, 1] + 10), 0)  # income-like with repeated round values
    x[:, 3] = rng.poisson(3, rows)  # an integer feature
    x[rng.random(x.shape) < missing] = np.nan
    return x


def labels(objective: str, x: npt.NDArray[np.float32], seed: int = 1) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    signal = np.nan_to_num(x[:, 0] - 0.5 * x[:, 2] + 0.3 * x[:, 4]) + rng.normal(0, 0.5, len(x))
    if objective.startswith(("binary:", "rank:")):
        return (signal > 0).astype(np.float64)
    if objective.startswith("multi:"):
        return np.digitize(signal, [-0.5, 0.5]).astype(np.float64)
    if objective == "reg:logistic":
        return 1 / (1 + np.exp(-signal))
    if objective in ("count:poisson", "reg:tweedie"):
        return rng.poisson(np.exp(0.5 * signal)).astype(np.float64)
    if objective in ("reg:gamma", "reg:squaredlogerror"):
        return np.exp(0.5 * signal)
    if objective == "survival:cox":
        time = np.exp(0.5 * signal) + 0.1
        return np.where(rng.random(len(x)) < 0.2, -time, time)  # negative = censored
    return 100 * signal + 50


OBJECTIVES = (
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "multi:softprob",
    "multi:softmax",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:quantileerror",
    "count:poisson",
    "reg:gamma",
    "reg:tweedie",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "survival:cox",
)


def train(
    objective: str,
    out: Path,
    rounds: int = 20,
    filename: str = "model.json",
    **params: Any,
) -> Trained:
    x = features(600)
    y = labels(objective, x)
    dtrain = xgb.DMatrix(x[:500], label=y[:500], missing=np.nan, feature_names=list(NAMES))
    if objective.startswith("rank:"):
        dtrain.set_group([50] * 10)
    extra: dict[str, Any] = {"num_class": 3} if objective.startswith("multi:") else {}
    if objective == "reg:quantileerror":
        extra["quantile_alpha"] = 0.3
    config = {
        "objective": objective,
        "max_depth": 4,
        "eta": 0.3,
        "tree_method": "hist",
        "nthread": 1,
        "seed": 3,
        **extra,
        **params,
    }
    booster = xgb.train(config, dtrain, num_boost_round=rounds)
    path = out / filename
    booster.save_model(path)
    return Trained(booster=booster, path=path, x_test=x[500:], objective=objective)


def threshold_rows(booster: xgb.Booster, num_features: int) -> npt.NDArray[np.float32]:
    """Rows with each feature exactly on, and one float32 ulp either side of, its thresholds."""
    gbm = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    trees = gbm.get("gbtree", gbm)["model"].get("trees", [])  # dart nests its gbtree
    per_feature: list[list[float]] = [[] for _ in range(num_features)]
    for tree in trees:
        for node, left in enumerate(tree["left_children"]):
            if left != -1:
                per_feature[tree["split_indices"][node]].append(tree["split_conditions"][node])
    columns = []
    for values in per_feature:
        t = np.unique(np.asarray(values or [0.0], dtype=np.float32))
        around = np.concatenate([t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.inf)])
        columns.append(around.astype(np.float32))
    length = max(len(c) for c in columns)
    return np.stack([np.resize(c, length) for c in columns], axis=1)


def json_lines(x: npt.NDArray[np.float32]) -> str:
    """Rows as JSON arrays in feature order, null for missing."""
    return "".join(
        json.dumps([None if np.isnan(v) else float(v) for v in row]) + "\n" for row in x
    )


def run(
    command: str,
    args: Sequence[str],
    stdin: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Any:
    """Run one of the console scripts installed beside this interpreter."""
    return subprocess.run(
        [str(BIN / command), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def score(bundle: Path, trust: Path, stdin: str, fmt: str = "jsonl") -> tuple[int, list[Any], str]:
    proc = run("bundle-runtime", ["score", "--bundle", str(bundle), "--trust", str(trust),
                                  "--format", fmt], stdin)
    records = [json.loads(line) for line in proc.stdout.splitlines()] if fmt == "jsonl" else []
    return proc.returncode, records, proc.stderr
