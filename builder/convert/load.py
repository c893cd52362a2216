"""Load an XGBoost model file into the IR, refusing clearly what cannot be converted exactly.

This is the only module that reads XGBoost's model JSON. It never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from edgebundle.builder.convert.ir import LEAF, Ensemble, Tree
from edgebundle.builder.convert.objectives import OBJECTIVES, BaseSpace, Objective
from edgebundle.builder.errors import ConversionError

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav"}
_FEATURE_TYPES = {"float", "int", "i", "q"}


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceModel:
    """A loaded model: its IR plus what the manifest and the parity check need."""

    booster: xgb.Booster
    ensemble: Ensemble
    objective_name: str
    objective: Objective
    num_class: int  # 1 unless multiclass
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    best_iteration: int | None
    iterations: int  # boosting rounds predict() uses (the bundle's trees)
    sha256: str
    framework_version: str

    def reference_predict(self, x: npt.NDArray[np.float32], margin: bool = False) -> Any:
        """XGBoost's own ``predict()`` on the rounds the bundle holds: the ground truth."""
        dmatrix = xgb.DMatrix(x, missing=np.nan, feature_names=list(self.feature_names))
        return self.booster.predict(
            dmatrix, output_margin=margin, iteration_range=(0, self.iterations)
        )


def load_model(path: Path, use_best_iteration: bool = True) -> SourceModel:
    """Read a saved XGBoost model (``.json``, ``.ubj`` or any format XGBoost loads)."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ConversionError(
            f"{path.name}: pickled models are never loaded (unsafe); "
            "save the model with model.save_model('model.json') and build from that"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from None
    booster = xgb.Booster()
    try:
        with warnings.catch_warnings():
            # e.g. "Unknown file format ... Using UBJSON as a guess": a wrong guess fails below
            warnings.simplefilter("ignore", UserWarning)
            booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise ConversionError(f"XGBoost cannot load {path.name}: {first_line}") from None
    doc = json.loads(booster.save_raw("json"))
    return _from_json(booster, doc, hashlib.sha256(data).hexdigest(), use_best_iteration)


def _from_json(
    booster: xgb.Booster, doc: dict[str, Any], sha256: str, use_best_iteration: bool
) -> SourceModel:
    learner = doc["learner"]
    params = learner["learner_model_param"]
    objective_name = learner["objective"]["name"]
    objective = _objective(objective_name, learner["objective"])
    gbm = learner["gradient_booster"]
    model, weights = _tree_model(gbm)
    if int(params.get("num_target", "1")) > 1:
        raise ConversionError(
            f"model has {params['num_target']} targets (multi-target or multi-quantile); "
            "train one model per target/quantile and bundle each"
        )
    num_features = int(params["num_feature"])
    num_class = max(1, int(params["num_class"]))
    best_iteration = _best_iteration(learner.get("attributes", {}))
    indptr = [int(i) for i in model["iteration_indptr"]]
    iterations = len(indptr) - 1
    if use_best_iteration and best_iteration is not None:
        iterations = min(iterations, best_iteration + 1)
    tree_docs = model["trees"][: indptr[iterations]]
    targets = model["tree_info"][: indptr[iterations]]
    trees = tuple(
        _tree(t, int(c), num_features, w)
        for t, c, w in zip(tree_docs, targets, weights[: len(tree_docs)], strict=True)
    )
    base = _base_margin(params["base_score"], objective, num_class)
    names, types = _features(learner, num_features)
    return SourceModel(
        booster=booster,
        ensemble=Ensemble(
            trees=trees, num_features=num_features, num_outputs=num_class, base_margin=base
        ),
        objective_name=objective_name,
        objective=objective,
        num_class=num_class,
        feature_names=names,
        feature_types=types,
        best_iteration=best_iteration,
        iterations=iterations,
        sha256=sha256,
        framework_version=xgb.__version__,
    )


def _objective(name: str, config: dict[str, Any]) -> Objective:
    objective = OBJECTIVES.get(name)
    if objective is None:
        supported = ", ".join(sorted(OBJECTIVES))
        raise ConversionError(f"objective {name!r} is not supported; supported: {supported}")
    alphas = config.get("quantile_loss_param", {}).get("quantile_alpha")
    if alphas is not None and len(_float_list(alphas)) > 1:
        raise ConversionError(
            "reg:quantileerror with several quantiles is not supported; "
            "train one model per quantile and bundle each"
        )
    return objective


def _tree_model(gbm: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """The tree model and each tree's weight. dart drops trees only while training; its
    ``predict()`` sums every tree's leaf times the tree's ``weight_drop`` (in float32), so
    folding the weight into the leaves is exact."""
    name = gbm["name"]
    if name == "gbtree":
        model = gbm["model"]
        return model, [1.0] * len(model["trees"])
    if name == "dart":
        model = gbm["gbtree"]["model"]
        weights = [float(w) for w in gbm["weight_drop"]]
        if len(weights) != len(model["trees"]):
            raise ConversionError(
                f"dart model lists {len(weights)} tree weights for {len(model['trees'])} trees"
            )
        return model, weights
    raise ConversionError(f"booster {name!r} is not supported; only tree models (gbtree) are")


def _best_iteration(attributes: dict[str, str]) -> int | None:
    value = attributes.get("best_iteration")
    return None if value is None else int(value)


def _features(learner: dict[str, Any], count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = tuple(learner.get("feature_names") or (f"f{i}" for i in range(count)))
    types = tuple(learner.get("feature_types") or ("float",) * count)
    if len(names) != count or len(types) != count:
        raise ConversionError(
            f"model lists {len(names)} feature names and {len(types)} types for {count} features"
        )
    if len(set(names)) != count:
        raise ConversionError("model has duplicate feature names")
    categorical = [n for n, t in zip(names, types, strict=True) if t == "c"]
    if categorical:
        raise ConversionError(
            f"categorical features are not supported ({', '.join(categorical[:5])}); "
            "one-hot or ordinal-encode them before training"
        )
    unknown = sorted({t for t in types} - _FEATURE_TYPES)
    if unknown:
        raise ConversionError(f"unsupported feature types: {', '.join(unknown)}")
    return names, types


def _tree(doc: dict[str, Any], target: int, num_features: int, weight: float) -> Tree:
    tree_id = doc["id"]
    if int(doc["tree_param"].get("size_leaf_vector", "1")) > 1:
        raise ConversionError(
            f"tree {tree_id} has vector leaves (multi_strategy='multi_output_tree'); "
            "retrain with multi_strategy='one_output_per_tree'"
        )
    if any(int(s) != 0 for s in doc["split_type"]) or doc["categories"]:
        raise ConversionError(
            f"tree {tree_id} has categorical splits; one-hot or ordinal-encode the "
            "categorical features before training"
        )
    left = np.asarray(doc["left_children"], dtype=np.int32)
    right = np.asarray(doc["right_children"], dtype=np.int32)
    feature = np.asarray(doc["split_indices"], dtype=np.int32)
    conditions = np.asarray(doc["split_conditions"], dtype=np.float32)
    is_leaf = left == LEAF
    _check_structure(tree_id, left, right, feature, conditions, num_features)
    return Tree(
        left=left,
        right=right,
        feature=np.where(is_leaf, 0, feature).astype(np.int32),
        threshold=np.where(is_leaf, np.float32(0), conditions).astype(np.float32),
        default_left=np.asarray(doc["default_left"], dtype=np.int8).astype(np.bool_),
        value=np.where(is_leaf, conditions * np.float32(weight), np.float32(0)).astype(np.float32),
        target=target,
    )


def _check_structure(
    tree_id: int,
    left: npt.NDArray[np.int32],
    right: npt.NDArray[np.int32],
    feature: npt.NDArray[np.int32],
    conditions: npt.NDArray[np.float32],
    num_features: int,
) -> None:
    """Reject what the emitters would mis-read: the nodes reachable from the root must form
    a tree with in-range children and features, and finite thresholds and leaves."""
    n = left.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    stack = [0] if n else []
    ok = n > 0
    while stack and ok:
        node = stack.pop()
        ok = not seen[node]
        seen[node] = True
        if left[node] != LEAF:
            children = (int(left[node]), int(right[node]))
            ok = ok and all(0 < c < n for c in children) and 0 <= feature[node] < num_features
            stack.extend(children)
        ok = ok and bool(np.isfinite(conditions[node]))
    if not ok:
        raise ConversionError(f"tree {tree_id} is malformed (bad child, feature or value)")


def _float_list(text: str | float | list[Any]) -> list[float]:
    """XGBoost 3 writes vectors as '[5.1E-1,2E-1]'; older versions write a bare number."""
    if isinstance(text, list):
        return [float(v) for v in text]
    if isinstance(text, float | int):
        return [float(text)]
    return [float(v) for v in re.split(r"[,\s]+", text.strip().strip("[]")) if v]


def _base_margin(text: str, objective: Objective, num_class: int) -> npt.NDArray[np.float32]:
    values = _float_list(text)
    if len(values) == 1:
        values = values * num_class
    if len(values) != num_class:
        raise ConversionError(f"base_score has {len(values)} values for {num_class} outputs")
    return np.asarray([_to_margin(v, objective.base) for v in values], dtype=np.float32)


def _to_margin(value: float, space: BaseSpace) -> float:
    if space is BaseSpace.PROBABILITY:
        if not 0.0 < value < 1.0:
            raise ConversionError(f"base_score {value} is not a probability")
        return math.log(value / (1.0 - value))
    if space is BaseSpace.LOG:
        if value <= 0.0:
            raise ConversionError(f"base_score {value} must be positive for a log link")
        return math.log(value)
    return value
