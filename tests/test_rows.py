"""Parsing input rows: every malformed row becomes one clear error, never a silent missing value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers_runtime import FEATURES, multiclass, regression

from runtime.errors import InputError
from runtime.rows import (
    CsvRowParser,
    CsvWriter,
    JsonRowParser,
    Row,
    RowError,
    encode_jsonl,
    output_columns,
    score_rows,
)
from runtime.scoring import Scorer

NAN = math.nan
JSON = JsonRowParser(FEATURES)


def parse(line: str | bytes) -> Row | RowError:
    return JSON.parse_line(line.encode() if isinstance(line, str) else line, "line 3")


def values(line: str) -> list[float]:
    row = parse(line)
    assert isinstance(row, Row), row
    assert row.values.dtype == np.float32
    return row.values.tolist()  # type: ignore[no-any-return]


def error(line: str | bytes) -> str:
    row = parse(line)
    assert isinstance(row, RowError), row
    assert "\n" not in row.message
    return row.message


def same(a: list[float], b: list[float]) -> bool:
    return np.array_equal(np.array(a), np.array(b), equal_nan=True)


# --- JSON objects and arrays ------------------------------------------------------------------


def test_object_row_by_feature_name_in_any_order() -> None:
    assert values('{"f3": 4, "f1": 2.5, "f0": -1, "f2": 0}') == [-1.0, 2.5, 0.0, 4.0]


def test_array_row_in_manifest_order() -> None:
    assert values("[1, 2, 3.5, -4e2]") == [1.0, 2.0, 3.5, -400.0]


def test_null_and_missing_keys_are_missing_values() -> None:
    assert same(values('{"f0": null, "f2": 1}'), [NAN, NAN, 1.0, NAN])
    assert same(values("[null, 1, null, 2]"), [NAN, 1.0, NAN, 2.0])
    assert same(values("{}"), [NAN] * 4)


def test_numbers_become_float32_via_float64_like_xgboost() -> None:
    row = parse("[0.1, 16777217, 1e39, -1e39]")
    assert isinstance(row, Row)
    expected = np.array([0.1, 16777217, 1e39, -1e39], dtype=np.float64)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(row.values, expected.astype(np.float32))
    assert row.values[3] == -np.inf


@pytest.mark.parametrize("value", ['"42"', "true", "false", '{"v": 1}', "[1]"])
def test_non_numbers_are_errors_naming_the_feature(value: str) -> None:
    kind = {'"': "a string", "t": "a boolean", "f": "a boolean", "{": "an object", "[": "an array"}
    message = error(f'{{"f0": 1, "f2": {value}}}')
    assert message == f"line 3: feature 'f2': expected a number, got {kind[value[0]]}"


def test_string_in_an_array_row_names_the_feature() -> None:
    assert error('[1, 2, "x", 4]') == "line 3: feature 'f2': expected a number, got a string"


def test_unknown_key_is_an_error_naming_it() -> None:
    assert error('{"f0": 1, "f9": 2}') == "line 3: unknown key 'f9'"
    assert error('{"F0": 1, "f1 ": 2}') == "line 3: unknown keys 'F0', 'f1 '"
    many = json.dumps({f"x{i}": i for i in range(8)})
    assert error(many) == "line 3: unknown keys 'x0', 'x1', 'x2', 'x3', 'x4' and 3 more"


@pytest.mark.parametrize("line", ["[1, 2, 3]", "[1, 2, 3, 4, 5]", "[]"])
def test_wrong_array_length_states_got_and_expected(line: str) -> None:
    got = len(json.loads(line))
    assert error(line) == f"line 3: expected 4 values, got {got}"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_rejected(token: str) -> None:
    assert error(f'{{"f0": {token}}}').startswith(f"line 3: {token} is not a JSON number")


@pytest.mark.parametrize("line", ["[1e400, 0, 0, 0]", '{"f0": -1e999}', f"[{10**400}, 0, 0, 0]"])
def test_numbers_beyond_float64_rejected(line: str) -> None:
    assert error(line).endswith("number out of range")


def test_duplicate_key_rejected() -> None:
    assert error('{"f0": 1, "f0": 2}') == "line 3: duplicate key 'f0'"


@pytest.mark.parametrize("line", ["", "   ", "\r", "\t "])
def test_blank_line_is_an_error_record(line: str) -> None:
    assert error(line) == "line 3: blank line"


def test_non_utf8_is_an_error() -> None:
    assert error(b'{"f0": "\xff"}') == "line 3: not valid UTF-8 (byte 8)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"f0": 1', "line 3: invalid JSON: Expecting ',' delimiter at column 9"),
        ("42", "line 3: expected a JSON object or array, got an integer"),
        ('"row"', "line 3: expected a JSON object or array, got a string"),
        ("[" * 100_000, "line 3: invalid JSON: nested too deeply"),
    ],
)
def test_other_malformed_lines(line: str, message: str) -> None:
    assert error(line) == message


def test_id_is_echoed_whatever_its_json_scalar_type() -> None:
    for raw in ['"a-1"', "7", "7.5", "null", "true", '"\\u00e9"']:
        row = parse(f'{{"id": {raw}, "f0": 1}}')
        assert isinstance(row, Row)
        assert row.passthrough == {"id": json.loads(raw)}


def test_id_is_kept_on_a_bad_row() -> None:
    row = parse('{"id": "r-9", "f1": "oops"}')
    assert isinstance(row, RowError)
    assert row.passthrough == {"id": "r-9"}
    assert row.message == "line 3: feature 'f1': expected a number, got a string"


def test_structured_id_rejected() -> None:
    assert error('{"id": {"a": 1}}') == "line 3: 'id' must be a JSON scalar, got an object"


def test_a_feature_called_id_is_a_feature() -> None:
    parser = JsonRowParser(["id", "x"])
    row = parser.parse_line(b'{"id": 5, "x": 1}', "line 1")
    assert isinstance(row, Row)
    assert row.values.tolist() == [5.0, 1.0]
    assert row.passthrough == {}


# --- CSV ----------------------------------------------------------------------------------------

RESERVED = {"prediction", "error"}


def csv_parser(header: list[str]) -> CsvRowParser:
    return CsvRowParser(header, FEATURES, RESERVED)


def test_csv_extra_columns_pass_through_verbatim() -> None:
    parser = csv_parser(["id", "f3", "f2", "note", "f1", "f0"])
    assert parser.passthrough_columns == ("id", "note")
    row = parser.parse_cells(["007", "4", "3", " keep, me ", "2", "1"], "line 2")
    assert isinstance(row, Row)
    assert row.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert row.passthrough == {"id": "007", "note": " keep, me "}


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["", " ", "nan", "NaN"], [NAN] * 4),
        (["inf", "-inf", "Infinity", "1e400"], [math.inf, -math.inf, math.inf, math.inf]),
        ([" 1.5 ", "+2", "-3e-2", "0"], [1.5, 2.0, -0.03, 0.0]),
    ],
)
def test_csv_cell_rules(cells: list[str], expected: list[float]) -> None:
    row = csv_parser(list(FEATURES)).parse_cells(cells, "line 2")
    assert isinstance(row, Row)
    assert np.array_equal(row.values, np.array(expected, dtype=np.float32), equal_nan=True)


@pytest.mark.parametrize("cell", ["abc", "1_000", "1,5", "١٢", "true", "0x10", "x" * 50])
def test_csv_bad_cell_names_the_column(cell: str) -> None:
    parser = csv_parser(["id", *FEATURES])
    row = parser.parse_cells(["r1", "1", "2", cell, "4"], "line 5")
    assert isinstance(row, RowError)
    shown = cell if len(cell) <= 32 else cell[:32] + "..."
    assert row.message == f"line 5: column 'f2': expected a number, got {shown!r}"
    assert row.passthrough == {"id": "r1"}


@pytest.mark.parametrize(
    ("cells", "message"), [(["1", "2", "3"], "expected 5 cells, got 3"), ([], "blank line")]
)
def test_csv_wrong_cell_count_is_a_row_error(cells: list[str], message: str) -> None:
    row = csv_parser(["id", *FEATURES]).parse_cells(cells, "line 4")
    assert isinstance(row, RowError)
    assert row.message == f"line 4: {message}"


def test_csv_non_utf8_cell_is_a_row_error() -> None:
    cells = ["1", "2", b"3\xff".decode("utf-8", "surrogateescape"), "4"]
    row = csv_parser(list(FEATURES)).parse_cells(cells, "line 2")
    assert isinstance(row, RowError)
    assert row.message == "line 2: not valid UTF-8"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["id", "f0", "f2"], "CSV header lacks feature columns 'f1', 'f3'"),
        (["f0", "f1", "f2"], "CSV header lacks feature column 'f3'"),
        (["f0", "f1", "f2", "f3", "f1"], "CSV header repeats column 'f1'"),
        (["id", "id", *FEATURES], "CSV header repeats column 'id'"),
        ([*FEATURES, "prediction"], "CSV column 'prediction' clashes with an output column"),
        ([*FEATURES, "error"], "CSV column 'error' clashes with an output column"),
        ([*FEATURES, "\udcff"], "CSV header is not valid UTF-8"),
    ],
)
def test_csv_header_problems(header: list[str], message: str) -> None:
    with pytest.raises(InputError) as info:
        csv_parser(header)
    assert str(info.value) == message


# --- output records -----------------------------------------------------------------------------


def test_score_rows_keeps_order_and_interleaves_errors() -> None:
    model = regression()
    scorer = Scorer(model.onnx, model.features, model.outputs)
    lines = ['{"id": 1, "f0": 1}', '{"id": 2, "f0": "x"}', "[1, 2, 3, 4]", "", '{"id": 5}']
    parsed = [JSON.parse_line(line.encode(), f"line {i + 1}") for i, line in enumerate(lines)]
    records = score_rows(scorer, parsed)
    good = np.array([[1, NAN, NAN, NAN], [1, 2, 3, 4], [NAN] * 4], dtype=np.float32)
    want = model.reference(good)["prediction"]
    assert [sorted(r) for r in records] == [
        ["id", "prediction"],
        ["error", "id"],
        ["prediction"],
        ["error"],
        ["id", "prediction"],
    ]
    assert records[1] == {"id": 2, "error": "line 2: feature 'f0': expected a number, got a string"}
    assert records[3] == {"error": "line 4: blank line"}
    got = [records[i]["prediction"] for i in (0, 2, 4)]
    np.testing.assert_allclose(np.array(got, dtype=np.float32), want, rtol=1e-5, atol=1e-5)


def test_score_rows_with_only_errors_does_not_need_the_model() -> None:
    model = regression()
    scorer = Scorer(model.onnx, model.features, model.outputs)
    assert score_rows(scorer, [RowError("line 1: blank line", {})]) == [
        {"error": "line 1: blank line"}
    ]


def test_jsonl_output_is_compact_ascii_one_object_per_line() -> None:
    data = encode_jsonl([{"id": "é\ud800", "prediction": 0.1}, {"error": "line 2: blank line"}])
    assert data == (b'{"id":"\\u00e9\\ud800","prediction":0.1}\n{"error":"line 2: blank line"}\n')


def test_csv_output_expands_list_outputs_and_ends_with_error() -> None:
    outputs = multiclass().outputs
    assert output_columns(outputs) == [
        "probabilities_0",
        "probabilities_1",
        "probabilities_2",
        "label",
    ]
    writer = CsvWriter(["id", "note"], outputs)
    records: list[dict[str, object]] = [
        {"id": "a", "note": "x,y", "probabilities": [0.1, 0.2, 0.7], "label": 2},
        {"id": "b", "note": "", "error": "line 3: blank line"},
    ]
    assert (
        writer.header() == b"id,note,probabilities_0,probabilities_1,probabilities_2,label,error\n"
    )
    assert writer.encode(records) == b'a,"x,y",0.1,0.2,0.7,2,\nb,,,,,,line 3: blank line\n'


# --- batch parsing ------------------------------------------------------------------------------

MIXED_LINES = [
    b"[1, 2.5, null, -3]",
    b" [0, -0, -0.0, 1e-45] \r",  # CRLF; -0 is the integer 0, -0.0 keeps its sign
    b"[1e39, -1e39, 1.7976931348623157e308, 123456789012345678901234567890]",  # ±inf in float32
    b"[1e999, 0, 0, 0]",  # overflows float64
    b"[%d, 0, 0, 0]" % 10**400,  # an integer beyond float64
    b"[%s, 0, 0, 0]" % (b"9" * 5000),  # beyond the interpreter's digit limit
    b"[true, 0, 0, 0]",
    b'["1", 0, 0, 0]',
    b"[[1], 0, 0, 0]",
    b"[1, 2, 3]",
    b"[1, 2, 3, 4, 5]",
    b"[]",
    b'{"id": 7, "f1": 2}',
    b'{"f9": 1}',
    b"",
    b"   ",
    b"[1, 2,",
    b"[1, 2, 3, 4] x",
    b"[NaN, 0, 0, 0]",
    b"[1, 2, 3, \xff]",
    b"null",
    b"[0.1, 0.2, 0.30000000000000004, 16777217]",
]


def same_parse(a: Row | RowError, b: Row | RowError) -> bool:
    if isinstance(a, Row) and isinstance(b, Row):
        return a.values.tobytes() == b.values.tobytes() and a.passthrough == b.passthrough
    return a == b


@pytest.mark.parametrize("order", [1, -1])
def test_parse_lines_matches_parse_line_on_mixed_input(order: int) -> None:
    lines = MIXED_LINES[::order] * 3
    batch = JSON.parse_lines(lines, 10)
    one_by_one = [JSON.parse_line(line, f"line {10 + i}") for i, line in enumerate(lines)]
    assert len(batch) == len(lines)
    assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True))
    assert sum(isinstance(row, Row) for row in batch) == 3 * 5


def test_parse_lines_of_only_good_arrays_matches_parse_line() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(scale=1e3, size=(300, len(FEATURES)))
    x[rng.random(x.shape) < 0.2] = np.nan
    lines = [json.dumps([None if v != v else v for v in row]).encode() for row in x.tolist()]
    batch = JSON.parse_lines(lines, 1)
    one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(lines)]
    assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True))
    assert all(isinstance(row, Row) for row in batch)


def test_parse_lines_of_nothing() -> None:
    assert JSON.parse_lines([], 1) == []
