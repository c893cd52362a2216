"""A strict, bounded reader for the protobuf wire format, driven by a declarative schema.

The device never parses an ONNX model with a protobuf library of its own (onnx is a workstation
package); this reads just enough of one to decide whether onnxruntime may see it. A schema maps
each message name to the fields it may hold. Whatever it does not list is refused, not skipped:
a field this reader does not know is a field whose meaning it cannot vouch for. So are a
singular field given twice (protobuf would merge or overwrite, silently), a field it reads
arriving with another wire type, and bytes that end mid-field.

Cost is bounded before anything is interpreted: at most ``max_fields`` fields are read in all
and strings are short, so a hostile file of millions of tiny fields is refused after a fixed
amount of work. Unread repeated numbers (a tree ensemble's node lists: hundreds of thousands
of two-byte fields) are stepped over thousands at a time by a regular expression, at C speed.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgebundle.runtime.errors import FormatError

MAX_STRING_BYTES = 4096  # names, op types, domains: a few dozen bytes in practice

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {
    _VARINT: "varint",
    _FIXED64: "fixed64",
    _LENGTH: "length-delimited",
    _FIXED32: "fixed32",
}
_FIXED_SIZE = {_FIXED64: 8, _FIXED32: 4}


class Kind(enum.Enum):
    INT = "int"  # varint, read as a signed int64
    INTS = "ints"  # repeated int64, packed or one per field
    COUNT = "count"  # repeated int64 like INTS, of which only how many are kept
    STRING = "string"  # UTF-8, at most MAX_STRING_BYTES
    BYTES = "bytes"  # kept as a view into the input, not copied
    MESSAGE = "message"  # parsed with the schema entry named by ``Field.message``
    UNREAD = "unread"  # accepted and stepped over: the caller needs nothing from it


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    repeated: bool = False
    message: str = ""  # for Kind.MESSAGE


Schema = Mapping[str, Mapping[int, Field]]


class Fields:
    """One parsed message: typed access by field name, defaults for absent fields. A repeated
    field is a list, present only when it occurred."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, object]) -> None:
        self._values = values

    def has(self, name: str) -> bool:
        return name in self._values

    def get_int(self, name: str) -> int:
        value = self._values.get(name, 0)
        assert isinstance(value, int)
        return value

    def get_str(self, name: str) -> str:
        value = self._values.get(name, "")
        assert isinstance(value, str)
        return value

    def get_bytes(self, name: str) -> memoryview:
        value = self._values.get(name, memoryview(b""))
        assert isinstance(value, memoryview)
        return value

    def get_message(self, name: str) -> Fields:
        value = self._values.get(name, _EMPTY)
        assert isinstance(value, Fields)
        return value

    def get_messages(self, name: str) -> list[Fields]:
        return [value for value in self._list(name) if isinstance(value, Fields)]

    def get_strs(self, name: str) -> list[str]:
        return [value for value in self._list(name) if isinstance(value, str)]

    def get_ints(self, name: str) -> list[int]:
        return [value for value in self._list(name) if isinstance(value, int)]

    def _list(self, name: str) -> list[object]:
        values = self._values.get(name, [])
        assert isinstance(values, list)
        return values


_EMPTY = Fields({})


def parse(data: bytes, schema: Schema, root: str, what: str, max_fields: int) -> Fields:
    """Parse ``data`` as a ``root`` message; ``what`` names the file in error messages."""
    return _Reader(memoryview(data), schema, what, max_fields).message(root, 0, len(data), "")


