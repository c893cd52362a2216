"""CSV rows: cells read by the header's column names; columns that are not features pass through.

A cell that is empty or ``nan`` (any case) is missing; otherwise it must be an ASCII number
that Python's ``float()`` reads, without ``_`` separators. ``inf``/``-inf`` are accepted as
values, as XGBoost accepts them; numbers beyond float32 range become ±inf the same way. A
feature with no column in the header is missing in every row, as a key left out of a JSON
object is; ``notes`` says so, once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from itertools import chain
from operator import itemgetter

import numpy as np
import numpy.typing as npt
import orjson

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.categories import CategoryNames, category_code, code_tables
from edgebundle.runtime.rows.parsed import Row, RowError, to_float32

_MAX_SHOWN = 32  # characters of a bad cell quoted back in an error message
# What a well-formed numeric cell is made of: digits, sign, point, exponent, and the letters of
# nan, inf and infinity. A batch whose feature cells hold nothing else (no space, no "_", no
# non-ASCII digit: what csv_number treats apart from float()) is converted by float() alone.
_NUMBER_BYTES = b"0123456789+-.eEnNaAiIfFtTyY"
# What a batch read as JSON numbers is made of: the bytes of JSON's number grammar (no letter
# but the exponent's, so no null, true, false, nan or inf typed in a cell; no space, quote or
# bracket), the cells' commas and the lines' newlines.
_JSON_NUMBER_BYTES = b"0123456789+-.eE,\n"


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
        self._num_features = len(features)
        position = {name: j for j, name in enumerate(header)}
        self.missing_features = tuple(name for name in features if name not in position)
        self.notes = _missing_note(self.missing_features, header)
        self._feature_columns = [(name, position[name]) for name in features if name in position]
        # Where each present feature's value goes in a row (all of them, in order, when no
        # feature is missing).
        self._slots = [i for i, name in enumerate(features) if name in position]
        feature_set = set(features)
        self.passthrough_columns = tuple(name for name in header if name not in feature_set)
        self._passthrough_positions = [position[name] for name in self.passthrough_columns]
        self._feature_positions = [j for _, j in self._feature_columns]
        self._pick_features = (
            None
            if self._feature_positions == list(range(self._width))
            else _picker(self._feature_positions)
        )
        self._pick_passthrough = _picker(self._passthrough_positions)

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

    def parse_plain_lines(self, lines: Sequence[str]) -> list[Row] | None:
        """The rows of ``lines`` (one record each, no line ending) when every one is plain:
        no quote, the header's cell count, feature cells that are numbers or empty. Then
        what ``parse_cells`` gives, without a Python call per cell; ``None`` otherwise, and
        the lines are for the ``csv`` module and ``parse_rows``, which say what is wrong.
        """
        plain = self._plain_values(lines)
        if plain is None:
            return None
        values, cells = plain
        if not self.passthrough_columns:
            return [Row(values=row, passthrough={}) for row in values]
        names = self.passthrough_columns
        return [
            Row(values=row, passthrough=dict(zip(names, self._pick_passthrough(c), strict=True)))
            for row, c in zip(values, cells, strict=True)
        ]

    def parse_plain_numbers(self, lines: Sequence[str]) -> npt.NDArray[np.float32] | None:
        """``parse_plain_lines`` as one float32 ``[N, F]`` array, when no column passes
        through (then a row is its values alone); ``None`` whenever that gives ``None``."""
        if self.passthrough_columns:
            return None
        plain = self._plain_values(lines)
        return None if plain is None else plain[0]

    def parse_numbers_bytes(self, lines: Sequence[bytes]) -> npt.NDArray[np.float32] | None:
        """``parse_plain_numbers`` of ``lines`` (raw, one record each, no line ending), read
        as JSON arrays by orjson; ``None`` whenever that cannot be sure it gives the same
        array bit for bit, and then ``parse_plain_numbers`` reads them (or says why not).

        orjson reads a batch of numbers ~2.5x faster than ``loadtxt`` and, unlike it, without
        decoding the lines to str first; ``_read_json_numbers`` says why its values are
        ``float()``'s. A feature's column is then put in its slot, as ``_plain_values`` does.
        """
        if self.passthrough_columns or not lines or not all(lines):
            return None
        wide = _read_json_numbers(lines, self._width)
        if wide is None:
            return None
        if self._pick_features is not None:
            wide = wide[:, self._feature_positions]
        with np.errstate(over="ignore"):  # beyond float32 range is ±inf, as in to_float32
            return self._in_slots(wide.astype(np.float32))

    def _plain_values(
        self, lines: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], list[list[str]]] | None:
        """The float32 values of plain ``lines`` and their cells (split only when a column
        passes through)."""
        text = "\n".join(lines)
        if '"' in text or "\r" in text or not all(lines) or _has_surrogates((text,)):
            return None
        cells: list[list[str]] = []
        if self._pick_features is None:  # every column a feature: the text is all numbers
            numbers, allowed, columns = text, _NUMBER_BYTES + b",\n", None
        else:
            cells = [line.split(",") for line in lines]
            if any(len(row) != self._width for row in cells):
                return None
            numbers = "".join(chain.from_iterable(map(self._pick_features, cells)))
            allowed, columns = _NUMBER_BYTES, self._feature_positions
        if not numbers.isascii() or numbers.encode("ascii").translate(None, allowed):
            return None
        wide = _read_numbers(text, columns, (len(lines), len(self._slots)))
        if wide is None:
            return None
        with np.errstate(over="ignore"):  # beyond float32 range is ±inf, as in to_float32
            return self._in_slots(wide.astype(np.float32)), cells

    def _in_slots(self, present: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The rows of the present features' columns (in feature order) with a NaN column
        for each feature the header has none for."""
        if not self.missing_features:
            return present
        values = np.full((len(present), self._num_features), np.nan, dtype=np.float32)
        values[:, self._slots] = present
        return values

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
            present = [self._number(cells[j], name) for name, j in self._feature_columns]
        except InputError as e:
            return RowError(f"{where}: {e}", passthrough)
        if not self.missing_features:
            return present, passthrough
        values = [math.nan] * self._num_features
        for slot, value in zip(self._slots, present, strict=True):
            values[slot] = value
        return values, passthrough

    def _number(self, cell: str, column: str) -> float:
        try:
            return csv_number(cell, column)
        except InputError:
            if column not in self._codes:
                raise
            return category_code(self._codes, column, cell.strip())


