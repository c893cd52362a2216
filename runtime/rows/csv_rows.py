"""CSV rows: cells read by the header's column names; columns that are not features pass through.

A cell that is empty or ``nan`` (any case) is missing; otherwise it must be an ASCII number
that Python's ``float()`` reads, without ``_`` separators. ``inf``/``-inf`` are accepted as
values, as XGBoost accepts them; numbers beyond float32 range become ±inf the same way.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.categories import CategoryNames, category_code, code_tables
from edgebundle.runtime.rows.parsed import Row, RowError, to_float32

_MAX_SHOWN = 32  # characters of a bad cell quoted back in an error message


class CsvRowParser:
    """Reads CSV rows by the header's column names; non-feature columns are passed through."""

    def __init__(
        self,
        header: Sequence[str],
        features: Sequence[str],
        reserved: Collection[str],
        names: CategoryNames = (),
    ) -> None:
        """Check the header row; ``reserved`` are the output's own column names; ``names``
        the category names a categorical feature's cells may hold instead of numbers."""
        _check_header(header, features, reserved)
        self._codes = code_tables(names)
        self._width = len(header)
        position = {name: j for j, name in enumerate(header)}
        self._feature_columns = [(name, position[name]) for name in features]
        feature_set = set(features)
        self.passthrough_columns = tuple(name for name in header if name not in feature_set)
        self._passthrough_positions = [position[name] for name in self.passthrough_columns]

    def parse_cells(self, cells: Sequence[str], where: str) -> Row | RowError:
        read = self._read_cells(cells, where)
        if isinstance(read, RowError):
            return read
        values, passthrough = read
        return Row(values=to_float32(values), passthrough=passthrough)

    def parse_rows(
        self, rows: Sequence[tuple[Sequence[str], str] | RowError]
    ) -> list[Row | RowError]:
        """``parse_cells`` of each ``(cells, where)``, converted to float32 in one go; a
        ``RowError`` (a record the CSV reader could not read) stays as it is."""
        read = [row if isinstance(row, RowError) else self._read_cells(*row) for row in rows]
        good = [item for item in read if not isinstance(item, RowError)]
        narrow = iter(to_float32([values for values, _ in good]))
        return [
            item if isinstance(item, RowError) else Row(values=next(narrow), passthrough=item[1])
            for item in read
        ]

    def _read_cells(
        self, cells: Sequence[str], where: str
    ) -> tuple[list[float], dict[str, object]] | RowError:
        """The row's feature values as floats (NaN = missing) and its passthrough cells."""
        if not cells:
            return RowError(f"{where}: blank line", {})
        if _has_surrogates(cells):
            return RowError(f"{where}: not valid UTF-8", {})
        if len(cells) != self._width:
            return RowError(f"{where}: expected {self._width} cells, got {len(cells)}", {})
        passthrough: dict[str, object] = {
            name: cells[j]
            for name, j in zip(self.passthrough_columns, self._passthrough_positions, strict=True)
        }
        try:
            values = [self._number(cells[j], name) for name, j in self._feature_columns]
        except InputError as e:
            return RowError(f"{where}: {e}", passthrough)
        return values, passthrough


    def _number(self, cell: str, column: str) -> float:
        try:
            return csv_number(cell, column)
        except InputError:
            if column not in self._codes:
                raise
            return category_code(self._codes, column, cell.strip())


def _check_header(
    header: Sequence[str], features: Sequence[str], reserved: Collection[str]
) -> None:
    if _has_surrogates(header):
        raise InputError("CSV header is not valid UTF-8")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"CSV header repeats column {name!r}")
        seen.add(name)
    missing = [name for name in features if name not in seen]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise InputError(f"CSV header lacks feature column{plural} {names}")
    clashing = [name for name in header if name in reserved and name not in features]
    if clashing:
        raise InputError(f"CSV column {clashing[0]!r} clashes with an output column")


def csv_number(cell: str, column: str) -> float:
    """A CSV cell's number, NaN when blank: the one rule for cells on the device and on the
    workstation (``bundle build --data``, ``bundle compare``)."""
    text = cell.strip()
    if not text:
        return math.nan
    # float() also reads "1_000" and non-ASCII digits; neither is a number in a CSV file.
    if text.isascii() and "_" not in text:
        try:
            return float(text)  # "nan" reads as NaN, which is missing
        except ValueError:
            pass
    shown = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    raise InputError(f"column {column!r}: expected a number, got {shown!r}")


def _has_surrogates(cells: Iterable[str]) -> bool:
    # Input lines are decoded with surrogateescape, so bytes that are not UTF-8 show up here.
    try:
        "".join(cells).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
