"""The HTTP server's Prometheus metrics, written in the text exposition format 0.0.4.

No client library: a device needs a handful of counters, one histogram and a few gauges, and
the format is a page of rules. Label values come only from the server's own vocabulary (endpoint
names, status codes, names of models it serves), never from request text, so a client cannot
grow the number of series.

Updates take one lock for a few dictionary operations, after the response has been written, so
scoring never waits for it.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgebundle.runtime.monitor.report import DriftReport, Window
from edgebundle.runtime.monitor.statistics import SHIFT, TOO_FEW_ROWS
from edgebundle.runtime.stats import Baseline

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; a single row scores in ~50 µs, a full 10k-row request in well under a second.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


_Sample = tuple[str, Mapping[str, str], float]  # name suffix, labels, value


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    precision: str
    sha256: str


@dataclass(slots=True)
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.total += seconds
        self.count += 1


@dataclass(frozen=True, slots=True)
class RequestTotals:
    """One model's requests since the server started: how many, how many answered 4xx/5xx,
    and the latency histogram's counts per bucket of ``LATENCY_BUCKETS`` (plus one for the
    slower ones)."""

    requests: int
    errors: int
    buckets: tuple[int, ...]


@dataclass(slots=True)
class _Reload:
    success: bool
    timestamp: float


class Metrics:
    """Counters and gauges of one server process; every method is thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._rows: dict[str, int] = {}
        self._info: dict[str, ModelInfo] = {}
        self._loads: dict[tuple[str, str], int] = {}
        self._reloads: dict[str, _Reload] = {}
        self._dropped: dict[str, int] = {}

    def observe_request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        """One answered request; ``model`` is "" when the request named no served model."""
        with self._lock:
            key = (model, endpoint, code)
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.get((model, endpoint))
            if histogram is None:  # not setdefault: that would build a histogram per request
                histogram = self._latency[model, endpoint] = _Histogram()
            histogram.observe(seconds)

    def connection_dropped(self, reason: str) -> None:
        """A connection closed without a request answered: over a limit, closed to make room
        for a new one, or a failed TLS start (``admission.py``, ``loop.py``)."""
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def totals(self) -> dict[str, RequestTotals]:
        """Per served model (requests that named none are left out), for fleet telemetry."""
        with self._lock:
            requests: dict[str, list[int]] = {}
            for (model, _, code), n in self._requests.items():
                counts = requests.setdefault(model, [0, 0])
                counts[0] += n
                counts[1] += n if code >= 400 else 0
            buckets: dict[str, list[int]] = {}
            for (model, _), histogram in self._latency.items():
                merged = buckets.setdefault(model, [0] * (len(LATENCY_BUCKETS) + 1))
                for k, n in enumerate(histogram.buckets):
                    merged[k] += n
                merged[-1] += histogram.count - sum(histogram.buckets)
        return {
            model: RequestTotals(requests=n, errors=errors, buckets=tuple(buckets[model]))
            for model, (n, errors) in requests.items()
            if model
        }

    def add_rows(self, model: str, rows: int) -> None:
        with self._lock:
            self._rows[model] = self._rows.get(model, 0) + rows

    def model_loaded(self, model: str, info: ModelInfo) -> None:
        with self._lock:
            self._info[model] = info
            self._count_load(model, "success")

    def model_load_failed(self, model: str) -> None:
        """A version that would not load; whatever served before goes on serving."""
        with self._lock:
            self._count_load(model, "failure")

    def model_removed(self, model: str) -> None:
        with self._lock:
            self._info.pop(model, None)

    def _count_load(self, model: str, result: str) -> None:
        key = (model, result)
        self._loads[key] = self._loads.get(key, 0) + 1
        self._reloads[model] = _Reload(success=result == "success", timestamp=self._clock())

    def render(self, in_flight: int, drift: Sequence[DriftReport] = ()) -> bytes:
        """The exposition text; ``in_flight`` is the number of requests being answered now,
        ``drift`` the served models' monitor reports."""
        with self._lock:
            now = self._clock()
            families = [
                *self._request_families(),
                _family(
                    "edgebundle_requests_in_flight",
                    "gauge",
                    "Requests being answered now.",
                    [("", {}, in_flight)],
                ),
                _family(
                    "edgebundle_rows_scored_total",
                    "counter",
                    "Rows scored, by model.",
                    [("", {"model": m}, n) for m, n in sorted(self._rows.items())],
                ),
                _family(
                    "edgebundle_connections_dropped_total",
                    "counter",
                    "Connections closed without an answered request, by reason.",
                    [("", {"reason": r}, n) for r, n in sorted(self._dropped.items())],
                ),
                *self._model_families(),
                *_drift_families(drift),
                _family(
                    "edgebundle_uptime_seconds",
                    "gauge",
                    "Seconds since the server started.",
                    [("", {}, now - self._started)],
                ),
                _family(
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since the Unix epoch, in seconds.",
                    [("", {}, self._started)],
                ),
            ]
        return "".join(families).encode("utf-8")

    def _request_families(self) -> list[str]:
        requests = sorted(self._requests.items())
        return [
            _family(
                "edgebundle_requests_total",
                "counter",
                "HTTP requests answered, by model, endpoint and status code.",
                [("", _request_labels(key), n) for key, n in requests],
            ),
            _family(
                "edgebundle_request_errors_total",
                "counter",
                "HTTP requests answered with a 4xx or 5xx status, by model, endpoint and code.",
                [("", _request_labels(key), n) for key, n in requests if key[2] >= 400],
            ),
            _family(
                "edgebundle_request_duration_seconds",
                "histogram",
                "Time from the first byte of the request to its written response.",
                [
                    sample
                    for (model, endpoint), histogram in sorted(self._latency.items())
                    for sample in _histogram_samples(
                        {"model": model, "endpoint": endpoint}, histogram
                    )
                ],
            ),
        ]

    def _model_families(self) -> list[str]:
        return [
            _family(
                "edgebundle_model_info",
                "gauge",
                "The model version being served (always 1).",
                [
                    (
                        "",
                        {
                            "model": model,
                            "version": info.version,
                            "precision": info.precision,
                            "sha256": info.sha256,
                        },
                        1,
                    )
                    for model, info in sorted(self._info.items())
                ],
            ),
            _family(
                "edgebundle_model_loads_total",
                "counter",
                "Model loads at start and on reload, by model and result (success, failure).",
                [
                    ("", {"model": model, "result": result}, n)
                    for (model, result), n in sorted(self._loads.items())
                ],
            ),
            _family(
                "edgebundle_model_last_reload_success",
                "gauge",
                "1 if the last load of the model succeeded, 0 if it failed.",
                [
                    ("", {"model": model}, int(reload.success))
                    for model, reload in sorted(self._reloads.items())
                ],
            ),
            _family(
                "edgebundle_model_last_reload_timestamp_seconds",
                "gauge",
                "When the model was last loaded or failed to load, since the Unix epoch.",
                [
                    ("", {"model": model}, reload.timestamp)
                    for model, reload in sorted(self._reloads.items())
                ],
            ),
        ]