def _read_numbers(
    text: str, columns: Sequence[int] | None, shape: tuple[int, int]
) -> npt.NDArray[np.float64] | None:
    """The numbers in ``columns`` (all when ``None``: then every line must have as many) of
    ``text``'s lines, whose cells there are ``_NUMBER_BYTES`` or empty, read as
    ``csv_number`` reads them; ``None`` if one is no number.

    numpy's ``loadtxt`` reads them in C, by the routine ``float()`` reads with (CPython's
    ``PyOS_string_to_double``; ``float()`` adds ``_`` separators and surrounding whitespace,
    neither of which can be in these cells). It refuses an empty cell: each becomes ``nan``
    first, as ``csv_number`` reads it.
    """
    if columns is not None and not columns:  # no feature has a column: nothing to read
        return np.zeros(shape)
    filled = _fill_empty(text.encode(), _NAN)
    try:
        wide = np.loadtxt(
            filled.decode("utf-8").split("\n"),
            dtype=np.float64,
            delimiter=",",
            comments=None,
            usecols=columns,
            ndmin=2,
        )
    except ValueError:  # "e5", "in": letters of numbers that make none; a cell too many
        return None
    return wide if wide.shape == shape else None


def _read_json_numbers(lines: Sequence[bytes], width: int) -> npt.NDArray[np.float64] | None:
    """The ``[len(lines), width]`` numbers of ``lines`` (none empty), read as ``csv_number``
    reads them, when every cell is a JSON number or empty (NaN); ``None`` otherwise.

    The batch becomes one JSON array of arrays, a line each, ``null`` in each empty cell.
    Exact because: with only the bytes allowed (no letter but ``e``, no space, quote or
    bracket) orjson can read nothing but numbers there, so a row is a line and its values
    are its cells; the text of a JSON number is one ``float()`` reads too, and to the same
    value: orjson rounds a float correctly, as ``float()`` does, and refuses one beyond
    float64 (where ``float()`` gives ±inf: ``None``, and ``loadtxt`` says inf); an integer
    it keeps exact within 64 bits (numpy then rounds it to float64 as ``float()`` rounds its
    text) and reads as a float beyond. The one difference is the cell ``-0``, an integer 0
    to orjson and -0.0 to ``float()``: a batch holding it is ``None``.
    """
    body = b"\n".join(lines)
    if body.translate(None, _JSON_NUMBER_BYTES):
        return None
    text = _fill_empty(body, _NULL)
    try:
        rows = orjson.loads(b"[[" + text.replace(b"\n", b"],[") + b"]]")
    except orjson.JSONDecodeError:  # "+1", ".5", "1.", "01", "1e400", "1-2": for loadtxt
        return None
    if len(rows) != len(lines) or set(map(len, rows)) != {width}:
        return None
    count = len(lines) * width
    wide = np.fromiter(chain.from_iterable(rows), np.float64, count).reshape(len(lines), width)
    if not wide.all() and _has_minus_zero(body):  # only a zero can be a "-0" cell
        return None
    return wide


