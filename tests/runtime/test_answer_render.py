"""Answers rendered by orjson (``runtime/rows/render.py``) are byte for byte what encoding the
answer records gives: for any float32 bit pattern and any int64, in [N] and [N, C] outputs,
with echoed ids and error rows among the answers, as JSON lines and as CSV."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.rows import render
from edgebundle.runtime.rows.answers import (
    CsvWriter,
    _csv_numbers,
    _json_scalars,
    _json_values,
    answer_records,
    encode_answers_jsonl,
    encode_jsonl,
)
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.scoring import to_python

_ANY_ROW = np.zeros(4, np.float32)


def _float32(bits: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.float32]:
    values = bits.astype(np.uint32).view(np.float32)
    values[np.isnan(values)] = np.nan  # a model yields quiet NaNs; signalling ones trap in casts
    return values


def _near_powers_of_ten(ulps: int) -> npt.NDArray[np.float32]:
    """Every float32 within ``ulps`` of a power of ten, of the largest finite float32 and of
    zero (subnormals), both signs, and the non-finite values: where notations switch."""
    powers = np.array([10.0**m for m in range(-45, 39)] + [3.4028235e38], dtype=np.float32)
    steps = np.arange(-ulps, ulps + 1, dtype=np.int64)
    bits = (powers.view(np.uint32).astype(np.int64)[:, None] + steps).reshape(-1)
    bits = np.unique(np.clip(bits, 0, 0x7F800000))  # from +0 up to +inf
    positive = _float32(bits)
    return np.concatenate([positive, -positive, np.array([np.nan], np.float32)])


_BOUNDARIES = _near_powers_of_ten(3)
_FLOAT32 = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda bits: float(_float32(np.array([bits]))[0])),
    st.sampled_from(_BOUNDARIES.tolist()),
)
_INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1, 0, -1]))
_ECHOED = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)


@st.composite
def _outputs(draw: st.DrawFn) -> dict[str, npt.NDArray[Any]]:
    """A binary or multiclass model's outputs for 1-12 rows (one: the reference path), in C
    or Fortran order."""
    n = draw(st.integers(1, 12))
    width = draw(st.integers(1, 4))
    floats = np.array(draw(st.lists(_FLOAT32, min_size=n * (width + 1), max_size=n * (width + 1))))
    labels = np.array(draw(st.lists(_INT64, min_size=n, max_size=n)), dtype=np.int64)
    matrix = floats[n:].astype(np.float32).reshape(n, width)
    if draw(st.booleans()):
        matrix = np.asfortranarray(matrix)
    outputs: dict[str, npt.NDArray[Any]] = {
        "probability": floats[:n].astype(np.float32),
        "label": labels,
    }
    if draw(st.booleans()):
        outputs["probabilities"] = matrix
    return outputs


@st.composite
def _answers(draw: st.DrawFn, n: int) -> list[Row | RowError]:
    """``n`` good rows, some echoing an id, with up to three error rows among them."""
    ids: st.SearchStrategy[dict[str, object]] = st.one_of(
        st.builds(dict), _ECHOED.map(lambda value: {"id": value})
    )
    parsed: list[Row | RowError] = [Row(_ANY_ROW, draw(ids)) for _ in range(n)]
    for _ in range(draw(st.integers(0, 3))):
        error = RowError("line 3: bad é", draw(ids))
        parsed.insert(draw(st.integers(0, len(parsed))), error)
    return parsed


def _specs(outputs: dict[str, npt.NDArray[Any]]) -> list[OutputSpec]:
    return [
        OutputSpec(name=name, dtype=str(value.dtype), shape=(-1, *value.shape[1:]))
        for name, value in outputs.items()
    ]


@given(st.data())
def test_jsonl_answers_are_the_records_encoded(data: st.DataObject) -> None:
    outputs = data.draw(_outputs())
    parsed = data.draw(_answers(len(outputs["label"])))
    assert render.renderable(outputs.values()) == (len(outputs["label"]) > 1)
    assert encode_answers_jsonl(parsed, outputs) == encode_jsonl(answer_records(parsed, outputs))


@given(st.data())
def test_csv_answers_are_the_records_encoded(data: st.DataObject) -> None:
    outputs = data.draw(_outputs())
    n = len(outputs["label"])
    # Rendered by orjson: no passthrough column, no error row.
    plain: list[Row | RowError] = [Row(_ANY_ROW, {}) for _ in range(n)]
    writer = CsvWriter((), _specs(outputs))
    assert writer.encode_answers(plain, outputs) == writer.encode(answer_records(plain, outputs))
    # The csv module's, with error rows and an id column: the same bytes either way.
    parsed = data.draw(_answers(n))
    writer = CsvWriter(("id",), _specs(outputs))
    assert writer.encode_answers(parsed, outputs) == writer.encode(answer_records(parsed, outputs))


def test_every_float32_near_a_notation_switch_is_spelt_as_today() -> None:
    # ~350,000 values, every float32 within 2,000 ulps of a power of ten, both signs: compared
    # with today's column renderers (which the tests above and test_rows.py hold to the
    # records), as encoding the records would take ten times as long.
    values = _near_powers_of_ten(2000)
    matrix = values[: len(values) // 7 * 7].reshape(-1, 7)
    assert render.renderable([values, matrix])
    expected = [text.encode() for text in _json_values(values)]
    assert render._row_texts(values, _json_scalars) == expected
    expected = [text.encode() for text in _csv_numbers(to_python(values))]
    assert render._row_texts(values, _csv_numbers) == expected
    expected = [text[1:-1].encode() for text in _json_values(matrix)]
    assert render._row_texts(matrix, _json_scalars) == expected


def test_values_orjson_spells_otherwise_keep_the_reference_spelling() -> None:
    # orjson's notation differs for the first five (1e-05 vs 0.00001 or 1e-5, 10000000000000.0
    # vs 1e+13 or 1e13), its digits for the sixth (to_python's double-rounding fallback writes
    # 7.038531e-26 as 7.038530691851209e-26), and CSV has an empty cell for a non-finite value.
    double_rounded = np.array([363742205], np.uint32).view(np.float32)[0]
    values = np.array(
        [1e-5, -2.5e-7, 5e-9, 1e13, 3e15, double_rounded, np.inf, np.nan, 0.5], np.float32
    )
    outputs = {"value": values}
    rows: list[Row | RowError] = [Row(_ANY_ROW, {})] * len(values)
    raw = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    reference = encode_jsonl(answer_records(rows, outputs))
    for text, line in zip(raw[:6], reference.splitlines()[:6], strict=True):
        assert line != b'{"value":' + text + b"}"
    assert encode_answers_jsonl(rows, outputs) == reference
    writer = CsvWriter((), _specs(outputs))
    assert writer.encode_answers(rows, outputs) == writer.encode(answer_records(rows, outputs))


def test_installed_orjson_agrees_where_the_guard_admits_and_a_wider_spelling_does_not() -> None:
    assert render._orjson_agrees()

    def float64_digits(value: npt.NDArray[np.float32]) -> bytes:
        # 0.1f written with the digits of its float64 widening, 0.10000000149011612
        return json.dumps(value.astype(np.float64).tolist(), separators=(",", ":")).encode()

    assert not render._agrees(float64_digits)


@pytest.mark.parametrize(
    ("outputs", "rendered"),
    [
        ({"value": np.array([0.1, 1e-5, 1e20])}, False),  # float64: another notation
        ({"value": np.zeros(0, np.float32)}, False),
        ({"value": np.array([0.1], np.float32)}, False),  # one row: as quick the other way
        ({"value": np.zeros((3, 0), np.float32), "label": np.arange(3)}, True),
    ],
)
def test_other_outputs_give_the_records_encoded(
    outputs: dict[str, npt.NDArray[Any]], rendered: bool
) -> None:
    assert render.renderable(outputs.values()) == rendered
    rows: list[Row | RowError] = [Row(_ANY_ROW, {})] * len(outputs["value"])
    assert encode_answers_jsonl(rows, outputs) == encode_jsonl(answer_records(rows, outputs))
