"""A drift report read as a window's histograms, features ranked most shifted first, and the
device's own verdict on them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgebundle.builder.drift import WINDOWS
from edgebundle.builder.drift.formats import bin_labels, class_labels
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor.report import (
    DriftReport,
    FeatureWindow,
    PredictionWindow,
    Window,
    parse_report,
    window_summary,
)
from edgebundle.runtime.monitor.statistics import SHIFT, TOO_FEW_ROWS
from edgebundle.runtime.stats import FeatureBaseline

NO_BASELINE = "no baseline: the bundle was built without --data, so only row counts are known"


@dataclass(frozen=True, kw_only=True, slots=True)
class Histogram:
    """Baseline and live shares per bin (shares of the rows with a value), and the device's
    reading of them."""

    labels: tuple[str, ...]
    baseline: tuple[float, ...]
    live: tuple[float, ...]
    psi: float | None
    p_value: float | None
    verdict: str  # ok, shift, too_few_rows


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureDrift:
    name: str
    histogram: Histogram
    missing_rate: float | None  # None: no rows
    baseline_missing_rate: float
    missing_rate_shift: float | None

    @property
    def verdict(self) -> str:
        return self.histogram.verdict


@dataclass(frozen=True, kw_only=True, slots=True)
class Drift:
    report: DriftReport
    window: str  # one of WINDOWS
    rows: int  # in that window
    features: tuple[FeatureDrift, ...]  # shifted first, then by PSI
    prediction: Histogram | None  # None: no baseline

    @property
    def prediction_kind(self) -> str:
        baseline = self.report.baseline
        return "" if baseline is None else baseline.prediction.kind

    @property
    def shifted(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.verdict == SHIFT)

    @property
    def verdict(self) -> str:
        """The window's word: ``shift`` if a feature shifted, ``too_few_rows`` while the
        window is below the minimum (or has no baseline to judge against), else ``ok``."""
        if self.shifted:
            return SHIFT
        if self.prediction is None or self.rows < self.report.thresholds.min_rows:
            return TOO_FEW_ROWS
        return "ok"


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
    if baseline is None or counts.prediction is None:
        return Drift(report=report, window=name, rows=counts.rows, features=(), prediction=None)
    features = (
        _feature(live, base) for live, base in zip(counts.features, baseline.features, strict=True)
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
        prediction=_prediction(prediction_labels, baseline.prediction.shares, counts.prediction),
    )


def summary(drift: Drift) -> str:
    """The device's own one-line summary (``runtime.monitor.report.window_summary``) of the
    chosen window."""
    if drift.prediction is None:
        return NO_BASELINE
    if drift.rows == 0:
        return f"no rows yet in the {window_name(drift.window)}"
    return window_summary(drift.report, _window(drift.report, drift.window))


def window_name(window: str) -> str:
    return "recent window" if window == "recent" else "window since start"


def _window(report: DriftReport, name: str) -> Window:
    windows = {"recent": report.recent, "since_start": report.since_start}
    if name not in windows:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    return windows[name]


def _feature(live: FeatureWindow, base: FeatureBaseline) -> FeatureDrift:
    return FeatureDrift(
        name=live.name,
        histogram=_histogram(
            bin_labels(base.edges), base.shares, live.counts, live.psi, live.p_value, live.verdict
        ),
        missing_rate=live.missing_rate,
        baseline_missing_rate=base.missing_rate,
        missing_rate_shift=live.missing_rate_shift,
    )


def _prediction(
    labels: tuple[str, ...], shares: Sequence[float], live: PredictionWindow
) -> Histogram:
    return _histogram(labels, shares, live.counts, live.psi, live.p_value, live.verdict)


def _histogram(
    labels: tuple[str, ...],
    shares: Sequence[float],
    counts: Sequence[int],
    psi: float | None,
    p_value: float | None,
    verdict: str,
) -> Histogram:
    total = sum(counts)
    return Histogram(
        labels=labels,
        baseline=tuple(shares),
        live=tuple(c / total if total else 0.0 for c in counts),
        psi=psi,
        p_value=p_value,
        verdict=verdict,
    )


def _severity(feature: FeatureDrift) -> tuple[bool, float]:
    """Shifted first; a feature whose every value went missing has no PSI, yet it is the
    most drastic change there is, so it ranks above every PSI."""
    value = feature.histogram.psi
    return (feature.verdict == SHIFT, math.inf if value is None else value)
