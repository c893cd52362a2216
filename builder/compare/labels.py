"""``--labels``: the label column of the rows' CSV, checked against the task before any metric."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgebundle.builder.compare.metrics import F64
from edgebundle.builder.data import parse_cell, read_csv
from edgebundle.runtime.errors import InputError
from edgebundle.runtime.manifest import Manifest

if TYPE_CHECKING:
    from _csv import Reader as CsvReader


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelUse:
    column: str
    rows: int  # rows with a label: the metrics are computed on these
    missing: int  # rows whose label cell is empty, left out of the metrics

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "rows": self.rows, "missing": self.missing}


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


def check_classes(y: F64, manifest: Manifest, column: str) -> None:
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


def label_use(column: str, y: F64) -> LabelUse:
    missing = int(np.isnan(y).sum())
    return LabelUse(column=column, rows=len(y) - missing, missing=missing)
