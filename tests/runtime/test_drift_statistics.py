"""The monitor's pure reading of counts: PSI, the chi-square test behind each verdict (its
survival function checked against closed forms and scipy), the minimum row count and its
derivation, and the verdicts on a small noisy sample, a large fleet's tiny shift and a real one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgebundle.runtime.monitor.report import DriftReport, FeatureWindow, Window, window_summary
from edgebundle.runtime.monitor.statistics import (
    ALPHA,
    DEFAULT_THRESHOLDS,
    MIN_ROWS,
    PSI_FLOOR,
    PSI_SHIFTED,
    chi2_sf,
    p_value,
    psi,
)
from edgebundle.runtime.stats import MAX_GROUPS, Baseline, FeatureBaseline, PredictionBaseline

# --- PSI ---------------------------------------------------------------------------------------


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


# --- the chi-square survival function --------------------------------------------------------


def _even_dof_sf(x: float, dof: int) -> float:
    """For even dof, P(χ² > x) = e^(-x/2) Σ_{i < dof/2} (x/2)^i / i! exactly (Poisson tail)."""
    half = x / 2
    return math.exp(-half) * sum(half**i / math.factorial(i) for i in range(dof // 2))


@pytest.mark.parametrize("dof", [2, 4, 10, 20, 40])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.0, 10.0, 19.0, 36.0, 80.0, 200.0])
def test_chi2_sf_matches_the_closed_form_for_even_dof(x: float, dof: int) -> None:
    assert chi2_sf(x, dof) == pytest.approx(_even_dof_sf(x, dof), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("dof", [1, 3, 9, 19, 99])
@pytest.mark.parametrize("x", [0.001, 0.3, 2.0, 8.0, 30.0, 120.0, 600.0])
def test_chi2_sf_matches_scipy(x: float, dof: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert chi2_sf(x, dof) == pytest.approx(float(stats.chi2.sf(x, dof)), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("x", "dof", "p"),
    # The textbook critical values: 95th and 99th percentiles of chi-square tables.
    [(3.841459, 1, 0.05), (6.634897, 1, 0.01), (30.143527, 19, 0.05), (36.190869, 19, 0.01)],
)
def test_chi2_sf_at_table_critical_values(x: float, dof: int, p: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(p, rel=1e-5)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(0.0, 5) == 1.0 and chi2_sf(-1.0, 5) == 1.0
    assert chi2_sf(1e6, 5) == 0.0
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


UNIFORM = FeatureBaseline(
    name="x", edges=tuple(float(k) for k in range(1, 10)), shares=(0.1,) * 10, missing_rate=0.0
)


def _feature(counts: list[int], missing: int = 0, base: FeatureBaseline = UNIFORM) -> FeatureWindow:
    return FeatureWindow.of("x", tuple(counts), missing, base)


# --- the minimum row count ---------------------------------------------------------------------


def test_min_rows_keeps_psi_noise_under_the_threshold_at_the_most_bins() -> None:
    """n·PSI ~ χ²(bins − 1) under no shift: at MIN_ROWS and MAX_GROUPS bins, a PSI above the
    threshold from noise alone is under 1 in 200, and it is not at 150 rows."""
    assert chi2_sf(MIN_ROWS * PSI_SHIFTED, MAX_GROUPS - 1) < 0.005
    assert chi2_sf(150 * PSI_SHIFTED, MAX_GROUPS - 1) > 0.05


@pytest.mark.parametrize(
    ("shares", "psi_noise"),
    [
        ([0.05] * 20, 0.02),  # the χ² approximation: ~1% (its higher-order terms add a little)
        ([0.01, 0.01, 0.02, 0.03] + [0.93 / 16] * 16, 0.04),  # small bins: the floor adds more
    ],
)
def test_min_rows_holds_when_sampled_from_the_baseline(
    shares: list[float], psi_noise: float
) -> None:
    """The derivation checked by sampling: 4,000 windows of MIN_ROWS rows drawn from the
    baseline itself rarely reach PSI 0.2, the chi-square test keeps false shifts under ALPHA,
    and windows of 5 rows reach PSI 0.2 nearly always."""
    rng = np.random.default_rng(7)
    p = np.array(shares) / sum(shares)
    base = FeatureBaseline(
        name="x", edges=tuple(float(k) for k in range(19)), shares=tuple(p), missing_rate=0.0
    )
    windows = [
        _feature([int(c) for c in row], base=base)
        for row in rng.multinomial(MIN_ROWS, p, size=4000)
    ]
    assert np.mean([(w.psi or 0.0) > PSI_SHIFTED for w in windows]) < psi_noise
    assert np.mean([w.verdict == "shift" for w in windows]) < ALPHA
    five = [psi(tuple(p), [int(c) for c in row]) for row in rng.multinomial(5, p, size=200)]
    assert np.mean([(v or 0.0) > PSI_SHIFTED for v in five]) > 0.95


# --- verdicts ------------------------------------------------------------------------------------


def test_five_rows_are_too_few_whatever_their_psi() -> None:
    window = _feature([5, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert window.psi is not None and window.psi > 1  # a huge PSI, from 5 rows
    assert window.verdict == "too_few_rows"


def test_a_small_noisy_sample_above_the_minimum_is_not_a_shift() -> None:
    """200 rows against ten 2% bins and one of 80%: five small bins came up empty by chance
    (4 rows expected in each). The floor's log ratio lifts PSI far over the threshold, but a
    chi-square test finds nothing a sample that size would not show by chance."""
    small = FeatureBaseline(
        name="x",
        edges=tuple(float(k) for k in range(1, 11)),
        shares=(0.02,) * 10 + (0.8,),
        missing_rate=0.0,
    )
    window = _feature([0] * 5 + [4] * 5 + [180], base=small)
    assert window.psi is not None and window.psi > 2 * PSI_SHIFTED
    assert window.p_value is not None and window.p_value > ALPHA
    assert window.verdict == "ok"


def test_a_large_fleet_with_a_tiny_shift_is_significant_but_ok() -> None:
    """A million rows with every share off by half a point: beyond doubt, yet harmless."""
    shares = [0.105, 0.095] * 5
    window = _feature([round(1_000_000 * s) for s in shares])
    assert window.p_value is not None and window.p_value < 1e-12
    assert window.psi is not None and window.psi < 0.01
    assert window.verdict == "ok"


def test_a_real_shift_is_large_and_significant() -> None:
    window = _feature([400, 300, 100, 50, 50, 50, 50, 0, 0, 0])
    assert window.psi is not None and window.psi > PSI_SHIFTED
    assert window.p_value is not None and window.p_value < ALPHA
    assert window.verdict == "shift"


def test_a_feature_gone_missing_is_a_shift_without_a_psi() -> None:
    window = _feature([0] * 10, missing=500)
    assert window.psi is None and window.missing_rate_shift == 1.0
    assert window.verdict == "shift"


def test_missing_as_often_as_the_baseline_leaves_too_few_values_to_judge() -> None:
    """A feature the baseline saw missing 95% of the time: 1,000 rows hold ~50 values, too
    few for their PSI to mean anything, and the missing rate has not moved."""
    rare = FeatureBaseline(name="x", edges=(0.0,), shares=(0.5, 0.5), missing_rate=0.95)
    window = _feature([50, 0], missing=950, base=rare)
    assert window.verdict == "too_few_rows"


def test_p_value_of_a_single_bin_is_one() -> None:
    assert p_value((1.0,), (42,)) == 1.0


# --- the one-line summary --------------------------------------------------------------------

BASELINE = Baseline(
    rows=1000,
    features=(UNIFORM,),
    prediction=PredictionBaseline(kind="probability", edges=(0.5,), shares=(0.5, 0.5)),
)


def _report(window: Window) -> DriftReport:
    return DriftReport(
        model="m", version="1.0.0", started="2026-01-01T00:00:00Z",
        generated="2026-01-01T00:00:00Z", window_rows=10_000, baseline=BASELINE,
        since_start=window, recent=window,
    )  # fmt: skip


def _window(feature: FeatureWindow, prediction: tuple[int, int]) -> Window:
    from edgebundle.runtime.monitor.report import PredictionWindow

    return Window(
        rows=feature.rows,
        features=(feature,),
        prediction=PredictionWindow.of(prediction, BASELINE.prediction.shares),
    )


def test_summary_names_the_shift_with_its_numbers() -> None:
    window = _window(_feature([400, 300, 100, 50, 50, 50, 50, 0, 0, 0]), (500, 500))
    assert window_summary(_report(window), window) == (
        f"1,000 rows: 1 of 1 features shifted: x (PSI {window.features[0].psi:.2f}, p < 0.001); "
        "prediction: ok (PSI 0.00)"
    )


def test_summary_of_too_few_rows_gives_the_minimum() -> None:
    window = _window(_feature([5, 0, 0, 0, 0, 0, 0, 0, 0, 0]), (5, 0))
    assert window_summary(_report(window), window) == (
        f"5 rows: too few to judge (a verdict needs {DEFAULT_THRESHOLDS.min_rows}; "
        "below that, PSI is mostly sampling noise)"
    )


def test_summary_without_rows_or_baseline() -> None:
    report = _report(Window(rows=0))
    assert window_summary(report, Window(rows=0)) == "no rows yet"
    bare = DriftReport(
        model="m", version="1.0.0", started="2026-01-01T00:00:00Z",
        generated="2026-01-01T00:00:00Z", window_rows=10_000, baseline=None,
        since_start=Window(rows=12), recent=Window(rows=12),
    )  # fmt: skip
    assert window_summary(bare, bare.recent) == (
        "12 rows; no baseline (built without --data), so drift is unknown"
    )
