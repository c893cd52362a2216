"""Load an XGBoost model file into the IR, refusing clearly what cannot be converted exactly.

This is the only module that reads XGBoost's model JSON. It never unpickles.
"""

from __future__ import annotations

import hashlib
import itertools
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

from edgebundle.builder.convert.ir import Ensemble, Linear, Tree
from edgebundle.builder.convert.objectives import OBJECTIVES, BaseSpace, Objective
from edgebundle.builder.convert.trees import read_tree
from edgebundle.builder.errors import ConversionError

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav"}
_FEATURE_TYPES = {"float", "int", "i", "q", "c"}


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceModel:
    """A loaded model: its IR plus what the manifest and the parity check need."""

    booster: xgb.Booster
    ensemble: Ensemble  # no trees for a gblinear model
    linear: Linear | None  # a gblinear model's weights
    objective_name: str
    objective: Objective
    num_class: int  # 1 unless multiclass
    # what each of several regression outputs is (quantiles, targets); None for one output
    output_columns: tuple[str, ...] | None
    # categorical feature -> its training categories' names by code (pandas categoricals)
    category_names: dict[int, tuple[str, ...]]
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    best_iteration: int | None
    iterations: int  # boosting rounds predict() uses (the bundle's trees); 0 = all
    trees_in_file: int  # every tree the file holds, best_iteration or not
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
    num_features = int(params["num_feature"])
    num_class = max(1, int(params["num_class"]))
    num_targets = max(1, int(params.get("num_target", "1")))
    num_outputs = max(num_class, num_targets)
    base = _base_margin(params["base_score"], objective, num_outputs)
    best_iteration = _best_iteration(learner.get("attributes", {}))
    gbm = learner["gradient_booster"]
    linear = None
    if gbm["name"] == "gblinear":
        linear = _linear(gbm["model"], num_features, num_outputs, base)
        # predict() of a gblinear model uses every round: its weights are one sum
        ensemble, iterations = Ensemble((), num_features, num_outputs, linear.bias), 0
        trees_in_file = 0
    else:
        limit = best_iteration if use_best_iteration else None
        trees, iterations, trees_in_file = _trees(gbm, num_features, limit)
        ensemble = Ensemble(trees, num_features, num_outputs, base, _categorical(learner))
    names, types = _features(learner, num_features)
    return SourceModel(
        booster=booster,
        ensemble=ensemble,
        linear=linear,
        objective_name=objective_name,
        objective=objective,
        num_class=num_class,
        output_columns=_columns(learner["objective"], num_targets),
        category_names=_category_names(gbm.get("model", {}).get("cats"), num_features),
        feature_names=names,
        feature_types=types,
        best_iteration=best_iteration,
        iterations=iterations,
        trees_in_file=trees_in_file,
        sha256=sha256,
        framework_version=xgb.__version__,
    )


def _trees(
    gbm: dict[str, Any], num_features: int, best_iteration: int | None
) -> tuple[tuple[Tree, ...], int, int]:
    """The IR trees of the rounds predict() uses (up to ``best_iteration`` when given), the
    number of those rounds, and the number of IR trees the whole file holds."""
    model, weights = _tree_model(gbm)
    indptr = [int(i) for i in model["iteration_indptr"]]
    iterations = len(indptr) - 1
    if best_iteration is not None:
        iterations = min(iterations, best_iteration + 1)
    tree_docs = model["trees"][: indptr[iterations]]
    targets = model["tree_info"][: indptr[iterations]]
    trees = tuple(
        tree
        for t, c, w in zip(tree_docs, targets, weights[: len(tree_docs)], strict=True)
        for tree in read_tree(t, int(c), num_features, w)
    )
    # every tree of a file reads into as many IR trees (one, or one per vector-leaf output)
    per_tree = len(trees) // indptr[iterations] if indptr[iterations] else 1
    return trees, iterations, len(trees) + (indptr[-1] - indptr[iterations]) * per_tree


