"""Property-based fuzzing of the request body and row decoders: OIP infer bodies, the
``/invocations`` JSON and CSV forms, and stdin's JSON lines and CSV. Arbitrary bytes and
near-valid documents give rows of the right width within the row cap, or the domain error
(``HttpError`` 4xx, ``RowError``, ``InputError``) in one line; never another exception, a hang
or memory out of proportion to the input (``make fuzz`` runs many more examples)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.rows.csv_rows import CsvRowParser
from edgebundle.runtime.rows.json_rows import JsonRowParser
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.serve.httpio import HttpError
from edgebundle.runtime.serve.invocations import parse_csv_rows, parse_json_rows
from edgebundle.runtime.serve.oip import InferRequest, parse_infer
from tests.conftest import manifest_dict_for
from tests.support.fuzzing import within_memory

MAX_ROWS = 20
MANIFEST = Manifest.from_dict(manifest_dict_for({"model.onnx": b"m", "selftest.json": b"{}"}))
FEATURES = tuple(feature.name for feature in MANIFEST.inputs.features)
RESERVED = frozenset({"probability", "label", "error"})

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["NaN", "nan", "inf", "1e400", "", "0x10", "1_000"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.sampled_from([*FEATURES, "id", "x"]), st.text(max_size=5)),
                        inner, max_size=5),
    ),
    max_leaves=30,
)
_ROW = st.one_of(
    st.lists(_SCALARS, min_size=2, max_size=4),
    st.dictionaries(st.sampled_from([*FEATURES, "id", "other"]), _SCALARS, max_size=5),
    _JSON,
)
_COUNTS = st.integers(0, MAX_ROWS + 3)


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """Infer requests near the real form, JSON or with a binary tensor after the JSON."""
    rows = draw(_COUNTS)
    width = draw(st.sampled_from([len(FEATURES), len(FEATURES) + 1, 1]))
    datatype = draw(st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES", "FP16",
                                     "fp32", ""]))
    shape = draw(st.one_of(st.just([rows, width]), st.lists(st.integers(-2, 2**40), max_size=3),
                           _JSON))
    tensor: dict[str, Any] = {"name": draw(st.sampled_from(["input", "x", ""])),
                              "datatype": datatype, "shape": shape}
    binary = b""
    if draw(st.booleans()):
        tensor["data"] = draw(st.one_of(
            st.lists(st.one_of(st.none(), st.floats(allow_nan=False), st.integers()),
                     max_size=rows * width),
            st.lists(st.lists(_SCALARS, max_size=width + 1), max_size=rows),
            _JSON,
        ))
    else:
        binary = draw(st.binary(max_size=rows * width * 8))
        size = draw(st.one_of(st.just(len(binary)), st.integers(-1, 2**33)))
        tensor["parameters"] = {"binary_data_size": size}
    document: dict[str, Any] = {"inputs": draw(st.sampled_from([[tensor], [tensor, tensor], []]))}
    if draw(st.booleans()):
        document["outputs"] = draw(st.lists(st.dictionaries(
            st.sampled_from(["name", "parameters"]), _JSON, max_size=2), max_size=3))
    if draw(st.booleans()):
        document["parameters"] = draw(st.dictionaries(
            st.sampled_from(["binary_data_output", "x"]), _SCALARS, max_size=2))
    text = json.dumps(document).encode()
    if not binary:
        return text, draw(st.sampled_from([None, None, "0", str(len(text) + 5), "x"]))
    return text + binary, draw(st.sampled_from([str(len(text)), str(len(text) - 1), "-3", None]))


def outcome(call: Any) -> Any:
    try:
        return call()
    except HttpError as e:
        assert 400 <= e.status < 500 and "\n" not in e.message and e.message, e.message
        return e


def check_infer(body: bytes, header_length: str | None) -> None:
    result = within_memory(
        len(body), lambda: outcome(lambda: parse_infer(body, header_length, MANIFEST, MAX_ROWS))
    )
    if isinstance(result, InferRequest):
        assert result.x.dtype == np.float32 and result.x.ndim == 2
        assert result.x.shape[1] == len(FEATURES) and result.x.shape[0] <= MAX_ROWS


@given(st.binary(max_size=2048), st.one_of(st.none(), st.text(max_size=6)))
def test_infer_arbitrary_bytes(body: bytes, header_length: str | None) -> None:
    check_infer(body, header_length)


@given(infer_bodies())
def test_infer_near_valid(case: tuple[bytes, str | None]) -> None:
    check_infer(*case)


@st.composite
def invocation_bodies(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(_ROW, max_size=MAX_ROWS + 3))
    form = draw(st.sampled_from(["instances", "inputs", "dataframe_records", "dataframe_split",
                                 "columnar", "two", "none"]))
    document: Any
    if form == "dataframe_split":
        split: dict[str, Any] = {"data": rows}
        if draw(st.booleans()):
            split["columns"] = draw(st.one_of(st.just(list(FEATURES)),
                                              st.lists(st.text(max_size=4), max_size=4), _JSON))
        document = {"dataframe_split": draw(st.one_of(st.just(split), _JSON))}
    elif form == "columnar":
        document = {"inputs": {name: draw(st.lists(_SCALARS, max_size=MAX_ROWS + 2))
                               for name in draw(st.lists(st.sampled_from(FEATURES), max_size=4))}}
    elif form == "two":
        document = {"instances": rows, "inputs": rows}
    elif form == "none":
        document = draw(_JSON)
    else:
        document = {form: rows}
    return json.dumps(document).encode()


def check_rows(rows: Any) -> None:
    if isinstance(rows, list):
        assert len(rows) <= MAX_ROWS
        for row in rows:
            assert isinstance(row, Row) and row.values.shape == (len(FEATURES),)
            assert row.values.dtype == np.float32


@given(st.one_of(st.binary(max_size=2048), invocation_bodies()))
def test_invocations_json(body: bytes) -> None:
    check_rows(within_memory(
        len(body), lambda: outcome(lambda: parse_json_rows(body, FEATURES, MAX_ROWS))
    ))


_CELLS = st.one_of(
    st.sampled_from(["", "1", "-2.5", "nan", "NaN", "inf", "1e39", "1_0", "0x1", " 3", "٣",
                     "\ud800", '"', "a,b", "x\ny"]),
    st.text(max_size=6),
)


@st.composite
def csv_texts(draw: st.DrawFn) -> bytes:
    header = draw(st.one_of(
        st.permutations([*FEATURES, "id"]),
        st.lists(st.sampled_from([*FEATURES, "id", "label", "error", "Amount", ""]), max_size=6),
    ))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for _ in range(draw(st.integers(0, MAX_ROWS + 2))):
        writer.writerow(draw(st.lists(_CELLS, max_size=len(header) + 1)))
    text = out.getvalue()
    if draw(st.booleans()):
        text = draw(st.sampled_from(["\ufeff", "", '"'])) + text
    return text.encode("utf-8", "surrogatepass")


@given(st.one_of(st.binary(max_size=2048), csv_texts()))
def test_invocations_csv(body: bytes) -> None:
    check_rows(within_memory(
        len(body), lambda: outcome(lambda: parse_csv_rows(body, FEATURES, RESERVED, MAX_ROWS))
    ))


def check_stdin_rows(parsed: list[Row | RowError], count: int, first: int) -> None:
    assert len(parsed) == count
    for i, row in enumerate(parsed):
        if isinstance(row, RowError):
            assert "\n" not in row.message and row.message.startswith(f"line {first + i}")
        else:
            assert row.values.shape == (len(FEATURES),) and row.values.dtype == np.float32


@given(st.one_of(
    st.lists(st.binary(max_size=200), max_size=10),
    st.lists(_ROW.map(lambda value: json.dumps(value).encode()), max_size=10),
))
def test_stdin_json_lines(lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b" ") for line in lines]  # as the line reader splits them
    parsed = within_memory(
        sum(map(len, lines)) + len(lines), lambda: JsonRowParser(FEATURES).parse_lines(lines, 7)
    )
    check_stdin_rows(parsed, len(lines), 7)


@given(st.one_of(st.binary(max_size=2048), csv_texts()))
def test_stdin_csv(data: bytes) -> None:
    """As ``bundle-runtime score --format csv`` reads stdin: lines decoded with surrogateescape,
    the header checked (InputError), then every record a Row or a RowError."""

    def decode() -> list[Row | RowError] | InputError:
        text = (line.decode("utf-8", "surrogateescape") + "\n" for line in data.splitlines())
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                return []
            parser = CsvRowParser(header, FEATURES, RESERVED)
        except (InputError, csv.Error) as e:
            return e if isinstance(e, InputError) else InputError(str(e))
        records: list[tuple[list[str], str] | RowError] = []
        while True:
            where = f"line {reader.line_num + 1}"
            try:
                records.append((next(reader), where))
            except StopIteration:
                break
            except csv.Error as e:
                records.append(RowError(f"{where}: {e}", {}))
        return parser.parse_rows(records)

    result = within_memory(len(data), decode)
    if isinstance(result, InputError):
        assert "\n" not in str(result)
    else:
        for row in result:
            assert isinstance(row, RowError) or row.values.shape == (len(FEATURES),)


# The stdin batch paths against their one-line references: a batch decoded at once (JSON) or
# read by numpy (CSV) gives exactly what each line gives alone, errors included.
_JSON_PIECES = st.sampled_from([
    "[", "]", "{", "}", ",", ":", " ", '"', '"f0"', '"f1"', '"id"', '"x"', "1", "-0.5", "1e400",
    "null", "true", "NaN", "01", "[1, 2, 3, 4]", '{"f0": 1, "f1": 2}', "\\", "\xc3",
])


@st.composite
def json_line_batches(draw: st.DrawFn) -> list[bytes]:
    """Lines cut from JSON-like text at arbitrary places, and near-valid rows."""
    text = "".join(draw(st.lists(_JSON_PIECES, max_size=40)))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    lines = [piece.encode("utf-8", "surrogateescape").replace(b"\n", b" ") for piece in pieces]
    rows = draw(st.lists(_ROW.map(lambda value: json.dumps(value).encode()), max_size=4))
    return draw(st.permutations(lines + rows))


@given(json_line_batches())
def test_stdin_json_batch_matches_line_by_line(lines: list[bytes]) -> None:
    parser = JsonRowParser(FEATURES)
    batch = parser.parse_lines(lines, 3)
    one_by_one = [parser.parse_line(line, f"line {3 + i}") for i, line in enumerate(lines)]
    assert all(same_row(a, b) for a, b in zip(batch, one_by_one, strict=True))
    check_whole_array(parser.parse_numbers(lines), one_by_one)


_NUMBER = st.one_of(
    st.none(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)


# Feature names holding the "t" and "r" of "true" (a boolean is then told apart by the text's
# marks), and names holding no letter that _may_hold_booleans looks for.
_NUMERIC_FEATURES = st.sampled_from([FEATURES, ("b0", "c1", "d2")])


@st.composite
def numeric_rows(draw: st.DrawFn, features: tuple[str, ...]) -> bytes:
    """A row as a numeric source writes it: an array of one number or null per feature, or an
    object of some features (sometimes an id, sometimes an integer id beyond 64 bits), now and
    then with a boolean in place of a number."""
    values: list[Any] = draw(st.lists(_NUMBER, min_size=len(features), max_size=len(features)))
    if draw(st.integers(0, 5)) == 0:
        values[draw(st.integers(0, len(features) - 1))] = draw(st.booleans())
    if draw(st.booleans()):
        return json.dumps(values).encode()
    kept = draw(st.lists(st.booleans(), min_size=len(features), max_size=len(features)))
    row: dict[str, Any] = {f: v for f, v, keep in zip(features, values, kept, strict=True) if keep}
    if draw(st.integers(0, 3)) == 0:
        row["id"] = draw(st.sampled_from([7, "a:b", "a:t", 2**64, -(2**70), 2**63 + 0.5, 1e19]))
    return json.dumps(row, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))).encode()


@st.composite
def numeric_batches(draw: st.DrawFn) -> tuple[tuple[str, ...], list[bytes]]:
    features = draw(_NUMERIC_FEATURES)
    return features, draw(st.lists(numeric_rows(features), min_size=1, max_size=8))


@given(numeric_batches())
def test_stdin_json_numeric_batch_is_one_array_matching_line_by_line(
    batch_of: tuple[tuple[str, ...], list[bytes]],
) -> None:
    """The fast path of the usual input: numeric arrays, or objects without an id, come back
    as one array; with an id, as rows echoing it as sent; always as each line gives alone."""
    features, lines = batch_of
    parser = JsonRowParser(features)
    one_by_one = [parser.parse_line(line, f"line {1 + i}") for i, line in enumerate(lines)]
    for batch in (parser.parse_lines(lines, 1), as_rows(parser.parse_batch(lines, 1))):
        assert all(same_row(a, b) for a, b in zip(batch, one_by_one, strict=True))
    whole = parser.parse_numbers(lines)
    in_range = all(isinstance(row, Row) for row in one_by_one)
    one_kind = len({line[:1] for line in lines}) == 1  # a block mixing the two takes rows
    expected = in_range and one_kind and not any(b'"id"' in line for line in lines)
    assert (whole is not None) == expected
    check_whole_array(whole, one_by_one, len(features))


def as_rows(batch: np.ndarray[Any, Any] | list[Row | RowError]) -> list[Row | RowError]:
    """``parse_batch``'s answer as the rows it stands for."""
    if isinstance(batch, list):
        return batch
    return [Row(values=values, passthrough={}) for values in batch]


