"""The ``edgebundle.drift/1`` report: a model's live counts in two windows, beside its baseline.

``DriftReport`` is the JSON a device answers on ``GET /v2/models/{name}/stats`` and writes for
``bundle-runtime status``; ``bundle drift`` reads it on the workstation. The population
stability index, missing rates and their shift are derived from the counts and the baseline,
written for readers, and checked against the counts when a report is read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgebundle.runtime._json import (
    dumps_canonical,
    get_count,
    get_float,
    get_list,
    get_obj,
    get_optional,
    get_str,
    get_timestamp,
    join,
    json_type,
    loads_strict,
    reject_unknown,
)
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor.statistics import psi
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import Baseline, FeatureBaseline

FORMAT = "edgebundle.drift/1"
# The recent window is counted in this many blocks, so it is never fewer rows.
BLOCKS = 10
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TOLERANCE = 1e-9  # derived values written by another machine's float arithmetic


def timestamp(seconds: float) -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime(seconds))


def _counts(d: Mapping[str, Any], key: str, context: str, size: int) -> tuple[int, ...]:
    values = get_list(d, key, context)
    if len(values) != size:
        raise ManifestError(
            f"needs {size} counts (one per bin), got {len(values)}", join(context, key)
        )
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ManifestError(
                f"expected a count, got {json_type(v)}", f"{join(context, key)}[{i}]"
            )
    return tuple(values)


def _check_derived(d: Mapping[str, Any], key: str, context: str, value: float | None) -> None:
    """A derived number must be what the counts give: a report that disagrees with itself is
    refused rather than shown."""
    written = get_optional(d, key, context, get_float)
    if (written is None) != (value is None) or (
        written is not None and value is not None and abs(written - value) > _TOLERANCE
    ):
        raise ManifestError(f"does not match the counts (expected {value})", join(context, key))


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureWindow:
    """One feature's live counts: ``counts[k]`` rows in the baseline's bin k, ``missing`` NaN."""

    name: str
    counts: tuple[int, ...]
    missing: int

    @property
    def rows(self) -> int:
        return sum(self.counts) + self.missing

    def psi(self, baseline: FeatureBaseline) -> float | None:
        return psi(baseline.shares, self.counts)

    def missing_rate(self) -> float | None:
        return self.missing / self.rows if self.rows else None

    def missing_rate_shift(self, baseline: FeatureBaseline) -> float | None:
        rate = self.missing_rate()
        return None if rate is None else rate - baseline.missing_rate

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], context: str, baseline: FeatureBaseline, rows: int
    ) -> FeatureWindow:
        reject_unknown(
            d, ("name", "counts", "missing", "psi", "missing_rate", "missing_rate_shift"), context
        )
        name = get_str(d, "name", context)
        if name != baseline.name:
            raise ManifestError(f"expected feature {baseline.name!r}", join(context, "name"))
        window = cls(
            name=name,
            counts=_counts(d, "counts", context, len(baseline.edges) + 1),
            missing=get_count(d, "missing", context),
        )
        if window.rows != rows:
            raise ManifestError(
                f"counts add up to {window.rows}, the window has {rows} rows", context
            )
        _check_derived(d, "psi", context, window.psi(baseline))
        _check_derived(d, "missing_rate", context, window.missing_rate())
        _check_derived(d, "missing_rate_shift", context, window.missing_rate_shift(baseline))
        return window

    def to_dict(self, baseline: FeatureBaseline) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": list(self.counts),
            "missing": self.missing,
            "psi": self.psi(baseline),
            "missing_rate": self.missing_rate(),
            "missing_rate_shift": self.missing_rate_shift(baseline),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """Counts over a span of rows; without a baseline there is nothing to count but rows."""

    rows: int
    features: tuple[FeatureWindow, ...] = ()
    prediction: tuple[int, ...] = ()

    def prediction_psi(self, baseline: Baseline) -> float | None:
        return psi(baseline.prediction.shares, self.prediction)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str, baseline: Baseline | None) -> Window:
        reject_unknown(d, ("rows", "features", "prediction"), context)
        rows = get_count(d, "rows", context)
        items = get_list(d, "features", context)
        if baseline is None:
            if items or get_optional(d, "prediction", context, get_obj) is not None:
                raise ManifestError("counts without a baseline", context)
            return cls(rows=rows)
        if len(items) != len(baseline.features):
            raise ManifestError(
                f"needs {len(baseline.features)} features (the baseline's)",
                join(context, "features"),
            )
        features = []
        for i, (item, feature) in enumerate(zip(items, baseline.features, strict=True)):
            item_context = f"{join(context, 'features')}[{i}]"
            if not isinstance(item, dict):
                raise ManifestError(f"expected an object, got {json_type(item)}", item_context)
            features.append(FeatureWindow.from_dict(item, item_context, feature, rows))
        prediction_context = join(context, "prediction")
        prediction = get_obj(d, "prediction", context)
        reject_unknown(prediction, ("counts", "psi"), prediction_context)
        counts = _counts(
            prediction, "counts", prediction_context, len(baseline.prediction.edges) + 1
        )
        if sum(counts) != rows:
            raise ManifestError(
                f"counts add up to {sum(counts)}, the window has {rows} rows", prediction_context
            )
        window = cls(rows=rows, features=tuple(features), prediction=counts)
        _check_derived(prediction, "psi", prediction_context, window.prediction_psi(baseline))
        return window

    def to_dict(self, baseline: Baseline | None) -> dict[str, Any]:
        if baseline is None:
            return {"rows": self.rows, "features": [], "prediction": None}
        return {
            "rows": self.rows,
            "features": [
                f.to_dict(b) for f, b in zip(self.features, baseline.features, strict=True)
            ],
            "prediction": {
                "counts": list(self.prediction),
                "psi": self.prediction_psi(baseline),
            },
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftReport:
    model: str
    version: str
    started: str  # when counting began: the model's load
    generated: str
    window_rows: int  # the recent window's size
    baseline: Baseline | None  # None: the bundle was built without --data
    since_start: Window
    recent: Window

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> DriftReport:
        reject_unknown(
            d,
            (
                "format", "model", "version", "started", "generated", "window_rows",
                "baseline", "since_start", "recent",
            ),
            context,
        )  # fmt: skip
        if get_str(d, "format", context) != FORMAT:
            raise ManifestError(
                f"unsupported drift report format (expected {FORMAT!r})", join(context, "format")
            )
        version = get_str(d, "version", context)
        Version.parse(version)
        raw_baseline = get_optional(d, "baseline", context, get_obj)
        baseline = (
            None
            if raw_baseline is None
            else Baseline.from_dict(raw_baseline, join(context, "baseline"))
        )
        return cls(
            model=get_str(d, "model", context),
            version=version,
            started=get_timestamp(d, "started", context),
            generated=get_timestamp(d, "generated", context),
            window_rows=get_count(d, "window_rows", context, minimum=BLOCKS),
            baseline=baseline,
            since_start=Window.from_dict(
                get_obj(d, "since_start", context), join(context, "since_start"), baseline
            ),
            recent=Window.from_dict(
                get_obj(d, "recent", context), join(context, "recent"), baseline
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "started": self.started,
            "generated": self.generated,
            "window_rows": self.window_rows,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "since_start": self.since_start.to_dict(self.baseline),
            "recent": self.recent.to_dict(self.baseline),
        }

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict(), compact=True)


def parse_report(data: bytes, what: str = "drift report") -> DriftReport:
    return DriftReport.from_dict(loads_strict(data, what))
