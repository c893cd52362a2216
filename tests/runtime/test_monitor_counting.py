"""The monitor's counting on a hand-made baseline: which bin each value lands in, and which
rows the recent window holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.report import BLOCKS
from edgebundle.runtime.stats import Baseline, FeatureBaseline, PredictionBaseline

NAN, INF = math.nan, math.inf


def baseline(kind: str = "probability", prediction_edges: tuple[float, ...] = (0.5,)) -> Baseline:
    return Baseline(
        rows=100,
        features=(
            FeatureBaseline(name="a", edges=(0.0, 1.0), shares=(0.3, 0.4, 0.3), missing_rate=0.0),
            FeatureBaseline(name="b", edges=(), shares=(1.0,), missing_rate=0.5),
        ),
        prediction=PredictionBaseline(
            kind=kind,
            edges=prediction_edges,
            shares=tuple([1 / (len(prediction_edges) + 1)] * (len(prediction_edges) + 1)),
        ),
    )


def rows(*values: tuple[float, float]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_a_value_on_an_edge_is_in_the_bin_above_it_as_in_xgboost() -> None:
    monitor = Monitor("m", "1.0.0", baseline())
    x = rows((-1, 5), (0, NAN), (0.5, -INF), (1, INF), (INF, 0), (-INF, NAN), (NAN, 1))
    monitor.observe(x, np.array([0.2, 0.5, 0.9, 0.1, 0.6, 0.49, 0.5], dtype=np.float32))
    window = monitor.report().since_start
    a, b = window.features
    assert (a.counts, a.missing) == ((2, 2, 2), 1)
    assert (b.counts, b.missing) == ((5,), 2)
    assert window.prediction is not None and window.prediction.counts == (3, 4)
    assert window.rows == 7


def test_a_class_histogram_counts_the_argmax_label() -> None:
    monitor = Monitor("m", "1.0.0", baseline("class", (0.5, 1.5)))
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    monitor.observe(rows(*[(0, 0)] * 4), probabilities.astype(np.float32))
    prediction = monitor.report().recent.prediction
    assert prediction is not None and prediction.counts == (1, 1, 2)


def test_the_recent_window_keeps_the_newest_full_blocks_beside_the_current_one() -> None:
    monitor = Monitor("m", "1.0.0", baseline(), window_rows=20)  # blocks of 2 rows
    values = np.arange(25, dtype=np.float32) - 12  # 13 negative, then 0, then 11 of 1 and up
    monitor.observe(np.stack([values, values], axis=1), np.zeros(25, dtype=np.float32))
    report = monitor.report()
    assert report.since_start.rows == 25
    # 12 full blocks and 1 row: the 9 newest full blocks fit beside it, so the last 19 rows
    recent = report.recent
    assert recent.rows == 19
    assert recent.features[0].counts == (6, 1, 12)  # -6 .. -1, 0, 1 .. 12
    assert recent.prediction is not None and recent.prediction.counts == (19, 0)


def test_without_a_partial_block_the_whole_window_is_recent() -> None:
    monitor = Monitor("m", "1.0.0", baseline(), window_rows=20)
    monitor.observe(rows(*[(1, 1)] * 24), np.zeros(24, dtype=np.float32))
    assert monitor.report().recent.rows == 20


def test_rows_observed_one_at_a_time_are_counted_in_order() -> None:
    monitor = Monitor("m", "1.0.0", baseline(), window_rows=BLOCKS)  # blocks of one row
    for value in (-1.0, -1.0, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0):
        monitor.observe(rows((value, 0)), np.zeros(1, dtype=np.float32))
    report = monitor.report()
    assert report.since_start.features[0].counts == (2, 3, 7)
    assert report.recent.features[0].counts == (0, 3, 7)  # the 10 newest


def test_a_window_must_have_a_row_per_block() -> None:
    with pytest.raises(ValueError, match=f"window_rows must be >= {BLOCKS}"):
        Monitor("m", "1.0.0", baseline(), window_rows=BLOCKS - 1)


def test_report_times_are_utc_seconds() -> None:
    clock = iter([1_700_000_000.0, 1_700_000_061.9])
    report = Monitor("m", "1.0.0", None, clock=lambda: next(clock)).report()
    assert (report.started, report.generated) == ("2023-11-14T22:13:20Z", "2023-11-14T22:14:21Z")
