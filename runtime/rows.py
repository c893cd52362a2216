"""Input rows in, output records out: the scoring contract of DESIGN §5.

Parsing is a pure function of one line (JSONL) or one row of cells (CSV) and yields either a
``Row`` or a ``RowError``, so one bad row costs one error record and the stream goes on.
Every value becomes float32 the way XGBoost converts its input (float64, then float32), and
NaN means missing.

JSON rows are an object keyed by feature name (a missing key or ``null`` is a missing value,
``"id"`` is echoed, any other key is refused so that a typo never turns into a silent missing
value) or an array of exactly one value per feature in manifest order.

CSV cells: empty or ``nan`` (any case) is missing; otherwise the cell must be an ASCII number
that Python's ``float()`` reads, without ``_`` separators. ``inf``/``-inf`` are accepted as
values, as XGBoost accepts them; numbers beyond float32 range become ±inf the same way.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import json_type, strict_decoder
from edgebundle.runtime.errors import CompatibilityError, InputError
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.scoring import to_python, to_records

if TYPE_CHECKING:
    from edgebundle.runtime.scoring import Scorer

ID_KEY = "id"
ERROR_KEY = "error"
_MAX_SHOWN = 32  # characters of a bad cell quoted back in an error message
_MAX_NAMED = 5  # unknown keys named in one error message


@dataclass(frozen=True, slots=True, eq=False)
class Row:
    """One parsed row: float32 ``[F]`` values (NaN = missing) and what to echo back."""

    values: npt.NDArray[np.float32]
    passthrough: dict[str, object]


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that cannot be scored; ``message`` is one line starting with where it was."""

    message: str
    passthrough: dict[str, object]


@functools.lru_cache(maxsize=16)
def json_row_parser(features: tuple[str, ...]) -> JsonRowParser:
    """The parser for ``features``, built once: an HTTP request must not rebuild the feature
    index (a dict of every feature name) each time."""
    return JsonRowParser(features)


