"""Parsing input rows: every malformed row becomes one clear error, never a silent missing value."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.rows.answers import (
    CsvWriter,
    answer_records,
    encode_answers_jsonl,
    encode_jsonl,
    output_columns,
    score_rows,
)
from edgebundle.runtime.rows.csv_rows import CsvRowParser
from edgebundle.runtime.rows.json_rows import _DECODER, JsonRowParser, _decode_json
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.scoring import Scorer
from tests.support.helpers_runtime import FEATURES, multiclass, regression

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
    assert error('{"F0": 1, "f1 ": 2}') == (
        "line 3: unknown keys 'F0', 'f1 ' ('F0' differs from feature 'f0' only in case)"
    )
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


@pytest.mark.parametrize("raw", ["1e400", "-1e400"])
def test_an_id_out_of_range_is_an_error_for_its_row(raw: str) -> None:
    # JSON reads it as infinity, which has no JSON spelling to echo back.
    assert error(f'{{"id": {raw}, "f0": 1}}') == "line 3: 'id' is a number out of range"


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


# Lines without a string, object or boolean: parse_lines takes them as arrays of numbers and
# null without checking each element's type, so every way an array can still be wrong is here.
NUMBERS_ONLY_LINES = [
    b"[1, 2, 3, 4]",
    b"[-0, -0.0, 0, 0.0]",
    b"[1e39, -1e39, 1.7976931348623157e308, 123456789012345678901234567890]",
    b"[1e999, 0, 0, 0]",
    b"[%d, 0, 0, 0]" % 10**400,
    b"[%s, 0, 0, 0]" % (b"9" * 5000),
    b"[%d, %d, 1e-46, 5e-324]" % (2**53 + 1, 2**64 + 1),
    b"[null, null, null, null]",
    b"[0.1, 0.2, 0.30000000000000004, 16777217]",
    b"[[1], [2], [3], [4]]",
    b"[[1], 0, 0, 0]",
    b"[[], [], [], []]",
    b"[[1, 2], [3, 4], [5, 6], [7, 8]]",
    b"[[[1]], 0, 0, 0]",
    b"[1, 2, 3]",
    b"[1, 2, 3, 4, 5]",
    b"[]",
    b"[[]]",
    b"[[1, 2, 3, 4]]",
    b"null",
    b"5",
    b"",
    b"   ",
    b"[1, 2,",
    b"[1, 2, 3, 4] x",
    b"[1, 2, 3, 4] [1, 2, 3, 4]",
    b"[1, 2, 3, 4] \t\r",
    b" \t[1, 2, 3, 4]",
    b"\r[1, 2, 3, 4]\r",
    b"[1, 2, 3, 4]\x0c",
    b"\x0b[1, 2, 3, 4]",
    b"[01, 2, 3, 4]",
    b"[1., 2, 3, 4]",
    b"[+1, 2, 3, 4]",
    b"[1, 2, 3, \xff]",
    b"[NaN, 0, 0, 0]",
]


@pytest.mark.parametrize("line", NUMBERS_ONLY_LINES)
def test_parse_lines_without_strings_matches_parse_line(line: bytes) -> None:
    plain = [b"[1.5, null, -2, 3e-3]", b"[0, 0, 0, 0]"]
    for lines in ([line], [line] * 3, [*plain, line, *plain]):
        batch = JSON.parse_lines(lines, 10)
        one_by_one = [JSON.parse_line(line, f"line {10 + i}") for i, line in enumerate(lines)]
        assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True)), lines


@pytest.mark.parametrize("order", [1, -1])
def test_parse_lines_of_all_numbers_only_lines_matches_parse_line(order: int) -> None:
    lines = NUMBERS_ONLY_LINES[::order]
    batch = JSON.parse_lines(lines, 1)
    one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(lines)]
    assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True))


@pytest.mark.parametrize("line", NUMBERS_ONLY_LINES + MIXED_LINES)
def test_parse_numbers_gives_the_whole_batch_or_leaves_it_to_parse_lines(line: bytes) -> None:
    plain = [b"[1.5, null, -2, 3e-3]", b"[0, -0.0, %d, 1e39]" % (2**53 + 1)]
    for lines in ([line], [*plain, line, *plain]):
        x = JSON.parse_numbers(lines)
        one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(lines)]
        good = all(isinstance(row, Row) for row in one_by_one)
        framed = line[:1] == b"[" and line[-1:] == b"]"  # JSON spaces around: line by line
        assert (x is not None) == (good and framed)
        if x is not None:
            assert x.tobytes() == b"".join(row.values.tobytes() for row in one_by_one)  # type: ignore[union-attr]
    assert JSON.parse_numbers(plain) is not None


def test_parse_lines_keeps_the_sign_of_zero_as_json_does() -> None:
    row = JSON.parse_lines([b"[-0, -0.0, 0, -0e0]"], 1)[0]
    assert isinstance(row, Row)
    assert np.signbit(row.values).tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        ' {"a": 1}',
        "[1] ",
        "[1]\r",
        "[1]\t \n",
        "\n[1]",
        "[1] x",
        "[1]\x0c",
        "\x0c[1]",
        "[1][2]",
        "",
        " ",
        "nul",
        "[1,",
        "[NaN]",
        '{"a": 1, "a": 2}',
        "1" * 5000,
        "[" * 100_000,
        "-0",
        "\u00a0[1]",
        "[1]\u00a0",
    ],
)
def test_decode_json_gives_what_decode_gives(text: str) -> None:
    def outcome(decode: Callable[[str], object]) -> object:
        try:
            value = decode(text)
        except (ValueError, RecursionError, InputError) as e:
            return type(e), str(e)
        return json.dumps(value)

    assert outcome(_decode_json) == outcome(_DECODER.decode)


# Object lines: parse_lines decodes them without the duplicate-key hook and converts the
# plain ones by dict.get; every way an object can still be wrong or need the strict path.
OBJECT_LINES = [
    b'{"f0": 1, "f1": 2.5, "f2": null, "f3": -3}',
    b'{"f3": 4, "f0": 1}',
    b"{}",
    b'{"id": "a:b", "f0": 1}',  # a ":" in a string: decoded again, strictly
    b'{"id": 7, "f0": 1, "f0": 2}',
    b'{"f0" : 1, "f0": 2}',  # a space before a ":" must not hide a repeated key
    b'{"f0" : 1, "f0" : 2, "id": "x:"}',
    b'{"f0": 1, "f1": {"a": 1, "a": 2}}',
    b'{"f0": 1, "f1": {}}',
    b'{"f0": 1, "f1": [1]}',
    b'{"f0": true}',
    b'{"f0": "1"}',
    b'{"f0": 1e999}',
    b'{"f0": 1e39, "f1": -1e39}',
    b'{"f0": %d}' % 10**400,
    b'{"f0": NaN}',
    b'{"F0": 1}',
    b'{"f9": 1, "f0": 2}',
    b'{"id": [1], "f0": 1}',
    b'{"id": 1e400, "f0": 1}',
    b'{"id": null, "f0": -0.0}',
    b'{"id": "\\u00e9\\"q", "f0": 0.1}',
    b'{"f0": 1} {"f0": 2}',
    b'{"f0": 1,}',
    b'[1, 2, 3, {"a": 1, "a": 2}]',
    b'[1, 2, 3, 4]',
]


@pytest.mark.parametrize("order", [1, -1])
def test_parse_lines_of_objects_matches_parse_line(order: int) -> None:
    lines = OBJECT_LINES[::order] * 2
    batch = JSON.parse_lines(lines, 1)
    one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(lines)]
    assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True))
    assert sum(isinstance(row, Row) for row in batch) == 2 * 8


# Batches whose lines, joined as one JSON array, decode to as many values as there are lines
# although not every line is a value of its own: a line's value must never come from its
# neighbours' text.
MISALIGNED_BATCHES = [
    [b"[1],[[2]", b"[3, 4, 5]]"],
    [b"[1],2,[3]", b"[[4]", b"[5]", b"[6]]"],  # a line's scalar value among them
    [b"[1, 2, 3, 4],[[1]", b"[2]]"],
    [b'{"f0": 1},{"f1": [1', b'{"f2": 3}]}'],
    [b'{"f0": 1},{"id": {"a": 1', b'{"f2": 3}}}'],
    [b'{"id": "x}', b'{"f0": 1}'],
    [b'{"id": "],[", "f0": 1}', b'{"f0": "]"}'],
    [b'{"id": "[", "f0": 1}', b'{"id": "{:", "f0": 2}', b'{"f0": 3, "f0": 4}'],
    [b'{"f0": 1, "f1": 2},{"f0": 1', b'"f1": 2}'],
    [b"[1, 2, 3, 4]", b"[1, 2, 3, 4],", b"[1, 2, 3, 4]"],
    [b'{"f0": 1}', b"[1, 2, 3, 4]", b'{"f0": 1, "f1": {"f0": 1, "f0": 2}}'],
]


@pytest.mark.parametrize("lines", MISALIGNED_BATCHES)
def test_parse_lines_never_takes_a_value_from_neighbouring_lines(lines: list[bytes]) -> None:
    for batch in (lines, [*lines, b"[1, 2, 3, 4]"], [b'{"f0": 1}', *lines]):
        parsed = JSON.parse_lines(batch, 1)
        one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(batch)]
        assert all(same_parse(a, b) for a, b in zip(parsed, one_by_one, strict=True)), batch


def test_repeated_keys_are_refused_however_spaced() -> None:
    for line in OBJECT_LINES[4:8]:
        message = error(line)
        assert "duplicate key" in message, (line, message)


def test_a_feature_called_id_takes_the_plain_path_as_a_feature() -> None:
    parser = JsonRowParser(("id", "x"))
    [row] = parser.parse_lines([b'{"id": 2, "x": 3}'], 1)
    assert isinstance(row, Row)
    assert row.values.tolist() == [2.0, 3.0]
    assert row.passthrough == {}


def test_a_feature_called_id_holding_a_string_is_refused_in_a_batch() -> None:
    parser = JsonRowParser(("id", "x"))
    # numpy would read "1.5" as 1.5 (and fail on "a", which sends every row to parse_value)
    for third in ([], [b'{"x": 3, "id": "a"}']):
        parsed = parser.parse_lines([b'{"id": 2, "x": 3}', b'{"id": "1.5", "x": 3}', *third], 1)
        assert [type(row) for row in parsed] == [Row, RowError, *[RowError] * len(third)]
        assert parsed[1] == RowError("line 2: feature 'id': expected a number, got a string", {})


def test_objects_with_string_ids_and_string_values_in_one_batch() -> None:
    # Each string id accounts for two '"'; one more string (a value, an escaped quote in a
    # key) makes the batch check every value's type.
    lines = [
        b'{"id": "a", "f0": 1, "f1": 2}',
        b'{"id": "b", "f0": "3"}',
        b'{"id": "c\\"", "f0": 4}',
        b'{"id": 7, "f2": false}',
        b'{"id": "true", "f3": 5}',
    ]
    for batch in (lines, lines[:2], lines[:1] + lines[2:3], lines[:1] + lines[4:]):
        parsed = JSON.parse_lines(batch, 1)
        one_by_one = [JSON.parse_line(line, f"line {i + 1}") for i, line in enumerate(batch)]
        assert all(same_parse(a, b) for a, b in zip(parsed, one_by_one, strict=True)), batch
    assert [type(row) for row in JSON.parse_lines(lines, 1)] == [Row, RowError, Row, RowError, Row]


# CSV cells of every kind csv_number tells apart: numbers, blanks, missing, and not numbers.
CSV_CELLS = [
    "1",
    "-0",
    "0",
    "+2",
    ".5",
    "5.",
    "1e5",
    "1E-5",
    "-3e-2",
    "1e400",
    "-1e400",
    "1e39",
    "2.5e-46",
    "16777217",
    "0.30000000000000004",
    "123456789012345678901234567890",
    "",
    " ",
    "  ",
    "\t",
    " 1.5 ",
    "\t2\t",
    "\r3",
    "4\n",
    "\x0b5",
    "6\x0c",
    "\x1c7",
    "8\x1f",
    "nan",
    "NaN",
    "-nan",
    " nan ",
    "inf",
    "-inf",
    "Infinity",
    "-iNfInItY",
    "+inf",
    "1_000",
    "_1",
    "abc",
    "1,5",
    "0x10",
    "1e",
    "e5",
    "--1",
    "1 2",
    "true",
    "١٢",
    "\u00a01",
    "1\u2003",
    "\u20001",
]


def csv_rows(cells: list[str], passthrough: str) -> list[tuple[list[str], str]]:
    """Rows of [id, f0..f3] putting each cell in each feature column once."""
    rows = []
    for i, cell in enumerate(cells):
        row = [passthrough, "1", "2", "3", "4"]
        row[1 + i % 4] = cell
        rows.append((row, f"line {i + 2}"))
    return rows


@pytest.mark.parametrize("passthrough", ["r1", "user_1", "é", "\udcff", ""])
def test_csv_parse_rows_matches_parse_cells(passthrough: str) -> None:
    parser = csv_parser(["id", *FEATURES])
    rows: list[tuple[list[str], str] | RowError] = [*csv_rows(CSV_CELLS, passthrough)]
    rows += [(["r", "1"], "line 90"), ([], "line 91"), RowError("line 92: bad quote", {})]
    rows += [
        (list(cells), "line 93")
        for cells in [[passthrough, *CSV_CELLS[i : i + 4]] for i in range(0, 40, 4)]
    ]
    batch = parser.parse_rows(rows)
    one_by_one = [row if isinstance(row, RowError) else parser.parse_cells(*row) for row in rows]
    assert all(same_parse(a, b) for a, b in zip(batch, one_by_one, strict=True))
    good = sum(isinstance(row, Row) for row in batch)
    assert good == 0 if passthrough == "\udcff" else good > 40  # a bad id spoils its row


@pytest.mark.parametrize("passthrough", ["r1", "user_1", "é", "\udcff", ""])
def test_csv_plain_lines_match_parse_cells_cell_by_cell(passthrough: str) -> None:
    # Each cell kind alone in a batch of its own, and all the cells in one batch: the bulk
    # path either gives exactly what parse_cells gives or leaves the batch to it (None).
    parser = csv_parser(["id", *FEATURES])
    rows = csv_rows(CSV_CELLS, passthrough)
    batches = [[row] for row in rows] + [rows, [row for row in rows if row[0][1:] == ["1", "2"]]]
    taken = 0
    for batch in batches:
        got = parser.parse_plain_lines([",".join(cells) for cells, _ in batch])
        if got is None:
            continue
        taken += 1
        one_by_one = [parser.parse_cells(*row) for row in batch]
        assert all(same_parse(a, b) for a, b in zip(got, one_by_one, strict=True)), batch
    assert taken >= (0 if passthrough in ("\udcff", "") else 25)


def test_csv_numbers_in_bulk_match_parse_cells_cell_by_cell() -> None:
    # Every column a feature (no passthrough): a batch becomes one array, read by orjson from
    # the raw bytes or by loadtxt, or goes to the csv module; each cell alone and all together
    # read as parse_cells reads them.
    parser = csv_parser(list(FEATURES))
    rows = [(cells[1:], where) for cells, where in csv_rows(CSV_CELLS, "")]
    taken = taken_as_json = 0
    for batch in [[row] for row in rows] + [rows]:
        lines = [",".join(cells) for cells, _ in batch]
        got = parser.parse_plain_numbers(lines)
        as_json = parser.parse_numbers_bytes([line.encode() for line in lines])
        if as_json is not None:
            taken_as_json += 1
            assert got is not None and as_json.tobytes() == got.tobytes(), batch
        if got is None:
            continue
        taken += 1
        one_by_one = [parser.parse_cells(*row) for row in batch]
        assert all(isinstance(row, Row) for row in one_by_one), batch
        assert got.tobytes() == b"".join(row.values.tobytes() for row in one_by_one), batch  # type: ignore[union-attr]
    assert taken >= 25
    assert taken_as_json >= 10  # "1", "1e5", "1E-5", "1e39", "", "16777217", ...


def bench_like_lines(header: list[str], n: int, seed: int) -> list[bytes]:
    """Lines as a float32 source writes them: shortest float32 text, ~5% of cells empty."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, len(header))) * 10.0 ** rng.integers(-8, 8, (n, len(header))))
    cells = np.array([repr(float(str(v))) for v in x.astype(np.float32).ravel()], dtype=object)
    cells[rng.random(cells.size) < 0.05] = ""
    return [",".join(row).encode() for row in cells.reshape(n, len(header))]


