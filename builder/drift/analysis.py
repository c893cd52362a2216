"""A drift report read as a window's histograms, features ranked most shifted first, and the
device's own verdict on them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgebundle.builder.drift.formats import bin_labels, class_labels
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor.report import DriftReport, FeatureWindow, Window, parse_report
from edgebundle.runtime.monitor.statistics import psi, psi_level
from edgebundle.runtime.monitor.statistics import verdict as monitor_verdict
from edgebundle.runtime.stats import FeatureBaseline

WINDOWS = ("recent", "since_start")
# A feature whose every live value is missing has no PSI (no values to bin), yet it is the
# most drastic change there is, so it gets its own level and ranks above every PSI.
ALL_MISSING = "all missing"
LEVELS = ("shifted", "watch", "stable", ALL_MISSING, "no rows")
NO_BASELINE = "no baseline: the bundle was built without --data, so only row counts are known"


@dataclass(frozen=True, kw_only=True, slots=True)
class Histogram:
    """Baseline and live shares per bin; shares are of the rows with a value."""

    labels: tuple[str, ...]
    baseline: tuple[float, ...]
    live: tuple[float, ...]
    psi: float | None
    level: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureDrift:
    name: str
    histogram: Histogram
    missing_rate: float | None  # None: no rows
    baseline_missing_rate: float
    missing_rate_shift: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Drift:
    report: DriftReport
    window: str  # one of WINDOWS
    rows: int  # in that window
    features: tuple[FeatureDrift, ...]  # most shifted first
    prediction: Histogram | None  # None: no baseline

    @property
    def prediction_kind(self) -> str:
        baseline = self.report.baseline
        return "" if baseline is None else baseline.prediction.kind


def read_report(data: bytes, source: str) -> DriftReport:
    """``parse_report``, with errors that name the file they are about."""
    try:
        return parse_report(data)
    except ManifestError as exc:
        raise ManifestError(f"{source}: {exc}") from None


def choose_window(report: DriftReport, requested: str | None) -> str:
    """The recent window shows the present; an empty one would show nothing at all."""
    if requested is not None:
        return requested
    return "recent" if report.recent.rows else "since_start"


def analyse(report: DriftReport, window: str | None = None) -> Drift:
    name = choose_window(report, window)
    counts = _window(report, name)
    baseline = report.baseline
    if baseline is None:
        return Drift(report=report, window=name, rows=counts.rows, features=(), prediction=None)
    features = (
        _feature(live, base, counts.rows)
        for live, base in zip(counts.features, baseline.features, strict=True)
    )
    prediction_labels = (
        class_labels(len(baseline.prediction.shares))
        if baseline.prediction.kind == "class"
        else bin_labels(baseline.prediction.edges)
    )
    return Drift(
        report=report,
        window=name,
        rows=counts.rows,
        features=tuple(sorted(features, key=_severity, reverse=True)),
        prediction=_histogram(
            prediction_labels, baseline.prediction.shares, counts.prediction, counts.rows
        ),
    )


def verdict(drift: Drift) -> str:
    """The device's own one-line verdict (``runtime.monitor.statistics.verdict``) on the
    chosen window."""
    if drift.prediction is None:
        return NO_BASELINE
    if drift.rows == 0:
        return f"no rows yet in the {window_name(drift.window)}"
    return monitor_verdict(_window(drift.report, drift.window), drift.report.baseline)


def window_name(window: str) -> str:
    return "recent window" if window == "recent" else "window since start"


def _window(report: DriftReport, name: str) -> Window:
    windows = {"recent": report.recent, "since_start": report.since_start}
    if name not in windows:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    return windows[name]


def _feature(live: FeatureWindow, base: FeatureBaseline, rows: int) -> FeatureDrift:
    return FeatureDrift(
        name=live.name,
        histogram=_histogram(bin_labels(base.edges), base.shares, live.counts, rows),
        missing_rate=live.missing_rate(),
        baseline_missing_rate=base.missing_rate,
        missing_rate_shift=live.missing_rate_shift(base),
    )


def _histogram(
    labels: tuple[str, ...], shares: Sequence[float], counts: Sequence[int], rows: int
) -> Histogram:
    total = sum(counts)
    value = psi(shares, counts)
    return Histogram(
        labels=labels,
        baseline=tuple(shares),
        live=tuple(c / total if total else 0.0 for c in counts),
        psi=value,
        level=ALL_MISSING if value is None and rows else psi_level(value),
    )


def _severity(feature: FeatureDrift) -> float:
    value = feature.histogram.psi
    return math.inf if value is None else value
