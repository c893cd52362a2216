"""Verify both bundles, check they can score the same rows, and score them through the
device's own scorer, timing it as a device would see it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgebundle.builder.compare.agreement import agreement
from edgebundle.builder.compare.labels import check_classes, label_use, read_labels
from edgebundle.builder.compare.metrics import Metric, Outputs, task_metrics
from edgebundle.builder.compare.results import Comparison, Side
from edgebundle.builder.data import load_rows
from edgebundle.builder.timing import median_seconds
from edgebundle.runtime.bundle import Limits, VerifiedBundle, open_bundle, read_bundle_file
from edgebundle.runtime.errors import BundleError, InputError
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.signing import TrustedKeys

LOAD_REPEATS = 3
BATCH_REPEATS = 5
SINGLE_ROW_CALLS = 200


class IncomparableError(BundleError):
    """The two bundles cannot be scored on the same rows: other features, task or classes."""


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
        check_classes(y, old.manifest, label_column)
        labels = label_use(label_column, y)
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


def _score(loaded: _Loaded, rows: npt.NDArray[np.float32]) -> tuple[Outputs, Side]:
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
