"""Output columns rendered by orjson, byte for byte as ``answers.py`` renders them.

``answers.py`` spells each value as Python's ``repr`` of ``to_python``'s value: a number at a
time, ~0.75 µs each. orjson writes a whole numpy column in C (~0.03 µs a value): integers in
decimal, float32 by their shortest round-tripping digits. Two things can differ.

- The notation. ``repr`` writes fixed notation for decimal exponents -4 to 15 and otherwise
  scientific notation with at least two exponent digits (``1e-05``, ``1e+16``); orjson
  (measured: 3.10.7, 3.11.5, 3.13.0) writes fixed notation from exponent -5 or -6 to 12, and
  the exponent without padding (``1e-5``; ``1e16`` before 3.13, ``1e+16`` since). Both write
  fixed notation for exponents -4 to 12.
- The digits, rarely. ``to_python`` reads numpy's shortest digits back as a float64, and where
  that float64 rounds to another float32 (a double rounding) it keeps the exact float64 value:
  float32 7.038531e-26 is written 7.038530691851209e-26. Comparing every positive float32 from
  1e-4 to 1e13 (474 million, with orjson 3.10.7 and 3.13.0) found none there.

So ``_same_spelling`` admits zero and magnitudes from 1e-4 to 1e13; any other float32 (and a
non-finite one, which CSV spells as an empty cell) keeps the reference spelling, patched into
orjson's output, so the bytes are the reference's whatever the values.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from edgebundle.runtime.scoring import to_python

# The reference spelling of a column of ``to_python`` values (JSON: ``null`` for None; CSV: an
# empty cell).
Spell = Callable[[list[Any]], list[str]]

# The decimal exponent of a float32's shortest digits only grows with its magnitude, and the
# float32 nearest 10**m is the smallest with exponent m (its digits are "1"): so these
# comparisons select exactly the exponents -4 to 12, with zero beside them
# (tests/runtime/test_answer_render.py spells every float32 near each power of ten).
_FROM_E_MINUS_4 = np.float32(1e-4)
_BELOW_E_13 = np.float32(1e13)


def _same_spelling(value: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Where orjson spells ``value`` as ``repr(to_python(value))`` does (NaN and infinity
    fail every comparison, so never)."""
    size = np.abs(value)
    same: npt.NDArray[np.bool_] = ((size >= _FROM_E_MINUS_4) | (size == 0)) & (size < _BELOW_E_13)
    return same


def renderable(outputs: Iterable[npt.NDArray[Any]]) -> bool:
    """Whether every output is an ``[N]`` or ``[N, C]`` column of float32 or integers with two
    rows or more, and this orjson spells what ``_same_spelling`` admits as the reference does.

    A single row is as quick the reference way: the numpy calls here cost ~5 µs a column.
    """
    return all(map(_renderable, outputs)) and _orjson_agrees()


def _renderable(value: npt.NDArray[Any]) -> bool:
    dtype = value.dtype
    return (
        value.ndim in (1, 2)
        and len(value) > 1
        and dtype.isnative
        and (dtype == np.float32 or dtype.kind in "iu")
    )


def json_lines(outputs: Mapping[str, npt.NDArray[Any]], spell: Spell) -> bytes:
    """``{"name":value,...}`` and a newline for every row of ``renderable`` outputs."""
    fills = _json_fills(tuple((name, value.ndim == 2) for name, value in outputs.items()))
    return _interleave(fills, [_row_texts(value, spell) for value in outputs.values()])


@functools.lru_cache(maxsize=16)
def _json_fills(members: tuple[tuple[str, bool], ...]) -> tuple[bytes, ...]:
    """What goes around the values of ``(name, is [N, C])`` members in a line: a line is
    fills[0], the first value, fills[1], ..., fills[-1]. Built once: a single-row answer
    would spend a third of its time on it."""
    fills = [b"{"]
    for name, nested in members:
        fills[-1] += json.dumps(name).encode("ascii") + (b":[" if nested else b":")
        fills.append(b"]," if nested else b",")
    fills[-1] = fills[-1][:-1] + b"}\n"
    return tuple(fills)


def csv_lines(outputs: Sequence[npt.NDArray[Any]], spell: Spell) -> bytes:
    """The output cells of every row of ``renderable`` outputs, then an empty error cell."""
    columns = [_row_texts(value, spell) for value in outputs]
    return _interleave([b"", *[b","] * (len(columns) - 1), b",\n"], columns)


def _interleave(fills: Sequence[bytes], columns: list[list[bytes]]) -> bytes:
    # One join in C over fill, text, fill, text, ..., fill for every row: no Python per row.
    parts: list[Iterable[bytes]] = [repeat(fills[0])]
    for column, fill in zip(columns, fills[1:], strict=True):
        parts += [column, repeat(fill)]
    return b"".join(chain.from_iterable(zip(*parts, strict=False)))  # repeat() never ends


def _row_texts(value: npt.NDArray[Any], spell: Spell) -> list[bytes]:
    """Per row of a ``renderable`` column, its number, or its ``C`` numbers joined by commas."""
    value = np.ascontiguousarray(value)  # orjson refuses other layouts
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    texts = text[1:-1].split(b",") if value.ndim == 1 else text[2:-2].split(b"],[")
    if value.dtype == np.float32:
        same = _same_spelling(value)
        if not same.all():
            _respell(texts, value, same, spell)
    return texts


def _respell(
    texts: list[bytes], value: npt.NDArray[np.float32], same: npt.NDArray[np.bool_], spell: Spell
) -> None:
    """Gives the rows of ``value`` with a value not ``same`` the reference spelling."""
    rows = value.reshape(len(value), -1)
    picked = np.flatnonzero(~same.reshape(rows.shape).all(axis=1))
    spelt = spell(to_python(rows[picked].reshape(-1)))
    width = rows.shape[1]
    for k, i in enumerate(picked.tolist()):
        texts[i] = ",".join(spelt[k * width : (k + 1) * width]).encode("ascii")


@functools.cache
def _orjson_agrees() -> bool:
    """Whether the installed orjson spells the float32 that ``_same_spelling`` admits as the
    reference does, checked once on the values nearest the bounds: its notation has changed
    between versions, and the runtime accepts any orjson >= 3.10."""
    return _agrees(lambda value: orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def _agrees(dumps: Callable[[npt.NDArray[np.float32]], bytes]) -> bool:
    bounds = np.array([_FROM_E_MINUS_4, _BELOW_E_13], dtype=np.float32)
    near = (bounds.view(np.int32)[:, None] + np.arange(-4, 5, dtype=np.int32)).view(np.float32)
    others = np.array([0.0, 0.1, 1 / 3, 1.0, 16777217.0, 123456.79], dtype=np.float32)
    values = np.concatenate([near.reshape(-1), others])
    values = np.concatenate([values, -values])
    values = values[_same_spelling(values)]
    reference = ",".join(map(repr, to_python(values))).encode("ascii")
    return dumps(values) == b"[" + reference + b"]"
