"""``bundle compare``'s pure parts in memory: metrics against values worked out by hand,
agreement between two sets of outputs, and the report's text for a fixed comparison."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgebundle.builder.compare.agreement import Agreement, Shift, agreement
from edgebundle.builder.compare.display import metric_text, share, signed
from edgebundle.builder.compare.labels import LabelUse
from edgebundle.builder.compare.metrics import (
    Metric,
    accuracy,
    auc,
    log_loss,
    mae,
    multiclass_log_loss,
    rmse,
    task_metrics,
)
from edgebundle.builder.compare.results import Comparison, Side
from edgebundle.builder.compare.text import format_comparison
from edgebundle.runtime.errors import InputError


def f64(*values: float) -> npt.NDArray[np.float64]:
    return np.array(values, dtype=np.float64)


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "score", "expected"),
    [
        # 4 (positive, negative) pairs, 3 ordered right: 0.35 < 0.4 is the one wrong
        ((0, 0, 1, 1), (0.1, 0.4, 0.35, 0.8), 0.75),
        # the tie 0.5 = 0.5 counts half: (0.5 + 1 + 1 + 1) / 4
        ((0, 1, 0, 1), (0.5, 0.5, 0.2, 0.9), 0.875),
        ((0, 0, 1, 1), (0.3, 0.3, 0.3, 0.3), 0.5),
        ((0, 1, 0, 1), (1, 2, 3, 4), 0.75),  # any increasing scores: a logitraw margin works
        ((1, 1, 0), (0.1, 0.2, 0.9), 0.0),
    ],
)
def test_auc_by_hand(y: tuple[int, ...], score: tuple[float, ...], expected: float) -> None:
    assert auc(f64(*y), f64(*score)) == expected


def test_auc_is_undefined_with_one_class() -> None:
    assert math.isnan(auc(f64(0, 0, 0), f64(0.1, 0.5, 0.9)))


def test_log_loss_by_hand() -> None:
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert log_loss(f64(1, 0), f64(0.8, 0.3)) == pytest.approx(expected, rel=1e-15)


def test_log_loss_of_a_certain_wrong_answer_is_finite() -> None:
    # clipped to [1e-15, 1 - 1e-15]: a probability of exactly 0 or 1 costs about -ln(1e-15)
    # (1 - 1e-15 is not exact in float64), not infinity
    assert log_loss(f64(1, 0), f64(0, 1)) == pytest.approx(-math.log(1e-15), rel=1e-4)
    assert log_loss(f64(1, 0), f64(1, 0)) == pytest.approx(0, abs=1e-14)


def test_multiclass_log_loss_reads_each_rows_own_class() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    expected = -(math.log(0.7) + math.log(0.6) + math.log(0.5)) / 3
    assert multiclass_log_loss(f64(0, 2, 1), probabilities) == pytest.approx(expected, rel=1e-15)


def test_accuracy_compares_int_labels_with_float_ones() -> None:
    assert accuracy(f64(0, 1, 0, 0), np.array([0, 1, 1, 0], dtype=np.int64)) == 0.75


def test_regression_errors_by_hand() -> None:
    y, prediction = f64(1, 2, 3), f32(1, 2, 5)
    assert rmse(y, prediction) == pytest.approx(math.sqrt(4 / 3), rel=1e-15)
    assert mae(y, prediction) == pytest.approx(2 / 3, rel=1e-15)
    # float32 predictions are widened before subtracting, so float32 rounding adds nothing
    assert mae(f64(0.0), f32(0.1)) == float(np.float32(0.1))


def binary_outputs(probability: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
    return {"label": (probability >= 0.5).astype(np.int64), "probability": probability}


def test_binary_task_metrics_skip_unlabelled_rows() -> None:
    y = f64(1, 0, math.nan, 1)
    old = binary_outputs(f32(0.9, 0.2, 0.0, 0.6))
    new = binary_outputs(f32(0.4, 0.3, 1.0, 0.8))
    metrics, notes = task_metrics("binary", old, new, y)
    assert [m.key for m in metrics] == ["auc", "log_loss", "accuracy"]  # headline first
    auc_metric, log_loss_metric, accuracy_metric = metrics
    assert (auc_metric.old, auc_metric.new) == (1.0, 1.0)
    # the unlabelled row's certain 1.0 would cost NEW dearly, were it counted
    old_loss = -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3
    new_loss = -(math.log(0.4) + math.log(0.7) + math.log(0.8)) / 3
    assert log_loss_metric.old == pytest.approx(old_loss, rel=1e-6)  # float32 probabilities
    assert log_loss_metric.new == pytest.approx(new_loss, rel=1e-6)
    assert accuracy_metric.old == 1.0
    assert accuracy_metric.new == pytest.approx(2 / 3)
    assert notes == []


def test_auc_reads_a_score_when_there_is_no_probability() -> None:
    old = {"label": np.array([0, 1]), "score": f32(-2.0, 3.0)}
    new = {"label": np.array([1, 1]), "score": f32(0.5, 0.25)}
    metrics, _ = task_metrics("binary", old, new, f64(0, 1))
    assert {m.key: (m.old, m.new) for m in metrics} == {"auc": (1.0, 0.0), "accuracy": (1.0, 0.5)}


def test_one_labelled_class_leaves_auc_undefined_with_a_note() -> None:
    outputs = binary_outputs(f32(0.9, 0.8))
    metrics, notes = task_metrics("binary", outputs, outputs, f64(1, 1))
    assert [m.key for m in metrics] == ["log_loss", "accuracy"]
    assert notes == ["AUC is undefined: the labelled rows hold one class only"]


def test_a_task_without_metrics_is_noted() -> None:
    outputs = {"score": f32(0.1)}
    assert task_metrics("ranking", outputs, outputs, f64(1)) == (
        (),
        ["no task metric for ranking models: agreement only"],
    )


def test_no_labelled_row_is_refused() -> None:
    outputs = {"prediction": f32(1.0, 2.0)}
    with pytest.raises(InputError, match="every row's label is missing"):
        task_metrics("regression", outputs, outputs, f64(math.nan, math.nan))


def test_metric_changes_below_the_shown_digits_are_the_same() -> None:
    same = Metric(key="m", title="m", old=0.5, new=0.50002, higher_is_better=True)
    assert same.verdict == "same"  # 2e-5 < 5e-5 * 0.5
    assert Metric(key="m", title="m", old=0.5, new=0.5001, higher_is_better=True).verdict == (
        "better"
    )


# --- agreement -------------------------------------------------------------------------------


def test_binary_agreement() -> None:
    old = binary_outputs(f32(0.9, 0.2, 0.6, 0.4))
    new = binary_outputs(f32(0.7, 0.3, 0.4, 0.4))
    found = agreement(old, new)
    assert found.rows == 4
    assert found.labels == 0.75
    shift = found.shift
    assert shift is not None and shift.output == "probability"
    assert (shift.mean_old, shift.mean_new) == pytest.approx((0.525, 0.45))
    assert shift.max_abs_diff == pytest.approx(0.2)
    assert found.probability_diff == pytest.approx((0.2 + 0.1 + 0.2 + 0) / 4)


def test_multiclass_agreement_counts_the_probability_mass_that_moved() -> None:
    old = {"label": np.array([0, 2]), "probabilities": np.array([[0.6, 0.3, 0.1], [0, 0, 1]])}
    new = {"label": np.array([1, 2]), "probabilities": np.array([[0.2, 0.7, 0.1], [0, 0, 1]])}
    found = agreement(old, new)
    assert found.labels == 0.5
    assert found.shift is None  # no per-row float output to follow
    # row 0 moved 0.4 from class 0 to class 1, row 1 nothing
    assert found.probability_diff == pytest.approx(0.2)


def test_agreement_without_labels_or_probabilities() -> None:
    found = agreement({"prediction": f32(1, 3)}, {"prediction": f32(2, 2)})
    assert (found.labels, found.probability_diff) == (None, None)
    assert found.shift == Shift(output="prediction", mean_old=2.0, mean_new=2.0, max_abs_diff=1.0)


# --- numbers and the report --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"), [(0.9996, ">99.9%"), (1.0, "100.0%"), (0.5, "50.0%"), (0.0004, "0.0%")]
)
def test_share_never_rounds_up_to_every_row(value: float, text: str) -> None:
    assert share(value) == text


def test_signed_numbers_use_a_typographic_minus() -> None:
    assert [signed(-0.25), signed(0.25), signed(0.0), signed(-0.125, ".1%")] == [
        "−0.25",
        "+0.25",
        "+0",
        "−12.5%",
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0.0000"), (0.8765, "0.8765"), (12.5, "12.5000"), (2e-5, "2e-05"), (3e6, "3e+06")],
)
def test_metric_text(value: float, text: str) -> None:
    assert metric_text(value) == text


def side(path: str, version: str, size: int, scale: float) -> Side:
    return Side(
        path=Path(path),
        name="credit",
        version=version,
        precision="int8",
        task="binary",
        bundle_bytes=size,
        load_ms=2.0 * scale,
        batch_us_per_row=1.5 * scale,
        single_row_us=40.0 * scale,
    )


def test_text_report_of_a_fixed_comparison() -> None:
    comparison = Comparison(
        data=Path("rows.csv"),
        old=side("old.bundle", "1.0.0", 20_000, 1.0),
        new=side("new.bundle", "1.1.0", 15_000, 0.5),
        agreement=Agreement(
            rows=1200,
            labels=0.9996,
            shift=Shift(output="probability", mean_old=0.4, mean_new=0.38, max_abs_diff=0.1234),
            probability_diff=0.0123,
        ),
        labels=LabelUse(column="label", rows=1190, missing=10),
        metrics=(Metric(key="auc", title="AUC", old=0.9, new=0.85, higher_is_better=True),),
        notes=("a note",),
    )
    assert format_comparison(comparison).splitlines() == [
        "OLD  credit 1.0.0  old.bundle",
        "NEW  credit 1.1.0  new.bundle",
        "rows 1,200 from rows.csv; metrics on 1,190 labelled rows (column 'label', 10 without a "
        "label left out)",
        "",
        "                           OLD     NEW   CHANGE",
        "precision                 int8    int8",
        "bundle bytes            20,000  15,000   −25.0%",
        "load ms                    2.0     1.0     −1.0",
        "µs/row, batch of 1,200    1.50    0.75    −0.75",
        "µs, one row (median)      40.0    20.0    −20.0",
        "identical labels                         >99.9%",
        "mean probability           0.4    0.38    −0.02",
        "max |Δ probability|                       0.123",
        "mean |Δ probability|                     0.0123",
        "AUC                     0.9000  0.8500  −0.0500  worse",
        "",
        "note: a note",
        "verdict: labels agree on >99.9% of 1,200 rows; AUC 0.9000 → 0.8500 (−0.0500, worse)",
    ]
    assert comparison.to_dict()["verdict"] == comparison.verdict