def _linear(
    model: dict[str, Any], num_features: int, num_outputs: int, base: npt.NDArray[np.float32]
) -> Linear:
    """gblinear's ``weights``: feature f's weight for output k at ``f * K + k``, then the K
    biases. Measured against predict() (xgboost 3.2): the margin adds the first base margin
    to every output, even when base_score lists one per class."""
    weights = np.asarray(model["weights"], dtype=np.float32)
    if weights.shape != ((num_features + 1) * num_outputs,) or not np.all(np.isfinite(weights)):
        raise ConversionError(
            f"gblinear model has {weights.size} weights for {num_features} features and "
            f"{num_outputs} outputs, or non-finite ones"
        )
    matrix = weights[: num_features * num_outputs].reshape(num_features, num_outputs)
    bias = (weights[num_features * num_outputs :] + base[0]).astype(np.float32)
    return Linear(weights=matrix, bias=bias)


def _objective(name: str, config: dict[str, Any]) -> Objective:
    objective = OBJECTIVES.get(name)
    if objective is None:
        supported = ", ".join(sorted(OBJECTIVES))
        raise ConversionError(f"objective {name!r} is not supported; supported: {supported}")
    return objective


def _columns(config: dict[str, Any], num_targets: int) -> tuple[str, ...] | None:
    """Names of the outputs of a multi-target or multi-quantile model, in predict()'s column
    order: ``quantile_0.1`` per alpha of reg:quantileerror, else ``target_0``, ``target_1``..."""
    if num_targets == 1:
        return None
    alphas = config.get("quantile_loss_param", {}).get("quantile_alpha")
    if alphas is not None:
        values = _float_list(alphas)
        if len(values) != num_targets:
            raise ConversionError(f"model lists {len(values)} quantiles for {num_targets} outputs")
        return tuple(f"quantile_{a}" for a in values)
    return tuple(f"target_{k}" for k in range(num_targets))


def _category_names(cats: dict[str, Any] | None, count: int) -> dict[int, tuple[str, ...]]:
    """The category names XGBoost keeps of a model trained on pandas categoricals: per
    feature either strings (``offsets`` into byte ``values``) or numbers, in code order
    (code = position). Models trained on numeric codes keep none."""
    encodings = (cats or {}).get("enc") or []
    if encodings and len(encodings) != count:
        raise ConversionError(f"model lists categories for {len(encodings)} of {count} features")
    names: dict[int, tuple[str, ...]] = {}
    for feature, enc in enumerate(encodings):
        values = enc.get("values") or []
        if not values:
            continue
        if "offsets" in enc:
            raw = bytes(v % 256 for v in values)
            if not raw.isascii():
                # measured with xgboost 3.2: offsets count characters while the values hold
                # that many bytes, so a non-ASCII name is stored cut short; such a feature
                # keeps its codes only
                continue
            ends = [int(o) for o in enc["offsets"]]
            found = tuple(raw[a:b].decode("ascii") for a, b in itertools.pairwise(ends))
        else:
            found = tuple(str(v) for v in values)
        names[feature] = found
    return names


def _categorical(learner: dict[str, Any]) -> frozenset[int]:
    return frozenset(i for i, t in enumerate(learner.get("feature_types") or ()) if t == "c")


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
    unknown = sorted({t for t in types} - _FEATURE_TYPES)
    if unknown:
        raise ConversionError(f"unsupported feature types: {', '.join(unknown)}")
    return names, types


def _float_list(text: str | float | list[Any]) -> list[float]:
    """XGBoost 3 writes vectors as '[5.1E-1,2E-1]'; older versions write a bare number."""
    if isinstance(text, list):
        return [float(v) for v in text]
    if isinstance(text, float | int):
        return [float(text)]
    return [float(v) for v in re.split(r"[,\s]+", text.strip().strip("[]")) if v]


def _base_margin(text: str, objective: Objective, outputs: int) -> npt.NDArray[np.float32]:
    values = _float_list(text)
    if len(values) == 1:
        values = values * outputs
    if len(values) != outputs:
        raise ConversionError(f"base_score has {len(values)} values for {outputs} outputs")
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
