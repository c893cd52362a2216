"""``bundle compare``: score two bundles on the same rows through the device's own scorer.

The check before ``bundle publish``: how often the new model's labels agree with the old one's,
how far its predictions move, whether its task metric on labelled rows got better or worse, and
what it costs in bytes and latency. It is a report, not a gate: a worse model is a finding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgebundle.builder.data import load_rows, parse_cell, read_csv
from edgebundle.builder.timing import median_seconds
from edgebundle.runtime.bundle import Limits, VerifiedBundle, open_bundle, read_bundle_file
from edgebundle.runtime.errors import BundleError, InputError
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.signing import TrustedKeys

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Outputs = Mapping[str, npt.NDArray[Any]]

LOAD_REPEATS = 3
BATCH_REPEATS = 5
SINGLE_ROW_CALLS = 200
PROBABILITY_CLIP = 1e-15
# Changes below this share of a metric's value vanish in the 4 significant digits shown.
SAME_RELATIVE = 5e-5


class IncomparableError(BundleError):
    """The two bundles cannot be scored on the same rows: other features, task or classes."""


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Side:
    """One bundle as the device loads it, and what scoring the rows cost there."""

    path: Path
    name: str
    version: str
    precision: str
    task: str
    bundle_bytes: int
    load_ms: float
    batch_us_per_row: float
    single_row_us: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "name": self.name,
            "version": self.version,
            "precision": self.precision,
            "task": self.task,
            "bytes": self.bundle_bytes,
            "load_ms": round(self.load_ms, 3),
            "batch_us_per_row": round(self.batch_us_per_row, 3),
            "single_row_us": round(self.single_row_us, 2),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Shift:
    """How the first per-row float output moved from OLD to NEW."""

    output: str
    mean_old: float
    mean_new: float
    max_abs_diff: float

    @property
    def mean_diff(self) -> float:
        return self.mean_new - self.mean_old

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "mean_old": self.mean_old,
            "mean_new": self.mean_new,
            "mean_diff": self.mean_diff,
            "max_abs_diff": self.max_abs_diff,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Agreement:
    rows: int
    labels: float | None  # share of identical labels; None when the models output none
    shift: Shift | None  # None when there is no per-row float output (multiclass, hinge)
    # Mean over rows of ½Σ|Δp| over classes: |Δp| for a binary model, and for a multiclass
    # one the probability mass that moved, on the same 0..1 scale.
    probability_diff: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "label_agreement": self.labels,
            "shift": None if self.shift is None else self.shift.to_dict(),
            "mean_abs_probability_diff": self.probability_diff,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    key: str
    title: str
    old: float
    new: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        return self.new - self.old

    @property
    def verdict(self) -> str:
        if abs(self.change) <= SAME_RELATIVE * max(abs(self.old), abs(self.new)):
            return "same"
        return "better" if (self.change > 0) == self.higher_is_better else "worse"

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "change": self.change,
            "higher_is_better": self.higher_is_better,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelUse:
    column: str
    rows: int  # rows with a label: the metrics are computed on these
    missing: int  # rows whose label cell is empty, left out of the metrics

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "rows": self.rows, "missing": self.missing}


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    data: Path
    old: Side
    new: Side
    agreement: Agreement
    labels: LabelUse | None
    metrics: tuple[Metric, ...]  # the task's headline metric first
    notes: tuple[str, ...]

    @property
    def verdict(self) -> str:
        a = self.agreement
        parts = []
        if a.labels is not None:
            parts.append(f"labels agree on {_share(a.labels)} of {a.rows:,} rows")
        elif a.shift is not None:
            parts.append(
                f"{a.shift.output} moves by {_signed(a.shift.mean_diff)} on average "
                f"(max |Δ| {a.shift.max_abs_diff:.3g}) over {a.rows:,} rows"
            )
        if self.metrics:
            m = self.metrics[0]
            parts.append(
                f"{m.title} {_metric(m.old)} → {_metric(m.new)} "
                f"({_signed(m.change, _metric_spec(m.change))}, {m.verdict})"
            )
        elif self.labels is None:
            parts.append("no task metric without --labels")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": str(self.data),
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "agreement": self.agreement.to_dict(),
            "labels": None if self.labels is None else self.labels.to_dict(),
            "metrics": {m.key: m.to_dict() for m in self.metrics},
            "notes": list(self.notes),
            "verdict": self.verdict,
        }


# --- the comparison ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Loaded:
    path: Path
    bundle: VerifiedBundle
    size: int

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.manifest.inputs.features)


def compare_bundles(
    old_path: Path,
    new_path: Path,
    data: Path,
    trusted: TrustedKeys,
    label_column: str | None = None,
) -> Comparison:
    """Verify both bundles, score ``data`` with each through the runtime, and compare them."""
    if label_column is not None and data.suffix.lower() == ".npy":
        raise InputError(f"{data}: --labels needs a CSV file; .npy rows have no label column")
    old, new = _load(old_path, trusted), _load(new_path, trusted)
    _check_comparable(old, new)
    rows = load_rows(data, old.features)
    if len(rows) == 0:
        raise InputError(f"{data}: no rows to score")
    y, labels = None, None
    if label_column is not None:
        y = read_labels(data, label_column, old.features)
        _check_classes(y, old.manifest, label_column)
        labels = _label_use(label_column, y)
    old_out, old_side = _score(old, rows)
    new_out, new_side = _score(new, rows)
    notes = []
    if old.manifest.name != new.manifest.name:
        notes.append(f"different models: {old.manifest.name} and {new.manifest.name}")
    metrics: tuple[Metric, ...] = ()
    if y is not None:
        metrics, metric_notes = task_metrics(old.manifest.task, old_out, new_out, y)
        notes += metric_notes
    return Comparison(
        data=data,
        old=old_side,
        new=new_side,
        agreement=agreement(old_out, new_out),
        labels=labels,
        metrics=metrics,
        notes=tuple(notes),
    )


def _load(path: Path, trusted: TrustedKeys) -> _Loaded:
    data = read_bundle_file(path, Limits())
    try:
        bundle = open_bundle(data, trusted, Limits())
    except BundleError as exc:
        # open_bundle does not know the file name, and there are two bundles here
        raise BundleError(f"{path}: {exc}") from None
    return _Loaded(path=path, bundle=bundle, size=len(data))


def _check_comparable(old: _Loaded, new: _Loaded) -> None:
    if old.features != new.features:
        raise IncomparableError(
            f"{old.path} and {new.path} take different features, so they cannot score the "
            f"same rows: {_feature_difference(old.features, new.features)}"
        )
    a, b = old.manifest, new.manifest
    if a.task != b.task:
        raise IncomparableError(f"{old.path} is a {a.task} model, {new.path} a {b.task} model")
    if a.source.num_class != b.source.num_class:
        raise IncomparableError(
            f"{old.path} has {a.source.num_class} classes, {new.path} {b.source.num_class}"
        )


def _feature_difference(old: Sequence[str], new: Sequence[str]) -> str:
    for position, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        if a != b:
            return f"feature {position} is {a!r} in OLD, {b!r} in NEW"
    return f"OLD has {len(old)} features, NEW has {len(new)}"


def _label_use(column: str, y: F64) -> LabelUse:
    missing = int(np.isnan(y).sum())
    return LabelUse(column=column, rows=len(y) - missing, missing=missing)


# --- scoring and timing ------------------------------------------------------------------------


def _score(loaded: _Loaded, rows: F32) -> tuple[Outputs, Side]:
    """Outputs for ``rows`` and the timings, all through the device's scorer (one thread)."""
    load_s, scorer = median_seconds(lambda: Scorer.from_bundle(loaded.bundle), LOAD_REPEATS)
    # the median shrugs off the first, slower run, so it doubles as the warm-up
    batch_s, outputs = median_seconds(lambda: scorer.predict(rows), BATCH_REPEATS)
    singles = itertools.cycle(rows[:, None, :])
    single_s, _ = median_seconds(lambda: scorer.predict(next(singles)), SINGLE_ROW_CALLS)
    m = loaded.manifest
    side = Side(
        path=loaded.path,
        name=m.name,
        version=str(m.version),
        precision=m.precision,
        task=m.task,
        bundle_bytes=loaded.size,
        load_ms=load_s * 1e3,
        batch_us_per_row=batch_s * 1e6 / len(rows),
        single_row_us=single_s * 1e6,
    )
    return outputs, side


