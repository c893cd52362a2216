"""MLflow-style ``POST /invocations`` bodies in, ``{"predictions": [records]}`` out.

JSON bodies hold exactly one of:

- ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``columns`` optional: then
  each row is in manifest feature order; an ``index`` is accepted and ignored),
- ``{"dataframe_records": [{...}, ...]}``,
- ``{"instances": [...]}`` (objects keyed by feature, or arrays in feature order),
- ``{"inputs": ...}``: the same forms as ``instances``, or a columnar object
  ``{feature: [values]}``.

A ``text/csv`` body is a header row of column names, then one row per record. Each row is read
by the same parsers as stdin scoring (``rows.py``), so a missing key, ``null`` or an empty CSV
cell is a missing value, ``id`` is echoed, an unknown key is refused, and records render alike.

One bad row fails the whole request with a 422 naming the first bad row and its problem (and
how many more are bad): a partial answer to a batch is easy to misalign with its rows. A body
that is not one of these forms at all is a 400.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Sequence
from typing import Any

from edgebundle.runtime._json import json_type, quote
from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.categories import CategoryNames
from edgebundle.runtime.rows.csv_rows import CsvRowParser
from edgebundle.runtime.rows.json_rows import JsonRowParser, json_row_parser
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.serve.httpio import HttpError, bad_request, decode_json, encode_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV_TYPE = "text/csv"
_SPLIT_KEYS = ("columns", "data", "index")
_BOM = "\ufeff"


def parse_json_rows(
    body: bytes, features: Sequence[str], max_rows: int, names: CategoryNames = ()
) -> list[Row]:
    """The rows of a JSON body, all good, or ``HttpError`` (400, 413, 422)."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise bad_request(f"body must be a JSON object, not {json_type(document)}")
    key = _format_key(document)
    value = document[key]
    parser = json_row_parser(tuple(features), names)
    if key == "dataframe_split":
        return _all_good(_split_rows(value, parser, max_rows))
    if key == "inputs" and isinstance(value, dict):
        values, where = _columnar_rows(value), "inputs row"
    else:
        values, where = _array(value, key), key
    _check_count(len(values), max_rows)
    return _all_good(parser.parse_values(values, lambda i: f"{where}[{i}]"))


def parse_csv_rows(
    body: bytes,
    features: Sequence[str],
    reserved: Collection[str],
    max_rows: int,
    names: CategoryNames = (),
) -> list[Row]:
    """The rows of a CSV body, all good, or ``HttpError`` (400, 413, 422); ``reserved`` are the
    output column names, which an input column may not take."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"CSV body is not valid UTF-8 (byte {e.start})") from None
    reader = csv.reader(io.StringIO(text.removeprefix(_BOM), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise bad_request("CSV body is empty; it needs a header row of feature names")
        parser = CsvRowParser(header, features, reserved, names)
    except InputError as e:
        raise bad_request(f"CSV header: {e}") from None
    except csv.Error as e:
        raise bad_request(f"CSV header: {e}") from None
    parsed: list[Row | RowError] = []
    while True:
        where = f"line {reader.line_num + 1}"  # a quoted cell may span lines: name the first
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            parsed.append(RowError(f"{where}: {e}", {}))
            continue
        parsed.append(parser.parse_cells(cells, where))
        _check_count(len(parsed), max_rows)
    return _all_good(parsed)


def encode_predictions(records: list[dict[str, object]]) -> bytes:
    return encode_json({"predictions": records})


def _format_key(document: dict[str, Any]) -> str:
    unknown = [key for key in document if key not in FORMATS]
    if unknown:
        raise bad_request(f"unknown key {quote(unknown[0])}; expected one of {', '.join(FORMATS)}")
    if len(document) != 1:
        found = ", ".join(document) or "none"
        raise bad_request(f"expected exactly one of {', '.join(FORMATS)}; found {found}")
    return next(iter(document))


def _array(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise bad_request(f"{what!r} must be an array of rows, not {json_type(value)}")
    return value


def _split_rows(split: object, parser: JsonRowParser, max_rows: int) -> list[Row | RowError]:
    if not isinstance(split, dict):
        raise bad_request(f"'dataframe_split' must be an object, not {json_type(split)}")
    unknown = [key for key in split if key not in _SPLIT_KEYS]
    if unknown:
        raise bad_request(f"'dataframe_split' has an unknown key {quote(unknown[0])}")
    data = _array(split.get("data"), "dataframe_split.data")
    _check_count(len(data), max_rows)
    columns = split.get("columns")
    if columns is None:  # rows in the model's feature order
        return parser.parse_values(data, lambda i: f"dataframe_split.data[{i}]")
    names = _column_names(columns)
    parsed: list[Row | RowError] = []
    for i, row in enumerate(data):
        where = f"dataframe_split.data[{i}]"
        if isinstance(row, list) and len(row) == len(names):
            parsed.append(parser.parse_value(dict(zip(names, row, strict=True)), where))
        else:
            problem = f"expected an array of {len(names)} values, one per column"
            parsed.append(RowError(f"{where}: {problem}", {}))
    return parsed


def _column_names(columns: object) -> list[str]:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise bad_request("'dataframe_split.columns' must be an array of strings")
    if len(set(columns)) != len(columns):
        raise bad_request("'dataframe_split.columns' repeats a column name")
    return columns


def _columnar_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise bad_request(
                f"columnar 'inputs' must map each column to an array; {quote(name)} is "
                f"{json_type(values)}"
            )
        lengths.add(len(values))
    if len(lengths) > 1:
        raise bad_request("columnar 'inputs' columns have different lengths")
    count = lengths.pop() if lengths else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def _check_count(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise HttpError(413, f"{rows} rows exceed the limit of {max_rows} per request")


def _all_good(parsed: list[Row | RowError]) -> list[Row]:
    errors = [row for row in parsed if isinstance(row, RowError)]
    if errors:
        more = f" ({len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
        raise HttpError(422, f"{errors[0].message}{more}")
    return [row for row in parsed if isinstance(row, Row)]