@pytest.mark.parametrize(
    "header",
    [list(FEATURES), ["f3", "f1", "f0", "f2"], ["f2", "f0"], ["f1"], ["f3", "f2", "f1"]],
)
def test_csv_numbers_read_as_json_match_parse_plain_numbers(header: list[str]) -> None:
    # Columns in any order, features without a column (NaN in every row), one column.
    parser = csv_parser(header)
    lines = bench_like_lines(header, 300, seed=len(header))
    if len(header) == 1:  # a single column's empty cell is a blank line, an error
        lines = [line or b"0.5" for line in lines]
    got = parser.parse_numbers_bytes(lines)
    assert got is not None
    expected = parser.parse_plain_numbers([line.decode() for line in lines])
    assert expected is not None and got.tobytes() == expected.tobytes()
    assert got.shape == (300, len(FEATURES)) and np.isnan(got).any()


@pytest.mark.parametrize(
    "lines",
    [
        [b"1,2,3,-0"],  # orjson reads an integer 0, float() -0.0
        [b"-0,1,2,3", b"1,2,3,4"],
        [b"1,2,3,1e400"],  # orjson refuses what float() makes inf
        [b"1,2,3,+1"], [b"1,2,3,.5"], [b"1,2,3,5."], [b"1,2,3,01"], [b"1,2,3,1e"],  # not JSON
        [b"1,2,3,nan"], [b"1,2,3,inf"], [b"1,2,3,NaN"],  # missing or inf, but not JSON
        [b"1,2,3,null"], [b"1,2,3,true"], [b"1,2,3,false"],  # JSON, but no number
        [b"1,2,3, 4"], [b"1,2,3,4\r"], [b"1,2,3,\t4"], [b'1,2,3,"4"'], [b"1,2,3,[4]"],
        [b"1,2,3"], [b"1,2,3,4,5"], [b"1,2,3,4", b"1,2,3"], [b"1,2,3,4", b""], [],
        [b"1,2,3,4\n5,6,7,8"],  # a line holding a line ending
        [b"1,2,3,\xd9\xa1"], [b"1,2,3,\xff"],
    ],
)
def test_csv_numbers_not_read_as_json_are_left_to_loadtxt(lines: list[bytes]) -> None:
    assert csv_parser(list(FEATURES)).parse_numbers_bytes(lines) is None


