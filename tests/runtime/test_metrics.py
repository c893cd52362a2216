"""The Prometheus exposition text, read back by the real client library's parser: counters,
the latency histogram, model and drift gauges, and label values that need escaping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.report import DriftReport
from edgebundle.runtime.serve.metrics import LATENCY_BUCKETS, Metrics, ModelInfo
from edgebundle.runtime.stats import Baseline, FeatureBaseline, PredictionBaseline

Labels = tuple[tuple[str, str], ...]
START = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(clock)


def scrape(
    metrics: Metrics, in_flight: int = 0, drift: tuple[DriftReport, ...] = ()
) -> dict[tuple[str, Labels], float]:
    """Every sample by name and labels, as a Prometheus server reads the text."""
    text = metrics.render(in_flight, drift).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, Labels]:
    return name, tuple(sorted(labels.items()))


def families(metrics: Metrics) -> dict[str, str]:
    text = metrics.render(0).decode("utf-8")
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_a_fresh_server_renders_its_families_types_and_clock(
    metrics: Metrics, clock: Clock
) -> None:
    assert families(metrics) == {
        "edgebundle_requests": "counter",
        "edgebundle_request_errors": "counter",
        "edgebundle_request_duration_seconds": "histogram",
        "edgebundle_requests_in_flight": "gauge",
        "edgebundle_rows_scored": "counter",
        "edgebundle_connections_dropped": "counter",
        "edgebundle_model_info": "gauge",
        "edgebundle_model_loads": "counter",
        "edgebundle_model_last_reload_success": "gauge",
        "edgebundle_model_last_reload_timestamp_seconds": "gauge",
        "edgebundle_drift_baseline": "gauge",
        "edgebundle_drift_rows": "gauge",
        "edgebundle_feature_psi": "gauge",
        "edgebundle_feature_drift_p_value": "gauge",
        "edgebundle_feature_shift": "gauge",
        "edgebundle_feature_missing_rate": "gauge",
        "edgebundle_feature_missing_rate_shift": "gauge",
        "edgebundle_prediction_psi": "gauge",
        "edgebundle_prediction_share": "gauge",
        "edgebundle_prediction_baseline_share": "gauge",
        "edgebundle_uptime_seconds": "gauge",
        "process_start_time_seconds": "gauge",
    }
    clock.now += 12.5
    samples = scrape(metrics, in_flight=3)
    assert samples == {
        key("edgebundle_requests_in_flight"): 3,
        key("edgebundle_uptime_seconds"): 12.5,
        key("process_start_time_seconds"): START,
    }


def test_requests_are_counted_by_model_endpoint_and_code(metrics: Metrics) -> None:
    for code in (200, 200, 400, 503):
        metrics.observe_request("credit", "infer", code, 0.001)
    metrics.observe_request("", "other", 404, 0.001)
    samples = scrape(metrics)
    infer = {"model": "credit", "endpoint": "infer"}
    assert samples[key("edgebundle_requests_total", **infer, code="200")] == 2
    assert samples[key("edgebundle_requests_total", **infer, code="400")] == 1
    assert samples[key("edgebundle_requests_total", model="", endpoint="other", code="404")] == 1
    errors = {k: v for k, v in samples.items() if k[0] == "edgebundle_request_errors_total"}
    assert errors == {
        key("edgebundle_request_errors_total", **infer, code="400"): 1,
        key("edgebundle_request_errors_total", **infer, code="503"): 1,
        key("edgebundle_request_errors_total", model="", endpoint="other", code="404"): 1,
    }


def test_latency_buckets_are_cumulative_with_sum_and_count(metrics: Metrics) -> None:
    seconds = (0.00003, 0.0003, 0.001, 2.0)  # 0.001 is a bound: at most, so in its bucket
    for value in seconds:
        metrics.observe_request("credit", "infer", 200, value)
    samples = scrape(metrics)
    labels = {"model": "credit", "endpoint": "infer"}
    buckets = [
        samples[key("edgebundle_request_duration_seconds_bucket", **labels, le=repr(bound))]
        for bound in LATENCY_BUCKETS
    ]
    expected = [sum(value <= bound for value in seconds) for bound in LATENCY_BUCKETS]
    assert buckets == expected == sorted(expected)
    assert samples[key("edgebundle_request_duration_seconds_bucket", **labels, le="+Inf")] == 4
    assert samples[key("edgebundle_request_duration_seconds_count", **labels)] == 4
    total = samples[key("edgebundle_request_duration_seconds_sum", **labels)]
    assert math.isclose(total, sum(seconds))


def test_rows_scored_add_up_by_model(metrics: Metrics) -> None:
    metrics.add_rows("credit", 1)
    metrics.add_rows("credit", 10)
    metrics.add_rows("churn", 2)
    samples = scrape(metrics)
    assert samples[key("edgebundle_rows_scored_total", model="credit")] == 11
    assert samples[key("edgebundle_rows_scored_total", model="churn")] == 2


def test_dropped_connections_are_counted_by_reason(metrics: Metrics) -> None:
    for reason in ("peer_limit", "made_room", "peer_limit", "tls_handshake"):
        metrics.connection_dropped(reason)
    samples = scrape(metrics)
    assert samples[key("edgebundle_connections_dropped_total", reason="peer_limit")] == 2
    assert samples[key("edgebundle_connections_dropped_total", reason="made_room")] == 1
    assert samples[key("edgebundle_connections_dropped_total", reason="tls_handshake")] == 1


def test_model_loads_failures_and_removal(metrics: Metrics, clock: Clock) -> None:
    info = ModelInfo(version="1.0.0", precision="int8", sha256="ab" * 32)
    metrics.model_loaded("credit", info)
    clock.now += 60
    metrics.model_load_failed("credit")
    samples = scrape(metrics)
    labels = {"model": "credit", "version": "1.0.0", "precision": "int8", "sha256": "ab" * 32}
    assert samples[key("edgebundle_model_info", **labels)] == 1
    assert samples[key("edgebundle_model_loads_total", model="credit", result="success")] == 1
    assert samples[key("edgebundle_model_loads_total", model="credit", result="failure")] == 1
    assert samples[key("edgebundle_model_last_reload_success", model="credit")] == 0
    stamp = key("edgebundle_model_last_reload_timestamp_seconds", model="credit")
    assert samples[stamp] == START + 60
    metrics.model_removed("credit")
    samples = scrape(metrics)
    assert not any(name == "edgebundle_model_info" for name, _ in samples)
    assert samples[key("edgebundle_model_loads_total", model="credit", result="success")] == 1


# --- drift ------------------------------------------------------------------------------------


AWKWARD = 'rate "per\\day"\nnew'  # a feature name with a quote, a backslash and a newline


def baseline() -> Baseline:
    features = tuple(
        FeatureBaseline(name=name, edges=(0.0,), shares=(0.5, 0.5), missing_rate=0.0)
        for name in ("age", AWKWARD)
    )
    prediction = PredictionBaseline(kind="probability", edges=(0.5,), shares=(0.6, 0.4))
    return Baseline(rows=100, features=features, prediction=prediction)


def report(base: Baseline | None) -> DriftReport:
    monitor = Monitor("credit", "1.0.0", base, window_rows=10)
    x = np.array([[-1, 1], [1, np.nan], [1, 2], [np.nan, -2]], dtype=np.float32)
    monitor.observe(x, np.array([0.2, 0.7, 0.9, 0.4], dtype=np.float32))
    return monitor.report()


def test_drift_gauges_per_window_feature_and_prediction_bin(metrics: Metrics) -> None:
    base = baseline()
    drift = report(base)
    samples = scrape(metrics, drift=(drift,))
    model = {"model": "credit", "version": "1.0.0"}
    assert samples[key("edgebundle_drift_baseline", **model)] == 1
    for window_name, window in (("since_start", drift.since_start), ("recent", drift.recent)):
        labels = {**model, "window": window_name}
        assert samples[key("edgebundle_drift_rows", **labels)] == 4
        for live, feature in zip(window.features, base.features, strict=True):
            at = {**labels, "feature": feature.name}
            assert samples[key("edgebundle_feature_psi", **at)] == live.psi
            assert samples[key("edgebundle_feature_drift_p_value", **at)] == live.p_value
            # 4 rows are too few for a verdict: no shift gauge rather than a 0 that reads "ok"
            assert key("edgebundle_feature_shift", **at) not in samples
            assert samples[key("edgebundle_feature_missing_rate", **at)] == 0.25
            assert samples[key("edgebundle_feature_missing_rate_shift", **at)] == 0.25
        assert window.prediction is not None
        psi = window.prediction.psi
        assert psi is not None
        assert samples[key("edgebundle_prediction_psi", **labels)] == psi
        for bin_label, share, base_share in (("[-Inf,0.5)", 0.5, 0.6), ("[0.5,+Inf)", 0.5, 0.4)):
            at = {**labels, "bin": bin_label}
            assert samples[key("edgebundle_prediction_share", **at)] == share
            assert samples[key("edgebundle_prediction_baseline_share", **at)] == base_share


def test_a_label_value_that_needs_escaping_reads_back_as_it_was(metrics: Metrics) -> None:
    text = metrics.render(0, (report(baseline()),)).decode("utf-8")
    assert 'feature="rate \\"per\\\\day\\"\\nnew"' in text
    features = {
        dict(sample.labels).get("feature")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert AWKWARD in features


def test_without_a_baseline_only_rows_are_gauged(metrics: Metrics) -> None:
    samples = scrape(metrics, drift=(report(None),))
    drift = {
        k: v
        for k, v in samples.items()
        if k[0].startswith(("edgebundle_drift", "edgebundle_feature", "edgebundle_prediction"))
    }
    model = {"model": "credit", "version": "1.0.0"}
    assert drift == {
        key("edgebundle_drift_baseline", **model): 0,
        key("edgebundle_drift_rows", **model, window="since_start"): 4,
        key("edgebundle_drift_rows", **model, window="recent"): 4,
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.25, "0.25"), (float("nan"), "NaN"), (float("inf"), "+Inf"), (float("-inf"), "-Inf")],
)
def test_numbers_are_spelled_as_prometheus_reads_them(
    clock: Clock, value: float, text: str
) -> None:
    metrics = Metrics(clock)
    clock.now = START + value  # the uptime gauge carries the value
    line = next(
        line
        for line in metrics.render(0).decode().splitlines()
        if line.startswith("edgebundle_uptime_seconds ")
    )
    assert line == f"edgebundle_uptime_seconds {text}"
    parsed = scrape(metrics)[key("edgebundle_uptime_seconds")]
    assert parsed == value or (math.isnan(parsed) and math.isnan(value))
