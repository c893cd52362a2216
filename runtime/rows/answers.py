"""Answers: one output record per parsed row, in order, rendered as JSON lines or CSV.

A good row's record is its passthrough followed by its outputs; a bad row's is its passthrough
and ``error``. ``encode_answers_jsonl`` writes the bytes that encoding those records would,
without building them: rendering costs more than scoring on the stdin path.
"""

from __future__ import annotations

import csv
import io
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import CompatibilityError
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.rows import render
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.scoring import to_python, to_records

if TYPE_CHECKING:
    from edgebundle.runtime.scoring import Scorer

ERROR_KEY = "error"

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

# The usual batch echoes nothing and has no error; asking is in C (map), not a loop per row.
_ECHOED = operator.attrgetter("passthrough")


def encode_jsonl(records: Iterable[dict[str, object]]) -> bytes:
    """One compact JSON object per line; non-ASCII is escaped, so any echoed id is writable."""
    return b"".join(_ENCODER.encode(record).encode("ascii") + b"\n" for record in records)


def encode_answers_jsonl(
    parsed: Sequence[Row | RowError], outputs: Mapping[str, npt.NDArray[Any]]
) -> bytes:
    """``encode_jsonl(answer_records(parsed, outputs))``, without a dict per row.

    Encoding a record at a time costs more than scoring it. Here each output is rendered a
    column at a time (by orjson, in C, where ``render`` can), and a good row's line is its
    echoed members (if any), then its outputs.
    """
    echoing = any(map(_ECHOED, parsed))
    if echoing and any(
        isinstance(row, Row) and not outputs.keys().isdisjoint(row.passthrough) for row in parsed
    ):
        # An output named like an echoed key takes that key's place: leave it to the encoder.
        return encode_jsonl(answer_records(parsed, outputs))
    if render.renderable(outputs.values()):
        rendered = render.json_lines(outputs, _json_scalars)
        if echoing or _any_error(parsed):
            return _with_echoes_and_errors(parsed, rendered)
        return rendered
    scored = iter(_json_members(outputs))
    lines = [
        _ENCODER.encode(error_record(row))
        if isinstance(row, RowError)
        else "{" + _echoed_members(row.passthrough) + next(scored) + "}"
        for row in parsed
    ]
    return "".join(line + "\n" for line in lines).encode("ascii")


def _any_error(parsed: Sequence[Row | RowError]) -> bool:
    return RowError in set(map(type, parsed))


def _with_echoes_and_errors(parsed: Sequence[Row | RowError], rendered: bytes) -> bytes:
    """The answer lines, given the good rows' lines without their echoed members."""
    lines = iter(rendered.split(b"\n"))
    answers = [
        _ENCODER.encode(error_record(row)).encode("ascii")
        if isinstance(row, RowError)
        else b"{" + _echoed_members(row.passthrough).encode("ascii") + next(lines)[1:]
        for row in parsed
    ]
    return b"\n".join(answers) + b"\n"


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

    def encode_answers(
        self, parsed: Sequence[Row | RowError], outputs: Mapping[str, npt.NDArray[Any]]
    ) -> bytes:
        """``encode(answer_records(parsed, outputs))``; a column at a time when no column
        passes through and no row is an error: then every cell is a number or empty, which
        the ``csv`` module writes as ``repr`` writes it, unquoted (and orjson, in C, where
        ``render`` can)."""
        if self._passthrough or _any_error(parsed):
            return self.encode(answer_records(parsed, outputs))
        values = [outputs[spec.name] for spec in self._outputs]
        if render.renderable(values):
            return render.csv_lines(values, _csv_numbers)
        columns: list[list[str]] = []
        for value in values:
            if value.ndim == 1:
                columns.append(_csv_numbers(to_python(value)))
            else:
                columns.extend(map(_csv_numbers, to_python(value.T)))
        # The error column, empty, ends each line.
        lines = zip(*columns, strict=True)
        return "".join(",".join(cells) + ",\n" for cells in lines).encode("ascii")

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


def _csv_numbers(items: list[Any]) -> list[str]:
    # As the csv module writes them: an int or a float by repr, None empty.
    if None in items:
        return ["" if item is None else repr(item) for item in items]
    return list(map(repr, items))


def output_columns(outputs: Sequence[OutputSpec]) -> list[str]:
    """CSV column names of the outputs: ``[N, C]`` outputs expand to ``name_0`` .. ``name_C-1``,
    or to ``name_COLUMN`` by the manifest's column names (``prediction_quantile_0.9``)."""
    columns: list[str] = []
    for spec in outputs:
        if len(spec.shape) == 1:
            columns.append(spec.name)
        elif len(spec.shape) == 2 and spec.shape[1] > 0:
            suffixes = spec.columns or tuple(str(i) for i in range(spec.shape[1]))
            columns.extend(f"{spec.name}_{suffix}" for suffix in suffixes)
        else:
            raise CompatibilityError(
                f"output {spec.name!r} has shape {list(spec.shape)}; CSV needs [N] or [N, C]"
            )
    return columns