def test_csv_numbers_read_as_json_only_when_every_column_is_a_feature() -> None:
    lines = [b"a,1,2,3,4"]
    assert csv_parser(["id", *FEATURES]).parse_numbers_bytes(lines) is None
    assert csv_parser(["f2", "x"]).parse_numbers_bytes([b"1,2"]) is None


def test_csv_numbers_read_as_json_round_as_float_does() -> None:
    # Integers beyond float64's 53 bits and beyond 64 (orjson's int and float), ties between
    # two float64s, and below float32's range: text -> float64 -> float32, as float() gives.
    cells = [
        "9007199254740993", "18446744073709551615", "-9223372036854775809",
        "123456789012345678901234567890", "9007199254740993.0", "9007199254740993.000000001",
        "0.30000000000000004", "1e-400", "-1e-400", "2.5e-46", "1e39", "-1e39", "16777217",
        "1.0000000596046448", "4.9e-324", "-0.0", "-0e5", "0",
    ]
    lines = [",".join(cells[i : i + 4]).encode() for i in range(0, 16, 4)] + [b"0,-0.0,-0e5,0"]
    got = csv_parser(list(FEATURES)).parse_numbers_bytes(lines)
    assert got is not None
    with np.errstate(over="ignore"):
        expected = np.array(
            [[float(c) for c in line.decode().split(",")] for line in lines]
        ).astype(np.float32)
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "header", [list(FEATURES), ["f3", "id", "f1", "f0", "note", "f2"], ["f2", "x", "f0"]]
)
def test_csv_plain_lines_in_bulk_match_parse_cells(header: list[str]) -> None:
    parser = csv_parser(header)
    rng = np.random.default_rng(3)
    lines = []
    for i in range(300):
        cells = [repr(float(v)) for v in rng.normal(scale=1e3, size=len(header))]
        pairs = zip(header, cells, strict=True)
        cells = [f"r{i}" if name in ("id", "note", "x") else c for name, c in pairs]
        cells[i % len(header)] = "" if i % 3 else "nan"
        lines.append(",".join(cells))
    got = parser.parse_plain_lines(lines)
    assert got is not None
    one_by_one = [parser.parse_cells(line.split(","), "line 2") for line in lines]
    assert all(same_parse(a, b) for a, b in zip(got, one_by_one, strict=True))