def _drift_families(reports: Sequence[DriftReport]) -> list[str]:
    """Gauges of drift against each served version's baseline, per window. Feature label
    values are the signed manifest's feature names, so a client cannot add series."""
    families: dict[str, list[_Sample]] = {name: [] for name in _DRIFT_HELP}
    for report in reports:
        model = {"model": report.model, "version": report.version}
        families["edgebundle_drift_baseline"].append(("", model, int(report.baseline is not None)))
        for window_name, window in (("since_start", report.since_start), ("recent", report.recent)):
            labels = {**model, "window": window_name}
            families["edgebundle_drift_rows"].append(("", labels, window.rows))
            if report.baseline is not None:
                _drift_samples(families, labels, window, report.baseline)
    return [
        _family(name, "gauge", help_text, families[name]) for name, help_text in _DRIFT_HELP.items()
    ]


def _drift_samples(
    families: dict[str, list[_Sample]],
    labels: Mapping[str, str],
    window: Window,
    baseline: Baseline,
) -> None:
    for live in window.features:
        feature = {**labels, "feature": live.name}
        for name, value in (
            ("edgebundle_feature_psi", live.psi),
            ("edgebundle_feature_drift_p_value", live.p_value),
            (
                "edgebundle_feature_shift",
                None if live.verdict == TOO_FEW_ROWS else int(live.verdict == SHIFT),
            ),
            ("edgebundle_feature_missing_rate", live.missing_rate),
            ("edgebundle_feature_missing_rate_shift", live.missing_rate_shift),
        ):
            if value is not None:
                families[name].append(("", feature, value))
    prediction = window.prediction
    if prediction is None:
        return
    if prediction.psi is not None:
        families["edgebundle_prediction_psi"].append(("", labels, prediction.psi))
    edges = baseline.prediction.edges
    for k, count in enumerate(prediction.counts):
        bin_labels = {**labels, "bin": _bin_label(edges, k)}
        share = count / window.rows if window.rows else 0.0
        families["edgebundle_prediction_share"].append(("", bin_labels, share))
        families["edgebundle_prediction_baseline_share"].append(
            ("", bin_labels, baseline.prediction.shares[k])
        )