# --- agreement ---------------------------------------------------------------------------------


def agreement(old: Outputs, new: Outputs) -> Agreement:
    rows = len(next(iter(old.values())))
    labels = None
    if "label" in old and "label" in new:
        labels = float(np.mean(old["label"] == new["label"]))
    return Agreement(
        rows=rows,
        labels=labels,
        shift=_shift(old, new),
        probability_diff=_probability_diff(old, new),
    )


def _shift(old: Outputs, new: Outputs) -> Shift | None:
    name = next((n for n, v in old.items() if v.dtype == np.float32 and v.ndim == 1), None)
    if name is None or name not in new or new[name].ndim != 1:
        return None
    a, b = old[name].astype(np.float64), new[name].astype(np.float64)
    return Shift(
        output=name,
        mean_old=float(a.mean()),
        mean_new=float(b.mean()),
        max_abs_diff=float(np.abs(b - a).max()),
    )


def _probability_diff(old: Outputs, new: Outputs) -> float | None:
    if "probability" in old and "probability" in new:
        diff = new["probability"].astype(np.float64) - old["probability"]
        return float(np.abs(diff).mean())
    if "probabilities" in old and "probabilities" in new:
        diff = new["probabilities"].astype(np.float64) - old["probabilities"]
        return float((0.5 * np.abs(diff).sum(axis=1)).mean())
    return None


