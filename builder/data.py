"""Read the user's check rows (``bundle build --data``): CSV with a header, or ``.npy``."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.csv_rows import csv_number

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

F32 = npt.NDArray[np.float32]
_T = TypeVar("_T")
_F32_MAX = float(np.finfo(np.float32).max)


def load_rows(path: Path, feature_names: Sequence[str]) -> F32:
    """Rows in model feature order as float32, NaN = missing; a bad file raises InputError."""
    if path.suffix.lower() == ".npy":
        return _load_npy(path, len(feature_names))
    return _load_csv(path, feature_names)


def _load_npy(path: Path, num_features: int) -> F32:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if array.ndim != 2 or array.shape[1] != num_features:
        raise InputError(f"{path}: expected shape [rows, {num_features}], got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    rows: F32 = array.astype(np.float32)
    if np.isinf(rows).any():
        raise InputError(f"{path}: contains infinite values (or values too large for float32)")
    return rows


def _load_csv(path: Path, feature_names: Sequence[str]) -> F32:
    def read(header: list[str] | None, reader: CsvReader) -> list[list[float]]:
        if header is None:
            raise InputError(f"{path}: empty file, expected a header row")
        columns = _columns(path, header, feature_names)
        return [_parse_row(path, reader.line_num, record, header, columns) for record in reader]

    rows = read_csv(path, read)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(feature_names))


def read_csv(path: Path, read: Callable[[list[str] | None, CsvReader], _T]) -> _T:
    """``read(header, reader)`` on the UTF-8 CSV file at ``path`` (header None: empty file);
    an unreadable file, bad UTF-8 or bad CSV raises InputError."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            return read(next(reader, None), reader)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None


def _columns(path: Path, header: list[str], feature_names: Sequence[str]) -> list[int]:
    if len(set(header)) != len(header):
        raise InputError(f"{path}: duplicate column names in the header")
    missing = [name for name in feature_names if name not in header]
    if missing:
        raise InputError(f"{path}: header lacks model features: {', '.join(missing[:10])}")
    return [header.index(name) for name in feature_names]


def _parse_row(
    path: Path, line: int, record: list[str], header: list[str], columns: list[int]
) -> list[float]:
    if len(record) != len(header):
        raise InputError(f"{path} line {line}: {len(record)} cells, header has {len(header)}")
    return [parse_cell(path, line, header[c], record[c]) for c in columns]


def parse_cell(path: Path, line: int, column: str, text: str, limit: float = _F32_MAX) -> float:
    """A cell's number, NaN when empty; refused beyond ``limit`` (float32's range: features)."""
    try:
        value = csv_number(text, column)
    except InputError as exc:
        raise InputError(f"{path} line {line}: {exc}") from None
    if math.isinf(value) or abs(value) > limit:
        raise InputError(f"{path} line {line}: column {column!r}: infinite or too large: {text!r}")
    return value