def _bin_label(edges: Sequence[float], k: int) -> str:
    """``[low,high)`` of bin k; the outer bins are open-ended."""
    low = _number(edges[k - 1]) if k > 0 else "-Inf"
    high = _number(edges[k]) if k < len(edges) else "+Inf"
    return f"[{low},{high})"


_DRIFT_HELP = {
    "edgebundle_drift_baseline": "1 if the served version has a drift baseline "
    "(built with --data), 0 if drift cannot be measured.",
    "edgebundle_drift_rows": "Rows counted by the drift monitor, by window "
    "(since_start: since the version was loaded; recent: the sliding window).",
    "edgebundle_feature_psi": "Population stability index of a feature against the baseline.",
    "edgebundle_feature_drift_p_value": "Chi-square test of a feature's bins and missing count "
    "against the baseline: the chance of a difference this large with no shift.",
    "edgebundle_feature_shift": "1 if the feature shifted (PSI above the threshold and "
    "significant), 0 if not; absent while the window has too few rows to judge.",
    "edgebundle_feature_missing_rate": "Share of rows with the feature missing.",
    "edgebundle_feature_missing_rate_shift": "Missing rate minus the baseline's missing rate.",
    "edgebundle_prediction_psi": "Population stability index of the predictions against "
    "the baseline.",
    "edgebundle_prediction_share": "Share of the window's predictions in each bin.",
    "edgebundle_prediction_baseline_share": "Share of the baseline's predictions in each bin.",
}


def _request_labels(key: tuple[str, str, int]) -> dict[str, str]:
    model, endpoint, code = key
    return {"model": model, "endpoint": endpoint, "code": str(code)}


def _histogram_samples(labels: Mapping[str, str], histogram: _Histogram) -> list[_Sample]:
    samples: list[_Sample] = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, histogram.buckets, strict=True):
        cumulative += count
        samples.append(("_bucket", {**labels, "le": _number(bound)}, cumulative))
    samples.append(("_bucket", {**labels, "le": "+Inf"}, histogram.count))
    samples.append(("_sum", labels, histogram.total))
    samples.append(("_count", labels, histogram.count))
    return samples


def _family(name: str, kind: str, help_text: str, samples: Iterable[_Sample]) -> str:
    lines = [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}"]
    lines.extend(
        f"{name}{suffix}{_labels(labels)} {_number(value)}" for suffix, labels, value in samples
    )
    return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
