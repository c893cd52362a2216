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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import (
    FRACTION,
    STRING,
    Document,
    Rule,
    array,
    choice,
    constant,
    count,
    nested,
    read_number,
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


def _read_edges(value: object, path: str) -> tuple[float, ...]:
    edges = _NUMBERS.read(value, path)
    if list(edges) != sorted(set(edges)):
        raise ManifestError("edges must be strictly increasing", path)
    return edges


_NUMBERS = array(Rule(read_number))
_EDGES: Rule[tuple[float, ...]] = Rule(_read_edges, list)
_SHARES = array(FRACTION)


def _check_bins(edges: tuple[float, ...], shares: tuple[float, ...]) -> None:
    if len(shares) != len(edges) + 1:
        raise ManifestError("needs one share in [0, 1] per bin (edges + 1)", "shares")


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureBaseline(Document):
    name: Annotated[str, STRING]
    edges: Annotated[tuple[float, ...], _EDGES]  # ≤ MAX_GROUPS - 1 of the model's thresholds
    shares: Annotated[tuple[float, ...], _SHARES]  # share of non-missing rows per bin
    missing_rate: Annotated[float, FRACTION]

    def check(self) -> None:
        _check_bins(self.edges, self.shares)


@dataclass(frozen=True, kw_only=True, slots=True)
class PredictionBaseline(Document):
    # probability (deciles), class (shares per label), value (quantile bins)
    kind: Annotated[str, choice(PREDICTION_KINDS)]
    edges: Annotated[tuple[float, ...], _EDGES]
    shares: Annotated[tuple[float, ...], _SHARES]

    def check(self) -> None:
        _check_bins(self.edges, self.shares)


@dataclass(frozen=True, kw_only=True, slots=True)
class Baseline(Document):
    format: Annotated[str, constant(FORMAT, "stats")] = FORMAT
    rows: Annotated[int, count(minimum=1)]
    features: Annotated[tuple[FeatureBaseline, ...], array(nested(FeatureBaseline))]
    prediction: Annotated[PredictionBaseline, nested(PredictionBaseline)]

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
