"""The protobuf reader on hand-made wire bytes: what it reads, what it steps over, and the one
line it refuses everything else with."""

from __future__ import annotations

import pytest

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck.protowire import (
    MAX_STRING_BYTES,
    Field,
    Fields,
    Kind,
    Schema,
    parse,
)

VARINT, FIXED64, LENGTH, START_GROUP, FIXED32 = 0, 1, 2, 3, 5

SCHEMA: Schema = {
    "Root": {
        1: Field("id", Kind.INT),
        2: Field("name", Kind.STRING),
        3: Field("child", Kind.MESSAGE, message="Child"),
        4: Field("children", Kind.MESSAGE, repeated=True, message="Child"),
        5: Field("dims", Kind.INTS),
        6: Field("sizes", Kind.COUNT),
        7: Field("note", Kind.UNREAD),
        8: Field("blob", Kind.BYTES),
        9: Field("tags", Kind.STRING, repeated=True),
        10: Field("skipped", Kind.UNREAD, repeated=True),
    },
    "Child": {1: Field("value", Kind.INT)},
}


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1  # negative int64s are ten bytes on the wire
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def int_field(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


def length_field(number: int, payload: bytes) -> bytes:
    return tag(number, LENGTH) + varint(len(payload)) + payload


def packed(number: int, values: list[int]) -> bytes:
    return length_field(number, b"".join(varint(v) for v in values))


def read(data: bytes, max_fields: int = 1000) -> Fields:
    return parse(data, SCHEMA, "Root", "x.onnx", max_fields)


def refusal(data: bytes, max_fields: int = 1000) -> str:
    with pytest.raises(FormatError) as info:
        read(data, max_fields)
    return str(info.value)


# --- what it reads ----------------------------------------------------------------------------


def test_absent_fields_read_as_defaults() -> None:
    fields = read(b"")
    assert not fields.has("id") and not fields.has("child")
    assert fields.get_int("id") == 0
    assert fields.get_str("name") == ""
    assert bytes(fields.get_bytes("blob")) == b""
    assert not fields.get_message("child").has("value")
    assert fields.get_messages("children") == []
    assert fields.get_ints("dims") == []
    assert fields.get_strs("tags") == []


@pytest.mark.parametrize("value", [0, 1, 150, 1 << 40, (1 << 63) - 1, -1, -(1 << 63)])
def test_an_int_is_a_signed_int64(value: int) -> None:
    assert read(int_field(1, value)).get_int("id") == value


def test_strings_are_utf8() -> None:
    data = length_field(2, "héllo".encode()) + length_field(9, b"a") + length_field(9, b"b")
    fields = read(data)
    assert fields.get_str("name") == "héllo"
    assert fields.get_strs("tags") == ["a", "b"]


def test_messages_nest_and_repeat() -> None:
    data = (
        length_field(3, int_field(1, 7))
        + length_field(4, int_field(1, 1))
        + length_field(4, b"")
        + length_field(4, int_field(1, -3))
    )
    fields = read(data)
    assert fields.get_message("child").get_int("value") == 7
    assert [child.get_int("value") for child in fields.get_messages("children")] == [1, 0, -3]


def test_ints_packed_and_one_per_field_add_up_in_order() -> None:
    data = packed(5, [1, -2, 300]) + int_field(5, 5) + packed(5, [])
    assert read(data).get_ints("dims") == [1, -2, 300, 5]


def test_a_count_keeps_how_many_numbers_there_are() -> None:
    # packed runs and runs of one number per field, however large the numbers
    data = packed(6, [1, 1 << 50, -1]) + b"".join(int_field(6, v) for v in (0, 200, -5, 9))
    data += tag(7, VARINT) + varint(1) + packed(6, [4, 4])
    assert read(data).get_int("sizes") == 3 + 4 + 2


def test_bytes_are_a_view_of_the_input() -> None:
    value = read(length_field(8, b"\x00\xff\x10")).get_bytes("blob")
    assert isinstance(value, memoryview)
    assert bytes(value) == b"\x00\xff\x10"


@pytest.mark.parametrize(
    "encoded",
    [
        int_field(7, 1 << 60),
        tag(7, FIXED64) + bytes(8),
        tag(7, FIXED32) + bytes(4),
        length_field(7, b"anything at all"),
    ],
    ids=["varint", "fixed64", "fixed32", "length-delimited"],
)
def test_an_unread_field_is_stepped_over_whatever_its_wire_type(encoded: bytes) -> None:
    assert read(encoded + int_field(1, 3)).get_int("id") == 3


def test_a_long_run_of_an_unread_field_costs_one_field_of_the_budget() -> None:
    run = b"".join(int_field(10, i) for i in range(20_000))
    assert read(run + int_field(1, 3), max_fields=2).get_int("id") == 3


# --- what it refuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (int_field(11, 1), "x.onnx: top level: unexpected field 11 in a Root"),
        (length_field(3, int_field(2, 1)), "x.onnx: child: unexpected field 2 in a Child"),
        (
            length_field(4, b"") + length_field(4, int_field(1, 1) + int_field(1, 2)),
            "x.onnx: children[1].value: given twice",
        ),
        (int_field(1, 1) + int_field(1, 1), "x.onnx: id: given twice"),
        (length_field(1, b"\x01"), "x.onnx: id: length-delimited where a varint value belongs"),
        (int_field(2, 1), "x.onnx: name: varint where a length-delimited value belongs"),
        (tag(1, START_GROUP), "x.onnx: id: wire type 3 where a varint value belongs"),
        (tag(6, FIXED32) + bytes(4), "x.onnx: sizes: fixed32 where a varint value belongs"),
        (tag(7, START_GROUP), "x.onnx: note: wire type 3, which no field uses"),
        (tag(7, FIXED64) + bytes(3), "x.onnx: note: a malformed fixed64 value"),
        (b"\x08\x80", "x.onnx: id: a truncated or overlong varint"),
        (b"\x08" + b"\x80" * 10 + b"\x01", "x.onnx: id: a truncated or overlong varint"),
        (b"\x80", "x.onnx: top level: a truncated or overlong varint"),
        (tag(2, LENGTH) + varint(5) + b"ab", "x.onnx: name: a 5-byte field with 2 bytes left"),
        (length_field(2, b"\xff"), "x.onnx: name: a string that is not UTF-8"),
        (
            length_field(2, b"a" * (MAX_STRING_BYTES + 1)),
            f"x.onnx: name: a string of {MAX_STRING_BYTES + 1} bytes (at most {MAX_STRING_BYTES})",
        ),
    ],
)
def test_refusals_name_the_field_and_the_problem(data: bytes, message: str) -> None:
    assert refusal(data) == message


def test_fields_beyond_the_budget_are_refused() -> None:
    data = b"".join(length_field(9, b"t") for _ in range(4))
    assert read(data, max_fields=4).get_strs("tags") == ["t"] * 4
    assert refusal(data, max_fields=3) == "x.onnx: top level: more than 3 protobuf fields in all"


def test_packed_numbers_count_against_the_budget() -> None:
    data = packed(5, [1, 2, 3, 4]) + int_field(1, 1)  # six fields' worth
    assert read(data, max_fields=6).get_int("id") == 1
    assert refusal(data, max_fields=5) == "x.onnx: top level: more than 5 protobuf fields in all"