@pytest.mark.parametrize(
    "lines",
    [['"1",2,3,4'], ["1,2,3,4\r"], ["1,2,3"], ["1,2,3,4,5"], [""], ["1,2,3, 4"], ["1,2,3,1_0"],
     ["1,2,3,e5"], ["1,2,3,٤"], ["1,2,3,4", "1,2,3,x"]],
)
def test_csv_plain_lines_leave_anything_else_to_the_csv_module(lines: list[str]) -> None:
    assert csv_parser(list(FEATURES)).parse_plain_lines(lines) is None


def test_csv_missing_feature_column_is_missing_in_every_row() -> None:
    parser = csv_parser(["id", "f2", "f0"])
    assert parser.missing_features == ("f1", "f3")
    assert parser.notes == (
        "the CSV header has no column for features 'f1', 'f3': they are missing in every row",
    )
    row = parser.parse_cells(["a", "3", "1"], "line 2")
    assert isinstance(row, Row)
    assert same(row.values.tolist(), [1.0, NAN, 3.0, NAN])
    [bulk] = parser.parse_plain_lines(["a,3,1"]) or []
    assert same_parse(bulk, row)
    assert csv_parser(list(FEATURES)).notes == ()


def test_csv_column_differing_only_in_case_gets_a_hint() -> None:
    parser = csv_parser(["F1", "f0", "f2", "f3"])
    assert parser.passthrough_columns == ("F1",)
    assert parser.notes == (
        "the CSV header has no column for feature 'f1' (column 'F1' differs only in case; "
        "names are case-sensitive): it is missing in every row",
    )


