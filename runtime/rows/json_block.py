"""JSON lines decoded a batch at a time by orjson, and what their text says of them: whether
each value is its line's, whether any key repeats, whether the only strings are keys.

``json_rows`` reads rows from these blocks; a block that may not hold its lines' values is
decoded line by line there instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

ID_KEY = "id"


# Lines decoded together (see decode): their values, and their text.
Decoded = tuple[list[Any], bytes]


@dataclass(frozen=True, slots=True)
class Block:
    """Lines decoded together whose values are the lines' (see block_of), and counts taken
    from their text once."""

    values: list[Any]
    text: bytes
    objects: int  # how many of the values are objects
    keys: int  # in all objects


def no_strings_but_keys(block: Block, ids: int) -> bool:
    """Whether the only strings of ``block`` are its keys and ``ids`` string ids, and no value
    is a boolean."""
    return only_keys_are_strings(block.text, block.keys + ids)


def only_keys_are_strings(text: bytes, keys: int) -> bool:
    """Whether the only strings of ``text`` are its ``keys`` keys (string ids counted among
    them), none spelled twice, and no value is a boolean: every string's quotes are counted,
    so as many as two per key leave no other string (nor a key spelled twice)."""
    return _quotes(text) == 2 * keys and not _may_hold_booleans(text)


def _may_hold_booleans(text: bytes) -> bool:
    """Whether the values of ``text``, whose only strings are keys and ids, may hold a boolean.

    ``true`` is the one JSON value spelled with both ``t`` and ``r`` (``false`` with ``f``,
    ``a`` and ``s``), and finding that a letter is missing costs little; feature names rarely
    hold all the letters of one. When they do, the text's ``t`` and ``f`` are kept with its
    structure: those of a key are inside its quotes, those of ``true`` and ``false`` (all that
    is left of them) right after an object's ``:`` or an array's ``[``, with nothing left of a
    number or ``null`` in between. An id holding ``:t`` is taken for a boolean too: a slower
    path, never a wrong answer.
    """
    if not _has_all(text, _TRUE_LETTERS) and not _has_all(text, _FALSE_LETTERS):
        return False
    marks = text.translate(None, _NOT_MARKS)
    return any(mark in marks for mark in _BOOLEAN_MARKS)


def _quotes(text: bytes) -> int:
    """``text.count(b'"')``, which is a byte-at-a-time loop: numpy compares in SIMD, ~13×
    faster on a block of objects."""
    return int(np.count_nonzero(np.frombuffer(text, np.uint8) == _QUOTE))


def _has_all(text: bytes, letters: tuple[bytes, ...]) -> bool:
    return all(letter in text for letter in letters)


def decode_block(lines: Sequence[bytes]) -> Block | None:
    """The JSON value of each line, decoded all at once, when every line is one flat array or
    object (no container inside) with no repeated key: ``block_of(decode(lines))``. ``None``
    when one might not be, and then each line is decoded alone, which says what is wrong
    with it.

    Decoding is most of the cost of a row: the block is decoded by orjson, which reads a
    number ~3× faster than the standard library and gives the same value (both round
    correctly; it refuses NaN, Infinity, an overflow, a lone surrogate and bad UTF-8 as
    errors, which the line's own decoding then names), as a JSON array of the lines. The
    block's value is each line's value when each line is framed by ``[``/``{`` and
    ``]``/``}``, the values are as many as the lines and none nests a container: a string
    cannot span lines (it would hold a raw newline, which JSON refuses), so a line's last
    bracket closes a value at the block's top level and its first opens the next; as many
    values as lines leaves no line holding two. No key repeats when the ``:`` are as many as
    the objects' keys (see ``_decode_json``). The brackets and colons are counted in
    the text's structural bytes alone, a sixth of it for objects of numbers. orjson reads
    an integer beyond 64 bits as a float: harmless for a feature, which becomes a float
    anyway, but an echoed id must come back as it was sent, so a block with such an id is
    decoded again line by line.
    """
    decoded = decode(lines)
    return None if decoded is None else block_of(decoded)


def decode(lines: Sequence[bytes]) -> Decoded | None:
    """The lines decoded together, when each is framed as one array or object and orjson
    finds as many values as lines (see ``decode_block`` for when those are the lines')."""
    if not lines or not _framed(lines):
        return None
    text = b",\n".join(lines)
    try:
        values: list[Any] = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError:  # an error of some line, which decoding it names
        return None
    return (values, text) if len(values) == len(lines) else None


def block_of(decoded: Decoded) -> Block | None:
    """``decoded`` as a ``Block``, when its values are its lines' (see ``decode_block``)."""
    values, text = decoded
    marks = text.translate(None, _NOT_STRUCTURAL)
    if marks.count(b"[") + marks.count(b"{") != len(values) and not all(map(_is_flat, values)):
        return None
    objects = [value for value in values if type(value) is dict]
    keys = sum(map(len, objects))
    if objects and (marks.count(b":") != keys or any(map(_wide_int_id, objects))):
        return None
    return Block(values, text, len(objects), keys)


def _wide_int_id(obj: dict[str, Any]) -> bool:
    """Whether the object's id may be an integer literal orjson read as a float."""
    value = obj.get(ID_KEY)
    return type(value) is float and value.is_integer() and abs(value) >= _INT64_LIMIT


def _framed(lines: Sequence[bytes]) -> bool:
    """Whether every line starts with ``[`` or ``{`` and ends with ``]`` or ``}``."""
    return all(map(bytes.startswith, lines, itertools.repeat(_OPENING))) and all(
        map(bytes.endswith, lines, itertools.repeat(_CLOSING))
    )


def _is_flat(value: object) -> bool:
    """Whether ``value`` is an array or object holding no array or object."""
    if type(value) is dict:
        return _CONTAINERS.isdisjoint(map(type, value.values()))
    return type(value) is list and _CONTAINERS.isdisjoint(map(type, value))


_CONTAINERS = frozenset({list, dict})
_OPENING = (b"[", b"{")
_CLOSING = (b"]", b"}")
_QUOTE = ord('"')
_NOT_STRUCTURAL = bytes(set(range(256)) - set(b'[]{}:"'))
_NOT_MARKS = bytes(set(range(256)) - set(b'[]{}:"tf'))
_BOOLEAN_MARKS = (b":t", b":f", b"[t", b"[f")
_TRUE_LETTERS = (b"t", b"r")
_FALSE_LETTERS = (b"f", b"a", b"s")
_INT64_LIMIT = 2.0**63