def _fill_empty(text: bytes, token: npt.NDArray[np.uint8]) -> bytes:
    """``text`` with ``token`` in each empty cell, found with numpy (``bytes.replace`` is
    slow at finding ``,,`` among this many commas, and would miss the second of ``,,,``)."""
    padded, delimiter = _delimited(text)
    empty = np.flatnonzero(delimiter[:-1] & delimiter[1:]) + 1  # where an empty cell starts
    filled = np.insert(padded, np.repeat(empty, len(token)), np.tile(token, len(empty)))
    return filled[1:-1].tobytes()


def _has_minus_zero(text: bytes) -> bool:
    """Whether a cell of ``text`` is exactly ``-0``."""
    padded, delimiter = _delimited(text)
    minus_zero = (padded[1:-2] == _MINUS) & (padded[2:-1] == _ZERO)
    return bool((delimiter[:-3] & minus_zero & delimiter[3:]).any())


def _delimited(text: bytes) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """``text`` between two newlines as bytes, and where its ``,`` and newlines are: a cell
    is what lies between two of them."""
    padded = np.frombuffer(b"\n" + text + b"\n", np.uint8)
    return padded, (padded == _COMMA) | (padded == _NEWLINE)


_COMMA, _NEWLINE, _MINUS, _ZERO = ord(","), ord("\n"), ord("-"), ord("0")
_NAN = np.frombuffer(b"nan", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


def _picker(positions: Sequence[int]) -> Callable[[Sequence[str]], Sequence[str]]:
    """The cells at ``positions``, as a sequence whatever their number (``itemgetter`` of one
    position gives the item itself)."""
    if len(positions) == 1:
        [only] = positions
        return lambda cells: (cells[only],)
    if not positions:
        return lambda cells: ()
    return itemgetter(*positions)


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
    clashing = [name for name in header if name in reserved and name not in features]
    if clashing:
        raise InputError(f"CSV column {clashing[0]!r} clashes with an output column")


def _missing_note(missing: Sequence[str], header: Sequence[str]) -> tuple[str, ...]:
    """One line saying which features have no column, with the column that differs from a
    feature's name only in case, if one does (names are case-sensitive)."""
    if not missing:
        return ()
    by_fold = {name.casefold(): name for name in header}
    named = []
    for name in missing:
        alike = by_fold.get(name.casefold())
        hint = f" (column {alike!r} differs only in case; names are case-sensitive)"
        named.append(f"{name!r}{hint if alike else ''}")
    plural = len(missing) > 1
    return (
        f"the CSV header has no column for feature{'s' if plural else ''} {', '.join(named)}: "
        f"{'they are' if plural else 'it is'} missing in every row",
    )


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