def test_csv_parse_rows_of_nothing_and_of_errors_only() -> None:
    parser = csv_parser(list(FEATURES))
    assert parser.parse_rows([]) == []
    error = RowError("line 2: bad", {})
    assert parser.parse_rows([error, ([], "line 3")]) == [error, RowError("line 3: blank line", {})]


# --- JSONL output of whole batches ---------------------------------------------------------------

ECHOED_IDS: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    1.5,
    -0.0,
    1e-300,
    1e300,
    "x",
    "",
    'é\u2028"\\\n\x00',
    "\udcff",
]


def random_float32(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Any bit pattern, values of every magnitude, and the special values."""
    bits = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32).view(np.float32)
    scaled = rng.standard_normal(shape) * 10.0 ** rng.integers(-45, 39, size=shape)
    with np.errstate(over="ignore"):
        values = np.where(rng.random(shape) < 0.5, bits, scaled.astype(np.float32))
    specials = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4028235e38, 1e-7, 1e16, 1e-5, 0.1],
        dtype=np.float32,
    )
    mask = rng.random(shape) < 0.1
    values[mask] = rng.choice(specials, size=int(mask.sum()))
    values[np.isnan(values)] = np.nan  # a model yields quiet NaNs; signalling ones trap in casts
    return values.astype(np.float32)


def random_outputs(rng: np.random.Generator, n: int, kind: int) -> dict[str, npt.NDArray[Any]]:
    labels = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    return [
        {"probability": random_float32(rng, (n,)), "label": labels},
        {"probabilities": random_float32(rng, (n, int(rng.integers(1, 5)))), "label": labels},
        {"prediction": random_float32(rng, (n,))},
        {"score": random_float32(rng, (n,)), "label": labels % 2},
        {"label": labels, "probabilities": random_float32(rng, (n, 20))},
        {"id": random_float32(rng, (n,)), "label": labels},  # named like the echoed key
    ][kind]


@pytest.mark.parametrize("kind", range(6))
def test_encode_answers_jsonl_matches_encoding_the_records(kind: int) -> None:
    rng = np.random.default_rng(kind)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        parsed: list[Row | RowError] = [
            Row(np.zeros(4, np.float32), {} if rng.random() < 0.5 else {"id": pick(rng)})
            for _ in range(n)
        ]
        for _ in range(int(rng.integers(0, 4))):
            error = RowError("line 3: bad é", {} if rng.random() < 0.5 else {"id": pick(rng)})
            parsed.insert(int(rng.integers(0, len(parsed) + 1)), error)
        outputs = random_outputs(rng, n, kind)
        assert encode_answers_jsonl(parsed, outputs) == encode_jsonl(
            answer_records(parsed, outputs)
        )


@pytest.mark.parametrize("kind", range(6))
def test_csv_encode_answers_matches_encoding_the_records(kind: int) -> None:
    rng = np.random.default_rng(10 + kind)
    for _ in range(30):
        n = int(rng.integers(0, 40))
        outputs = random_outputs(rng, n, kind)
        specs = [
            OutputSpec(name=name, dtype=str(value.dtype), shape=(-1, *value.shape[1:]))
            for name, value in outputs.items()
        ]
        parsed: list[Row | RowError] = [Row(np.zeros(4, np.float32), {}) for _ in range(n)]
        # a passthrough column is never named like an output (CsvRowParser refuses it)
        for passthrough in ((), ("id",) if "id" not in outputs else ("note",)):
            writer = CsvWriter(passthrough, specs)
            if passthrough:
                echoed = passthrough[0]
                parsed = [Row(row.values, {echoed: f"r,{i}"}) for i, row in enumerate(parsed)]
            assert writer.encode_answers(parsed, outputs) == writer.encode(
                answer_records(parsed, outputs)
            )
        if n:
            parsed.insert(int(rng.integers(0, n)), RowError('line 3: bad "x"', {}))
            writer = CsvWriter((), specs)
            assert writer.encode_answers(parsed, outputs) == writer.encode(
                answer_records(parsed, outputs)
            )


def pick(rng: np.random.Generator) -> object:
    return ECHOED_IDS[int(rng.integers(0, len(ECHOED_IDS)))]


def test_encode_answers_jsonl_of_errors_only() -> None:
    parsed: list[Row | RowError] = [RowError("line 1: blank line", {"id": 3})]
    outputs = {"prediction": np.zeros(0, np.float32)}
    assert encode_answers_jsonl(parsed, outputs) == b'{"id":3,"error":"line 1: blank line"}\n'
