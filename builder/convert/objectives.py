"""What each supported XGBoost objective means: its task, base-score space and link.

One table, one row per objective, so adding an objective is one line plus its tests. The link
is applied in-graph (see ``builder.convert.link``) so the ONNX model's first output equals
``Booster.predict()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BaseSpace(Enum):
    """How XGBoost stores base_score relative to the margin (checked against xgboost 3.2)."""

    MARGIN = "margin"  # stored as the margin itself
    PROBABILITY = "probability"  # margin = logit(base_score)
    LOG = "log"  # margin = log(base_score)


class Link(Enum):
    """The in-graph transform from margins to the outputs ``predict()`` gives."""

    PROBABILITY = "probability"  # sigmoid → probability, label = probability > 0.5
    SCORE = "score"  # raw margin → score, label = margin > 0
    HINGE = "hinge"  # label = margin > 0
    SOFTPROB = "softprob"  # softmax → probabilities, label = argmax
    SOFTMAX = "softmax"  # label = argmax (probabilities too)
    IDENTITY = "identity"  # prediction = margin
    SIGMOID = "sigmoid"  # prediction = sigmoid(margin)
    EXP = "exp"  # prediction = exp(margin)


@dataclass(frozen=True, kw_only=True, slots=True)
class Objective:
    task: str  # manifest task: binary, multiclass, regression, ranking, survival
    base: BaseSpace
    link: Link


_BINARY = "binary"
_REG = "regression"

OBJECTIVES: dict[str, Objective] = {
    "binary:logistic": Objective(task=_BINARY, base=BaseSpace.PROBABILITY, link=Link.PROBABILITY),
    "binary:logitraw": Objective(task=_BINARY, base=BaseSpace.MARGIN, link=Link.SCORE),
    "binary:hinge": Objective(task=_BINARY, base=BaseSpace.MARGIN, link=Link.HINGE),
    "multi:softprob": Objective(task="multiclass", base=BaseSpace.MARGIN, link=Link.SOFTPROB),
    "multi:softmax": Objective(task="multiclass", base=BaseSpace.MARGIN, link=Link.SOFTMAX),
    "reg:squarederror": Objective(task=_REG, base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "reg:squaredlogerror": Objective(task=_REG, base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "reg:pseudohubererror": Objective(task=_REG, base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "reg:absoluteerror": Objective(task=_REG, base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "reg:quantileerror": Objective(task=_REG, base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "reg:logistic": Objective(task=_REG, base=BaseSpace.PROBABILITY, link=Link.SIGMOID),
    "count:poisson": Objective(task=_REG, base=BaseSpace.LOG, link=Link.EXP),
    "reg:gamma": Objective(task=_REG, base=BaseSpace.LOG, link=Link.EXP),
    "reg:tweedie": Objective(task=_REG, base=BaseSpace.LOG, link=Link.EXP),
    "survival:cox": Objective(task="survival", base=BaseSpace.LOG, link=Link.EXP),
    "rank:pairwise": Objective(task="ranking", base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "rank:ndcg": Objective(task="ranking", base=BaseSpace.MARGIN, link=Link.IDENTITY),
    "rank:map": Objective(task="ranking", base=BaseSpace.MARGIN, link=Link.IDENTITY),
}