class _Reader:
    def __init__(self, data: memoryview, schema: Schema, what: str, max_fields: int) -> None:
        self.data = data
        self.schema = schema
        self.what = what
        self.fields_left = max_fields
        self.max_fields = max_fields

    def fail(self, path: str, problem: str) -> FormatError:
        return FormatError(f"{self.what}: {path or 'top level'}: {problem}")

    def message(self, name: str, pos: int, end: int, path: str) -> Fields:
        fields = self.schema[name]
        values: dict[str, object] = {}
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise self.fail(path, f"more than {self.max_fields} protobuf fields in all")
            tag_start = pos
            tag, pos = self.varint(pos, end, path)
            number, wire = tag >> 3, tag & 7
            field = fields.get(number)
            if field is None:
                raise self.fail(path, f"unexpected field {number} in a {name}")
            here = f"{path}.{field.name}" if path else field.name
            if field.kind is Kind.UNREAD:
                pos = self.step_over(wire, tag_start, pos, end, here)
            elif field.kind is Kind.COUNT:
                count, pos = self.count(wire, tag_start, pos, end, here)
                counted = values.get(field.name, 0)
                assert isinstance(counted, int)
                values[field.name] = counted + count
            elif field.kind is Kind.INTS:
                numbers, pos = self.ints(wire, pos, end, here)
                listed = values.setdefault(field.name, [])
                assert isinstance(listed, list)
                listed.extend(numbers)
            elif field.repeated:
                listed = values.setdefault(field.name, [])
                assert isinstance(listed, list)
                value, pos = self.value(field, wire, pos, end, f"{here}[{len(listed)}]")
                listed.append(value)
            elif field.name in values:
                raise self.fail(here, "given twice")
            else:
                values[field.name], pos = self.value(field, wire, pos, end, here)
        return Fields(values)

    def value(self, field: Field, wire: int, pos: int, end: int, path: str) -> tuple[object, int]:
        if field.kind is Kind.INT:
            self.expect(wire, _VARINT, path)
            number, pos = self.varint(pos, end, path)
            return _signed(number), pos
        self.expect(wire, _LENGTH, path)
        start, stop = self.length(pos, end, path)
        if field.kind is Kind.MESSAGE:
            return self.message(field.message, start, stop, path), stop
        if field.kind is Kind.STRING:
            if stop - start > MAX_STRING_BYTES:
                raise self.fail(
                    path, f"a string of {stop - start} bytes (at most {MAX_STRING_BYTES})"
                )
            try:
                return str(self.data[start:stop], "utf-8"), stop
            except UnicodeDecodeError:
                raise self.fail(path, "a string that is not UTF-8") from None
        return self.data[start:stop], stop

    def ints(self, wire: int, pos: int, end: int, path: str) -> tuple[list[int], int]:
        """One int64, or a packed run of them."""
        if wire == _VARINT:
            number, pos = self.varint(pos, end, path)
            return [_signed(number)], pos
        self.expect(wire, _LENGTH, path)
        start, stop = self.length(pos, end, path)
        numbers = []
        while start < stop:
            self.fields_left -= 1  # each costs what a field does
            number, start = self.varint(start, stop, path)
            numbers.append(_signed(number))
        return numbers, stop

    def count(self, wire: int, tag_start: int, pos: int, end: int, path: str) -> tuple[int, int]:
        """How many int64s this field holds, packed or as a run of one per field, and where it
        ends; by counting bytes below 0x80, which end each varint and each tag of a run."""
        if wire == _LENGTH:
            start, stop = self.length(pos, end, path)
            return _low_bytes(self.data[start:stop]), stop
        self.expect(wire, _VARINT, path)
        stop = self.step_over(wire, tag_start, pos, end, path)
        return _low_bytes(self.data[tag_start:stop]) // 2, stop

    def step_over(self, wire: int, tag_start: int, pos: int, end: int, path: str) -> int:
        if wire == _LENGTH:
            return self.length(pos, end, path)[1]
        if wire not in _WIRE_NAMES:
            raise self.fail(path, f"wire type {wire}, which no field uses")
        # The whole run of this same field, a few thousand at a regular-expression match.
        pattern = _run_pattern(bytes(self.data[tag_start:pos]), wire)
        at = tag_start
        while (run := pattern.match(self.data, at, end)) is not None:
            at = run.end()
        if at == tag_start:
            raise self.fail(path, f"a malformed {_WIRE_NAMES[wire]} value")
        return at

    def expect(self, wire: int, wanted: int, path: str) -> None:
        if wire != wanted:
            got = _WIRE_NAMES.get(wire, f"wire type {wire}")
            raise self.fail(path, f"{got} where a {_WIRE_NAMES[wanted]} value belongs")

    def length(self, pos: int, end: int, path: str) -> tuple[int, int]:
        size, pos = self.varint(pos, end, path)
        if size > end - pos:
            raise self.fail(path, f"a {size}-byte field with {end - pos} bytes left")
        return pos, pos + size

    def varint(self, pos: int, end: int, path: str) -> tuple[int, int]:
        result = shift = 0
        while pos < end and shift < 70:
            byte = self.data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
        raise self.fail(path, "a truncated or overlong varint")


_LOW = bytes(range(0x80))
_SLICE = 1 << 16


def _low_bytes(data: memoryview) -> int:
    """How many bytes are below 0x80, a slice at a time so a huge field is never copied whole."""
    low = 0
    for start in range(0, len(data), _SLICE):
        chunk = bytes(data[start : start + _SLICE])
        low += len(chunk) - len(chunk.translate(None, _LOW))  # what is left is 0x80 and up
    return low


def _signed(number: int) -> int:
    number &= (1 << 64) - 1
    return number - (1 << 64) if number >= 1 << 63 else number


@functools.cache
def _run_pattern(tag: bytes, wire: int) -> re.Pattern[bytes]:
    """Up to 4096 consecutive fields with this exact tag: each a varint of 1-10 bytes, or a
    fixed width. Not unbounded: the engine keeps state for every repetition of a group, which
    made one 100 MB run take 14 s; in bounded matches it takes 1 s."""
    value = rb"[\x80-\xff]{0,9}[\x00-\x7f]" if wire == _VARINT else b".{%d}" % _FIXED_SIZE[wire]
    return re.compile(b"(?:" + re.escape(tag) + value + b"){1,4096}", re.DOTALL)
