"""The monitor's pure reading of counts: the population stability index, its levels, and the
one-line verdict, on hand-made windows with hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from edgebundle.runtime.monitor.report import FeatureWindow, Window
from edgebundle.runtime.monitor.statistics import PSI_FLOOR, psi, psi_level, verdict
from edgebundle.runtime.stats import Baseline, FeatureBaseline, PredictionBaseline


def test_psi_of_the_baseline_itself_is_zero() -> None:
    assert psi((0.2, 0.3, 0.5), (20, 30, 50)) == 0.0


def test_psi_without_rows_is_unknown() -> None:
    assert psi((0.5, 0.5), (0, 0)) is None


def test_psi_sums_share_differences_weighted_by_their_log_ratio() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 3
    assert psi((0.5, 0.5), (1, 3)) == pytest.approx(0.25 * math.log(3))


def test_an_empty_bin_counts_as_the_floor_so_psi_stays_finite() -> None:
    floored = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert psi((0.0, 1.0), (1, 0)) == pytest.approx(floored)


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, "no rows"),
        (0.0, "stable"),
        (0.1, "stable"),
        (0.1001, "watch"),
        (0.2, "watch"),
        (0.2001, "shifted"),
        (math.inf, "shifted"),
    ],
)
def test_psi_levels_are_the_customary_ones(value: float | None, level: str) -> None:
    assert psi_level(value) == level


def _feature(name: str, missing_rate: float = 0.0) -> FeatureBaseline:
    return FeatureBaseline(name=name, edges=(0.0,), shares=(0.5, 0.5), missing_rate=missing_rate)


BASELINE = Baseline(
    rows=1000,
    features=tuple(_feature(f"f{i}") for i in range(5)),
    prediction=PredictionBaseline(kind="probability", edges=(0.5,), shares=(0.5, 0.5)),
)


def _window(*features: tuple[int, int, int], prediction: tuple[int, int] = (50, 50)) -> Window:
    return Window(
        rows=sum(features[0]),
        features=tuple(
            FeatureWindow(name=f"f{i}", counts=(low, high), missing=missing)
            for i, (low, high, missing) in enumerate(features)
        ),
        prediction=prediction,
    )


def test_a_verdict_names_each_kind_of_change_worst_first() -> None:
    window = _window(
        (20, 80, 0),  # 0.3 ln 4 = 0.42: shifted
        (10, 90, 0),  # 0.4 ln 9 = 0.88: shifted, and worse
        (0, 0, 100),  # every value missing: no PSI at all
        (40, 40, 20),  # the same shares of present values, missing 20 points more often
        (30, 70, 0),  # 0.2 ln(7/3) = 0.17: to watch
        prediction=(40, 60),  # 0.1 ln 1.5 = 0.04
    )
    assert verdict(window, BASELINE) == (
        "2 of 5 features shifted (PSI > 0.2): f1 0.88, f0 0.42; "
        "1 to watch (PSI > 0.1): f4 0.17; "
        "all missing: f2; "
        "missing more often: f3 +20 pp; "
        "prediction PSI 0.04 (stable)"
    )


def test_a_verdict_on_a_stable_window_says_only_that() -> None:
    window = _window(*[(50, 50, 0)] * 5)
    assert verdict(window, BASELINE) == (
        "0 of 5 features shifted (PSI > 0.2); prediction PSI 0.00 (stable)"
    )


def test_missing_no_more_than_ten_points_above_the_baseline_is_not_named() -> None:
    window = _window(*[(45, 45, 10)] * 5)
    assert "missing more often" not in verdict(window, BASELINE)


def test_a_verdict_without_rows_or_baseline() -> None:
    assert verdict(Window(rows=0), BASELINE) == "no rows yet"
    assert verdict(Window(rows=12), None) == (
        "12 rows; no baseline (built without --data), so drift is unknown"
    )