def check_whole_array(
    x: np.ndarray[Any, Any] | None, one_by_one: list[Row | RowError], width: int = len(FEATURES)
) -> None:
    """A batch given as one array holds exactly the rows given one by one."""
    if x is None:
        return
    assert all(isinstance(row, Row) and not row.passthrough for row in one_by_one)
    assert x.dtype == np.float32 and x.shape == (len(one_by_one), width)
    assert x.tobytes() == b"".join(row.values.tobytes() for row in one_by_one)  # type: ignore[union-attr]


_CELLS = st.one_of(
    st.text("0123456789+-.eEnNaAiIfFtTyY_ x", max_size=6),
    st.floats(width=32).map(repr),
    st.sampled_from(["", "nan", "-inf", "1e400", "1e-400", "Infinity", "0x1", " 1", "1_0", "-0",
                     "-0e0", "1e-0", "01", "+1", ".5", "5.", "12345678901234567890123"]),
)


@given(st.lists(st.lists(_CELLS, min_size=len(FEATURES) + 1, max_size=len(FEATURES) + 1),
                min_size=1, max_size=6), st.booleans())
def test_stdin_csv_plain_lines_match_parse_cells(rows: list[list[str]], with_id: bool) -> None:
    header = ["id", *FEATURES] if with_id else list(FEATURES)
    parser = CsvRowParser(header, FEATURES, RESERVED)
    cells = [row[: len(header)] for row in rows]
    plain = parser.parse_plain_lines([",".join(row) for row in cells])
    if plain is None:  # left to the csv module and parse_cells
        return
    one_by_one = [parser.parse_cells(row, "line 2") for row in cells]
    assert all(same_row(a, b) for a, b in zip(plain, one_by_one, strict=True))
    whole = parser.parse_plain_numbers([",".join(row) for row in cells])
    assert (whole is None) == with_id
    check_whole_array(whole, one_by_one)


