"""``stats.json``: the training-time baseline a device compares its live inputs against.

Per feature, the share of ``--data`` rows in each bin of the model's own split thresholds
(merged to at most ``MAX_GROUPS`` quantile groups so shares are stable), and the missing rate;
and the histogram of the model's predictions. Binning is ``searchsorted(edges, x, "right")``:
bin k holds ``edges[k-1] <= x < edges[k]``, the same side XGBoost's ``x < threshold`` splits on.
Edges are float32 values, like the thresholds and predictions they come from, written in their
shortest text: read them as float32 (``bin_edges``). Shares have ``SHARE_DIGITS`` decimals.
The file is listed in the signed manifest like every payload file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import (
    dumps_canonical,
    get_count,
    get_float,
    get_list,
    get_obj,
    get_str,
    join,
    json_type,
    loads_strict,
    reject_unknown,
)
from edgebundle.runtime.errors import ManifestError

if TYPE_CHECKING:
    from edgebundle.runtime.bundle import VerifiedBundle

FORMAT = "edgebundle.stats/1"
STATS_FILE = "stats.json"
MAX_GROUPS = 20
SHARE_DIGITS = 6  # decimals a share is written with
PREDICTION_KINDS = ("probability", "class", "value")


def bin_index(edges: npt.ArrayLike, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin k holds ``edges[k-1] <= v < edges[k]``: the side XGBoost's ``x < threshold`` takes."""
    return np.searchsorted(np.asarray(edges), np.asarray(values), "right")


def bin_edges(edges: Sequence[float]) -> npt.NDArray[np.float32]:
    """A baseline's edges as the float32 values they were written from."""
    return np.asarray(edges, dtype=np.float64).astype(np.float32)


def prediction_values(kind: str, output: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """What a prediction histogram bins, from the bundle's first output: the label for a class
    histogram (argmax of ``[N, C]`` probabilities), else the output itself; of a multi-target
    or multi-quantile ``[N, K]`` output its first column (one histogram per model)."""
    values: npt.NDArray[np.float64] = np.asarray(output, dtype=np.float64)
    if kind == "class" and values.ndim == 2:
        labels: npt.NDArray[np.float64] = np.argmax(values, axis=1).astype(np.float64)
        return labels
    if values.ndim == 2:
        first: npt.NDArray[np.float64] = values[:, 0]
        return first
    return values


def _floats(d: Mapping[str, Any], key: str, context: str) -> tuple[float, ...]:
    values = get_list(d, key, context)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ManifestError(
                f"expected a finite number, got {json_type(v)}", f"{join(context, key)}[{i}]"
            )
    return tuple(float(v) for v in values)


def _histogram(d: Mapping[str, Any], context: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    edges = _floats(d, "edges", context)
    shares = _floats(d, "shares", context)
    if list(edges) != sorted(set(edges)):
        raise ManifestError("edges must be strictly increasing", join(context, "edges"))
    if len(shares) != len(edges) + 1 or any(not 0 <= s <= 1 for s in shares):
        raise ManifestError(
            "needs one share in [0, 1] per bin (edges + 1)", join(context, "shares")
        )
    return edges, shares


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureBaseline:
    name: str
    edges: tuple[float, ...]  # ≤ MAX_GROUPS - 1 of the model's thresholds for this feature
    shares: tuple[float, ...]  # share of non-missing rows per bin
    missing_rate: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> FeatureBaseline:
        reject_unknown(d, ("name", "edges", "shares", "missing_rate"), context)
        edges, shares = _histogram(d, context)
        rate = get_float(d, "missing_rate", context)
        if not 0 <= rate <= 1:
            raise ManifestError("must be in [0, 1]", join(context, "missing_rate"))
        return cls(name=get_str(d, "name", context), edges=edges, shares=shares, missing_rate=rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "edges": list(self.edges),
            "shares": list(self.shares),
            "missing_rate": self.missing_rate,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class PredictionBaseline:
    kind: str  # probability (deciles), class (shares per label), value (quantile bins)
    edges: tuple[float, ...]
    shares: tuple[float, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> PredictionBaseline:
        reject_unknown(d, ("kind", "edges", "shares"), context)
        kind = get_str(d, "kind", context)
        if kind not in PREDICTION_KINDS:
            raise ManifestError(
                f"must be one of {', '.join(PREDICTION_KINDS)}", join(context, "kind")
            )
        edges, shares = _histogram(d, context)
        return cls(kind=kind, edges=edges, shares=shares)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": list(self.edges), "shares": list(self.shares)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Baseline:
    rows: int
    features: tuple[FeatureBaseline, ...]
    prediction: PredictionBaseline

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Baseline:
        reject_unknown(d, ("format", "rows", "features", "prediction"), context)
        if get_str(d, "format", context) != FORMAT:
            raise ManifestError(
                f"unsupported stats format (expected {FORMAT!r})", join(context, "format")
            )
        features = []
        for i, item in enumerate(get_list(d, "features", context)):
            item_context = f"{join(context, 'features')}[{i}]"
            if not isinstance(item, dict):
                raise ManifestError(f"expected an object, got {json_type(item)}", item_context)
            features.append(FeatureBaseline.from_dict(item, item_context))
        return cls(
            rows=get_count(d, "rows", context, minimum=1),
            features=tuple(features),
            prediction=PredictionBaseline.from_dict(
                get_obj(d, "prediction", context), join(context, "prediction")
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict(),
        }

    def to_bytes(self) -> bytes:
        data = self.to_dict()
        Baseline.from_dict(data)
        return dumps_canonical(data, compact=True)


def parse_stats(data: bytes) -> Baseline:
    return Baseline.from_dict(loads_strict(data, STATS_FILE), "stats")


def baseline_of(bundle: VerifiedBundle) -> Baseline | None:
    """The verified bundle's baseline (None: built without ``--data``), refused unless it
    describes exactly the manifest's features, in order: live rows are counted by position."""
    data = bundle.files.get(STATS_FILE)
    if data is None:
        return None
    baseline = parse_stats(data)
    names = [f.name for f in baseline.features]
    if names != [f.name for f in bundle.manifest.inputs.features]:
        raise ManifestError("stats.json features differ from the manifest's features")
    return baseline