# --- labels and task metrics -------------------------------------------------------------------


def read_labels(path: Path, column: str, feature_names: Sequence[str]) -> F64:
    """``column`` of the CSV at ``path`` in row order; NaN where the cell is empty or ``nan``.

    Called after ``load_rows`` accepted the same file, so every record has the header's length.
    """
    if column in feature_names:
        raise InputError(f"--labels {column!r} is a model feature, not a label column")

    def read(header: list[str] | None, reader: CsvReader) -> list[float]:
        header = header or []
        if column not in header:
            others = [name for name in header if name not in feature_names]
            found = ", ".join(repr(n) for n in others) or "only features"
            raise InputError(f"{path}: no column {column!r} for --labels (found {found})")
        index = header.index(column)
        # labels may be any finite number, not only float32 ones
        return [
            parse_cell(path, reader.line_num, column, record[index], limit=math.inf)
            for record in reader
        ]

    return np.asarray(read_csv(path, read), dtype=np.float64)


def _check_classes(y: F64, manifest: Manifest, column: str) -> None:
    """Class labels must be class indexes, or accuracy and log-loss would be silently wrong."""
    if manifest.task not in ("binary", "multiclass"):
        return
    classes = 2 if manifest.task == "binary" else manifest.source.num_class
    known = y[~np.isnan(y)]
    bad = known[(known != np.round(known)) | (known < 0) | (known >= classes)]
    if len(bad):
        raise InputError(
            f"--labels {column!r}: {manifest.task} labels must be 0..{classes - 1}, "
            f"found {bad[0]:g}"
        )


@dataclass(frozen=True, slots=True)
class _MetricSpec:
    key: str
    title: str
    outputs: tuple[str, ...]  # the first of these a bundle has is scored
    higher_is_better: bool
    compute: Callable[[F64, npt.NDArray[Any]], float]


def auc(y: F64, score: npt.NDArray[Any]) -> float:
    """ROC AUC as the Mann–Whitney U statistic with tie-averaged ranks; NaN with one class."""
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: F64) -> F64:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(values))
    group_rank = (starts + 1 + ends) / 2
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(starts_group) - 1]
    return ranks


def log_loss(y: F64, probability: npt.NDArray[Any]) -> float:
    p = np.clip(probability.astype(np.float64), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def multiclass_log_loss(y: F64, probabilities: npt.NDArray[Any]) -> float:
    p = probabilities.astype(np.float64)[np.arange(len(y)), y.astype(np.int64)]
    return float(-np.mean(np.log(np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP))))


def accuracy(y: F64, label: npt.NDArray[Any]) -> float:
    return float(np.mean(label == y))


def rmse(y: F64, prediction: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean((prediction.astype(np.float64) - y) ** 2)))


def mae(y: F64, prediction: npt.NDArray[Any]) -> float:
    return float(np.mean(np.abs(prediction.astype(np.float64) - y)))


_ACCURACY = _MetricSpec("accuracy", "accuracy", ("label",), True, accuracy)
_TASK_METRICS: Mapping[str, tuple[_MetricSpec, ...]] = {
    "binary": (
        # rank-based, so a logitraw score serves as well as a probability
        _MetricSpec("auc", "AUC", ("probability", "score"), True, auc),
        _MetricSpec("log_loss", "log-loss", ("probability",), False, log_loss),
        _ACCURACY,
    ),
    "multiclass": (
        _MetricSpec("log_loss", "log-loss", ("probabilities",), False, multiclass_log_loss),
        _ACCURACY,
    ),
    "regression": (
        _MetricSpec("rmse", "RMSE", ("prediction",), False, rmse),
        _MetricSpec("mae", "MAE", ("prediction",), False, mae),
    ),
}


def task_metrics(
    task: str, old: Outputs, new: Outputs, y: F64
) -> tuple[tuple[Metric, ...], list[str]]:
    """Each of the task's metrics both bundles can be scored on, over the labelled rows."""
    specs = _TASK_METRICS.get(task)
    if specs is None:
        return (), [f"no task metric for {task} models: agreement only"]
    labelled = ~np.isnan(y)
    if not labelled.any():
        raise InputError("every row's label is missing: nothing to compute metrics on")
    metrics, notes = [], []
    for spec in specs:
        old_values, new_values = _output(old, spec.outputs), _output(new, spec.outputs)
        if old_values is None or new_values is None:
            continue
        a = spec.compute(y[labelled], old_values[labelled])
        b = spec.compute(y[labelled], new_values[labelled])
        if math.isnan(a) or math.isnan(b):
            notes.append(f"{spec.title} is undefined: the labelled rows hold one class only")
            continue
        metrics.append(
            Metric(
                key=spec.key, title=spec.title, old=a, new=b, higher_is_better=spec.higher_is_better
            )
        )
    return tuple(metrics), notes