# Every spelling float() reads: sign, digits, point and exponent each there or not (JSON reads
# some of them: no "+" before the number, no lone point, no leading zero).
_SIGN = st.sampled_from(["", "-", "+"])
_DIGITS = st.text("0123456789", max_size=25)
_FLOAT_TEXT = st.tuples(
    _SIGN,
    _DIGITS,
    st.one_of(st.just(""), _DIGITS.map(lambda digits: "." + digits)),
    st.one_of(st.just(""), st.tuples(st.sampled_from("eE"), _SIGN, _DIGITS).map("".join)),
).map("".join)
# What a numeric source writes: JSON numbers (float64 and float32 shortest text, integers
# beyond 64 bits, "-0.0").
_JSON_NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(
        lambda v: repr(float(str(np.float32(v))))),
    st.integers(-(2**200), 2**200).map(str),
)
_ANY_CELL = st.one_of(
    _JSON_NUMBER, _FLOAT_TEXT, st.just(""),
    st.floats().map(repr),  # "nan", "inf"
    st.sampled_from(["-0", "0", "-00", "00", "1e400", "-1e400", "1e-400", "1" + "0" * 308, "nan",
                     "-NaN", "Infinity", "-inf", "null", "true", "false", " 1", "1 ", "\t1",
                     "1\r", "1_0", "0x1", '"1"', "[1]", "{}", "1,2", "\u0661", "\xff", "\udcff",
                     "1" + "0" * 400]),
    st.text("0123456789+-.eE,nultrf \t", max_size=6),
    st.binary(max_size=3).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
# Headers with the features in order, in another order, some of them (the others missing),
# one alone, and with a column that passes through.
_HEADERS = st.sampled_from([
    list(FEATURES), list(FEATURES[::-1]), [FEATURES[2], FEATURES[0]], [FEATURES[1]],
    [*FEATURES, "id"],
])


@st.composite
def csv_number_lines(draw: st.DrawFn, header: list[str]) -> list[str]:
    """Lines of JSON numbers and empty cells, a few cells of them then replaced by any other
    cell, and sometimes a line a cell too long or too short."""
    width = len(header)
    cell = _JSON_NUMBER if width == 1 else st.one_of(_JSON_NUMBER, st.just(""))
    rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), max_size=6))
    for _ in range(draw(st.integers(0, 3)) if rows else 0):
        row = draw(st.sampled_from(rows))
        row[draw(st.integers(0, width - 1))] = draw(_ANY_CELL)
    if rows and draw(st.integers(0, 3)) == 0:
        row = draw(st.sampled_from(rows))
        row.append("1") if draw(st.booleans()) else row.pop()
    return [",".join(row) for row in rows]