class JsonRowParser:
    """Reads JSONL lines, or already-parsed JSON values, as rows of the model's features."""

    def __init__(self, features: Sequence[str]) -> None:
        self._features = tuple(features)
        self._index = {name: i for i, name in enumerate(self._features)}
        # A model may have a feature called "id"; then it is a feature, not an echo.
        self._echo_id = ID_KEY not in self._index

    def parse_line(self, line: bytes, where: str) -> Row | RowError:
        value = _decode_line(line, where)
        return value if isinstance(value, RowError) else self.parse_value(value, where)

    def parse_lines(self, lines: Sequence[bytes], first_lineno: int) -> list[Row | RowError]:
        """``parse_line`` of each line, numbered from ``first_lineno``, converted in one go."""
        decoded = [_decode_line(line, f"line {first_lineno + i}") for i, line in enumerate(lines)]
        good = [i for i, value in enumerate(decoded) if not isinstance(value, RowError)]
        parsed = self._parse_decoded(
            [decoded[i] for i in good],
            lambda k: f"line {first_lineno + good[k]}",
            numbers_only=_numbers_only(lines),
        )
        by_line = dict(zip(good, parsed, strict=True))
        return [
            value if isinstance(value, RowError) else by_line[i] for i, value in enumerate(decoded)
        ]

    def parse_values(
        self, values: Sequence[object], where: Callable[[int], str]
    ) -> list[Row | RowError]:
        """``parse_value`` of each decoded value (``where(i)`` names the i-th in errors)."""
        return self._parse_decoded(values, where, numbers_only=False)

    def _parse_decoded(
        self, values: Sequence[object], where: Callable[[int], str], numbers_only: bool
    ) -> list[Row | RowError]:
        """``parse_values``; ``numbers_only`` says that the JSON text of ``values`` holds no
        string, boolean or object, so that any element of an array is a number, null or array.

        Per value, ``_json_number`` costs more than decoding the JSON or scoring the row. An
        array of exactly one plain number or null per feature cannot fail it except by
        overflowing float64, so such arrays are converted together by numpy, which turns int,
        float and None into float64 just as ``_json_number`` does. Any other value takes
        ``parse_value``. Checking each element's type costs as much as numpy's conversion;
        with ``numbers_only`` it is left out, and an array nesting another shows up as a
        conversion of the wrong shape, after which every array is checked.
        """
        is_plain = self._has_one_per_feature if numbers_only else self._is_plain_array
        plain_at = [i for i, value in enumerate(values) if is_plain(value)]
        converted = self._from_plain_arrays([values[i] for i in plain_at], plain_at, where)
        if converted is None:
            return self._parse_decoded(values, where, numbers_only=False)
        parsed: list[Row | RowError | None] = [None] * len(values)
        for i, row in zip(plain_at, converted, strict=True):
            parsed[i] = row
        return [
            self.parse_value(value, where(i)) if row is None else row
            for i, (value, row) in enumerate(zip(values, parsed, strict=True))
        ]

    def _has_one_per_feature(self, value: object) -> TypeGuard[list[Any]]:
        return type(value) is list and len(value) == len(self._features)

    def _is_plain_array(self, value: object) -> TypeGuard[list[Any]]:
        # Exact types: bool is an int subclass, and JSON true is not a number.
        return self._has_one_per_feature(value) and set(map(type, value)) <= _PLAIN_TYPES

    def _from_plain_arrays(
        self, arrays: list[Any], positions: list[int], where: Callable[[int], str]
    ) -> list[Row | RowError] | None:
        """The rows of ``arrays``, or ``None`` if one of them nests arrays."""
        if not arrays:
            return []
        shape = (len(arrays), len(self._features))
        try:
            wide = np.array(arrays, dtype=np.float64)
        except OverflowError:  # an integer literal beyond float64: let each row say which
            wide = np.full(shape, np.inf)
        except ValueError:  # arrays nested unevenly
            return None
        if wide.shape != shape:  # arrays nested evenly
            return None
        out_of_range: list[bool] = np.any(np.isinf(wide), axis=1).tolist()
        with np.errstate(over="ignore"):  # beyond float32 range is ±inf, as in _to_float32
            narrow = wide.astype(np.float32)
        return [
            self.parse_value(array, where(i)) if bad else Row(values=values, passthrough={})
            for array, i, bad, values in zip(arrays, positions, out_of_range, narrow, strict=True)
        ]

    def parse_value(self, value: object, where: str) -> Row | RowError:
        passthrough: dict[str, object] = {}
        try:
            if isinstance(value, dict):
                passthrough = self._read_id(value)
                values = self._from_object(value)
            elif isinstance(value, list):
                values = self._from_array(value)
            else:
                raise InputError(f"expected a JSON object or array, got {json_type(value)}")
        except InputError as e:
            return RowError(f"{where}: {e}", passthrough)
        return Row(values=values, passthrough=passthrough)

    def _read_id(self, obj: dict[str, Any]) -> dict[str, object]:
        if not self._echo_id or ID_KEY not in obj:
            return {}
        value = obj[ID_KEY]
        if isinstance(value, (dict, list)):
            raise InputError(f"{ID_KEY!r} must be a JSON scalar, got {json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # 1e400: no JSON to echo
            raise InputError(f"{ID_KEY!r} is a number out of range")
        return {ID_KEY: value}

    def _from_object(self, obj: dict[str, Any]) -> npt.NDArray[np.float32]:
        unknown = [k for k in obj if k not in self._index and not (k == ID_KEY and self._echo_id)]
        if unknown:
            names = ", ".join(repr(k) for k in unknown[:_MAX_NAMED])
            more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
            raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {names}{more}")
        values = [math.nan] * len(self._features)
        for name, value in obj.items():
            if name in self._index:
                values[self._index[name]] = _json_number(value, name)
        return _to_float32(values)

    def _from_array(self, array: list[Any]) -> npt.NDArray[np.float32]:
        if len(array) != len(self._features):
            raise InputError(f"expected {len(self._features)} values, got {len(array)}")
        return _to_float32(
            [_json_number(v, name) for v, name in zip(array, self._features, strict=True)]
        )


def _decode_line(line: bytes, where: str) -> object:
    """The line's JSON value, or the ``RowError`` for a blank or undecodable line."""
    if not line.strip():
        return RowError(f"{where}: blank line", {})
    try:
        return _loads_row(line)
    except InputError as e:
        return RowError(f"{where}: {e}", {})


def _numbers_only(lines: Sequence[bytes]) -> bool:
    """Whether no line holds a JSON string, object or boolean: no ``"``, ``{``, ``t`` or ``f``."""
    text = b"".join(lines)
    return not any(mark in text for mark in _NOT_NUMBERS)


def _loads_row(line: bytes) -> object:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 (byte {e.start})") from None
    try:
        return _decode_json(text)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:  # ints beyond the interpreter's digit limit
        raise InputError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply") from None


_PLAIN_TYPES = frozenset({float, int, type(None)})
_NOT_NUMBERS = (b'"', b"{", b"t", b"f")
_JSON_SPACE = " \t\n\r"

_DECODER = strict_decoder(
    lambda key: InputError(f"duplicate key {key!r}"),
    lambda token: InputError(f"{token} is not a JSON number; leave the value out or use null"),
)


def _decode_json(text: str) -> object:
    """``_DECODER.decode(text)``: the same value, or the same error.

    ``decode`` is ``raw_decode`` with two regular-expression matches for the JSON whitespace
    around the value, ~3% of the cost of decoding a row; a line rarely has any.
    """
    if text[:1] in _JSON_SPACE:  # also "": decode says why it is no JSON
        return _DECODER.decode(text)
    value, end = _DECODER.raw_decode(text)
    if text[end:].strip(_JSON_SPACE):
        return _DECODER.decode(text)  # says "Extra data" where it starts
    return value


def _json_number(value: object, feature: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"feature {feature!r}: expected a number, got {json_type(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond float64; 1e400 already parsed as inf
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"feature {feature!r}: number out of range")
    return number


def _to_float32(values: Sequence[float] | Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    # Each Python float (a float64) is rounded once to float32, as XGBoost converts its input;
    # beyond float32 range a value becomes ±inf, as there.
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np.float32)


class CsvRowParser:
    """Reads CSV rows by the header's column names; non-feature columns are passed through."""

    def __init__(
        self, header: Sequence[str], features: Sequence[str], reserved: Collection[str]
    ) -> None:
        """Check the header row; ``reserved`` are the output's own column names."""
        _check_header(header, features, reserved)
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
        return Row(values=_to_float32(values), passthrough=passthrough)

    def parse_rows(
        self, rows: Sequence[tuple[Sequence[str], str] | RowError]
    ) -> list[Row | RowError]:
        """``parse_cells`` of each ``(cells, where)``, converted to float32 in one go; a
        ``RowError`` (a record the CSV reader could not read) stays as it is."""
        read = [row if isinstance(row, RowError) else self._read_cells(*row) for row in rows]
        good = [item for item in read if not isinstance(item, RowError)]
        narrow = iter(_to_float32([values for values, _ in good]))
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
            values = [_csv_number(cells[j], name) for name, j in self._feature_columns]
        except InputError as e:
            return RowError(f"{where}: {e}", passthrough)
        return values, passthrough


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


def _csv_number(cell: str, column: str) -> float:
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


Observer = Callable[[npt.NDArray[np.float32], Mapping[str, npt.NDArray[Any]]], None]


def score_rows(
    scorer: Scorer, parsed: Sequence[Row | RowError], observe: Observer | None = None
) -> list[dict[str, object]]:
    """One output record per parsed row, in order, scoring all good rows in one call;
    ``observe`` (drift monitoring) sees the scored rows and their outputs."""
    x = stack_rows(parsed, scorer.num_features)
    outputs = scorer.predict(x)
    if observe is not None and len(x):
        observe(x, outputs)
    return answer_records(parsed, outputs)


def stack_rows(parsed: Sequence[Row | RowError], num_features: int) -> npt.NDArray[np.float32]:
    """The float32 ``[N, F]`` input of the good rows among ``parsed``, in order."""
    good = [row for row in parsed if isinstance(row, Row)]
    if len(good) == 1:  # a single-row request: a view, not a stack (~10 µs of numpy calls)
        return good[0].values[None, :]
    if good:
        return np.stack([row.values for row in good])
    return np.zeros((0, num_features), dtype=np.float32)


def answer_records(
    parsed: Sequence[Row | RowError], outputs: Mapping[str, npt.NDArray[Any]]
) -> list[dict[str, object]]:
    """One record per parsed row: ``outputs`` (of ``stack_rows(parsed)``) for a good row, with
    its passthrough first; the error record for a bad one."""
    scored = iter(to_records(outputs))
    return [
        {**row.passthrough, **next(scored)} if isinstance(row, Row) else error_record(row)
        for row in parsed
    ]


def error_record(error: RowError) -> dict[str, object]:
    return {**error.passthrough, ERROR_KEY: error.message}


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_jsonl(records: Iterable[dict[str, object]]) -> bytes:
    """One compact JSON object per line; non-ASCII is escaped, so any echoed id is writable."""
    return b"".join(_ENCODER.encode(record).encode("ascii") + b"\n" for record in records)


def encode_answers_jsonl(
    parsed: Sequence[Row | RowError], outputs: Mapping[str, npt.NDArray[Any]]
) -> bytes:
    """``encode_jsonl(answer_records(parsed, outputs))``, without a dict per row.

    Encoding a record at a time costs more than scoring it. Here each output is rendered a
    column at a time, and a good row's line is its echoed members (if any), then its outputs.
    """
    if any(
        isinstance(row, Row) and not outputs.keys().isdisjoint(row.passthrough) for row in parsed
    ):
        # An output named like an echoed key takes that key's place: leave it to the encoder.
        return encode_jsonl(answer_records(parsed, outputs))
    scored = iter(_json_members(outputs))
    lines = [
        _ENCODER.encode(error_record(row))
        if isinstance(row, RowError)
        else "{" + _echoed_members(row.passthrough) + next(scored) + "}"
        for row in parsed
    ]
    return "".join(line + "\n" for line in lines).encode("ascii")


def _echoed_members(passthrough: dict[str, object]) -> str:
    """The passthrough's JSON object members, with the comma that separates them from the
    outputs' (a model has at least one output)."""
    return _ENCODER.encode(passthrough)[1:-1] + "," if passthrough else ""


def _json_members(outputs: Mapping[str, npt.NDArray[Any]]) -> list[str]:
    """Per row, the JSON object members ``"name":value`` of its outputs, as ``_ENCODER``
    writes ``to_records(outputs)``."""
    keys = [_ENCODER.encode(name) + ":" for name in outputs]
    columns = [
        [key + text for text in _json_values(value)]
        for key, value in zip(keys, outputs.values(), strict=True)
    ]
    return list(map(",".join, zip(*columns, strict=True)))


def _json_values(value: npt.NDArray[Any]) -> list[str]:
    """The JSON text of each row's value in an ``[N]`` or ``[N, C]`` output."""
    items = to_python(value)
    if value.ndim == 1:
        return _json_scalars(items)
    return ["[" + ",".join(_json_scalars(row)) + "]" for row in items]


def _json_scalars(items: list[Any]) -> list[str]:
    # The encoder writes an int or a finite float as its repr; to_python gives no other
    # numbers, and None (a non-finite float) for null.
    if None in items:
        return ["null" if item is None else repr(item) for item in items]
    return list(map(repr, items))


class CsvWriter:
    """CSV output: passthrough columns, then output columns (lists expanded), then ``error``."""

    def __init__(self, passthrough_columns: Sequence[str], outputs: Sequence[OutputSpec]) -> None:
        self._passthrough = tuple(passthrough_columns)
        self._outputs = tuple(outputs)
        self.columns = (*self._passthrough, *output_columns(outputs), ERROR_KEY)

    def header(self) -> bytes:
        return self._encode([list(self.columns)])

    def encode(self, records: Iterable[dict[str, object]]) -> bytes:
        return self._encode(self._cells(record) for record in records)

    def _cells(self, record: dict[str, object]) -> list[object]:
        cells: list[object] = [record.get(name, "") for name in self._passthrough]
        for spec in self._outputs:
            value = record.get(spec.name)
            if len(spec.shape) == 2:
                cells.extend(value if isinstance(value, list) else [None] * spec.shape[1])
            else:
                cells.append(value)
        cells.append(record.get(ERROR_KEY))
        return cells

    @staticmethod
    def _encode(rows: Iterable[Sequence[object]]) -> bytes:
        text = io.StringIO()
        # "\n" like the JSONL output: one record per line for line-oriented consumers.
        csv.writer(text, lineterminator="\n").writerows(rows)
        return text.getvalue().encode("utf-8")


def output_columns(outputs: Sequence[OutputSpec]) -> list[str]:
    """CSV column names of the outputs: ``[N, C]`` outputs expand to ``name_0`` .. ``name_C-1``."""
    columns: list[str] = []
    for spec in outputs:
        if len(spec.shape) == 1:
            columns.append(spec.name)
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            columns.extend(f"{spec.name}_{i}" for i in range(spec.shape[1]))
        else:
            raise CompatibilityError(
                f"output {spec.name!r} has shape {list(spec.shape)}; CSV needs [N] or [N, C]"
            )
    return columns