def _output(outputs: Outputs, names: tuple[str, ...]) -> npt.NDArray[Any] | None:
    return next((outputs[name] for name in names if name in outputs), None)


# --- text report -------------------------------------------------------------------------------


def format_comparison(c: Comparison) -> str:
    table = [
        ("", "OLD", "NEW", "CHANGE", ""),
        *_side_rows(c),
        *_agreement_rows(c.agreement),
        *_metric_rows(c.metrics),
    ]
    lines = [
        f"OLD  {c.old.name} {c.old.version}  {c.old.path}",
        f"NEW  {c.new.name} {c.new.version}  {c.new.path}",
        f"rows {c.agreement.rows:,} from {c.data}" + _labels_text(c.labels),
        "",
        *_table(table),
        "",
        *(f"note: {note}" for note in c.notes),
        f"verdict: {c.verdict}",
    ]
    return "\n".join(lines)


def _labels_text(labels: LabelUse | None) -> str:
    if labels is None:
        return ""
    missing = f", {labels.missing:,} without a label left out" if labels.missing else ""
    return f"; metrics on {labels.rows:,} labelled rows (column {labels.column!r}{missing})"


# label, OLD, NEW, CHANGE, verdict
Row = tuple[str, str, str, str, str]


def _side_rows(c: Comparison) -> list[Row]:
    old, new = c.old, c.new
    growth = (new.bundle_bytes - old.bundle_bytes) / old.bundle_bytes
    return [
        ("precision", old.precision, new.precision, "", ""),
        (
            "bundle bytes",
            f"{old.bundle_bytes:,}",
            f"{new.bundle_bytes:,}",
            _signed(growth, ".1%"),
            "",
        ),
        _timing_row("load ms", old.load_ms, new.load_ms, ".1f"),
        _timing_row(
            f"µs/row, batch of {c.agreement.rows:,}",
            old.batch_us_per_row,
            new.batch_us_per_row,
            ".2f",
        ),
        _timing_row("µs, one row (median)", old.single_row_us, new.single_row_us, ".1f"),
    ]


def _timing_row(title: str, old: float, new: float, spec: str) -> Row:
    return (title, format(old, spec), format(new, spec), _signed(new - old, spec), "")


def _agreement_rows(a: Agreement) -> list[Row]:
    rows: list[Row] = []
    if a.labels is not None:
        rows.append(("identical labels", "", "", _share(a.labels), ""))
    if a.shift is not None:
        s = a.shift
        rows.append(
            (f"mean {s.output}", f"{s.mean_old:.4g}", f"{s.mean_new:.4g}", _signed(s.mean_diff), "")
        )
        rows.append((f"max |Δ {s.output}|", "", "", f"{s.max_abs_diff:.3g}", ""))
    if a.probability_diff is not None:
        rows.append(("mean |Δ probability|", "", "", f"{a.probability_diff:.3g}", ""))
    return rows


def _metric_rows(metrics: Sequence[Metric]) -> list[Row]:
    return [
        (
            m.title,
            _metric(m.old),
            _metric(m.new),
            _signed(m.change, _metric_spec(m.change)),
            m.verdict,
        )
        for m in metrics
    ]


def _table(rows: Sequence[Row]) -> list[str]:
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{label:<{width[0]}}  {old:>{width[1]}}  {new:>{width[2]}}  {change:>{width[3]}}"
        f"  {verdict}".rstrip()
        for label, old, new, change, verdict in rows
    ]


def _metric(value: float) -> str:
    return format(value, _metric_spec(value))


def _metric_spec(value: float) -> str:
    # four decimals keep AUC, log-loss and accuracy aligned; far from 1, significant digits
    return ".4f" if value == 0 or 1e-3 <= abs(value) < 1e6 else ".4g"


def _signed(value: float, spec: str = ".3g") -> str:
    text = format(value, "+" + spec)
    # a typographic minus reads as a sign and is as wide as the plus
    return "−" + text[1:] if text.startswith("-") else text


def _share(value: float) -> str:
    text = f"{value:.1%}"
    # 99.96% must not print as the 100.0% that means "every row"
    return ">99.9%" if value < 1 and text == "100.0%" else text