@given(_HEADERS, st.data())
def test_stdin_csv_numbers_read_as_json_are_parse_plain_numbers_bit_for_bit(
    header: list[str], data: st.DataObject
) -> None:
    """The raw bytes read as JSON give exactly the array the str lines give, or None (then
    those are read instead): never a value read otherwise, a cell too many or a literal."""
    parser = CsvRowParser(header, FEATURES, RESERVED)
    lines = data.draw(csv_number_lines(header))
    got = parser.parse_numbers_bytes([line.encode("utf-8", "surrogateescape") for line in lines])
    event("read as JSON" if got is not None else "left to the str lines")
    if got is None:
        return
    expected = parser.parse_plain_numbers(lines)
    assert expected is not None
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(lines), len(FEATURES))
    assert got.tobytes() == expected.tobytes()


@given(_HEADERS.filter(lambda header: "id" not in header), st.data())
def test_stdin_csv_json_numbers_are_read_as_json(header: list[str], data: st.DataObject) -> None:
    """Lines of JSON numbers and empty cells (what float sources write) take the JSON path:
    it cannot silently never run."""
    cell = _JSON_NUMBER if len(header) == 1 else st.one_of(_JSON_NUMBER, st.just(""))
    row = st.lists(cell, min_size=len(header), max_size=len(header))
    rows = data.draw(st.lists(row, min_size=1, max_size=6))
    lines = [",".join(cells) for cells in rows]
    parser = CsvRowParser(header, FEATURES, RESERVED)
    got = parser.parse_numbers_bytes([line.encode() for line in lines])
    assert got is not None
    expected = parser.parse_plain_numbers(lines)
    assert expected is not None and got.tobytes() == expected.tobytes()


def same_row(a: Row | RowError, b: Row | RowError) -> bool:
    if isinstance(a, Row) and isinstance(b, Row):
        # repr: an echoed id must come back as sent, 2**70 not 1.1805916207174113e+21
        return a.values.tobytes() == b.values.tobytes() and repr(a.passthrough) == repr(
            b.passthrough
        )
    return a == b
