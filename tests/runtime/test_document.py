"""The declarative loader every JSON document shares (``runtime.document``), on small documents
of its own: what it refuses, the path it names, and that ``dump`` writes what ``load`` reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from edgebundle.runtime.document import (
    COUNT,
    SHA256,
    STRING,
    TEXT,
    Document,
    array,
    check_fields,
    constant,
    mapping,
    matching,
    nested,
    optional,
    under,
)
from edgebundle.runtime.errors import ManifestError


@dataclass(frozen=True, kw_only=True, slots=True)
class Item(Document):
    name: Annotated[str, matching(re.compile(r"[a-z]+"), "a lowercase word")]
    size: Annotated[int, COUNT]
    low: Annotated[int, COUNT]

    def check(self) -> None:
        if self.low > self.size:
            raise ManifestError(f"must be <= size ({self.size}), got {self.low}", "low")


@dataclass(frozen=True, kw_only=True, slots=True)
class Box(Document):
    format: Annotated[str, constant(("box/2", "box/1"), "box")]
    label: Annotated[str | None, optional(TEXT)]
    items: Annotated[tuple[Item, ...], array(nested(Item), unique=(lambda i: i.name, "name"))]
    tags: Annotated[Mapping[str, str], mapping(SHA256)]

    def check(self) -> None:
        if self.format == "box/1" and self.label is not None:
            raise ManifestError("box/1 has no label")


@dataclass(frozen=True, kw_only=True, slots=True)
class Signed(Document):
    """Built in code as well as read: it holds itself to its rules on construction."""

    digest: Annotated[str, SHA256]
    signer: Annotated[str, STRING]

    def __post_init__(self) -> None:
        check_fields(self)


def box(**change: object) -> dict[str, Any]:
    d: dict[str, Any] = {
        "format": "box/2",
        "label": "spare parts",
        "items": [{"name": "bolt", "size": 3, "low": 1}, {"name": "nut", "size": 2, "low": 0}],
        "tags": {"b": "b" * 64, "a": "a" * 64},
    }
    return {**d, **change}


def refused(d: dict[str, Any], path: str, message: str, context: str = "box.json") -> None:
    with pytest.raises(ManifestError) as e:
        Box.from_dict(d, context)
    assert e.value.context == path, str(e.value)
    assert message in e.value.detail, str(e.value)
    assert str(e.value) == (f"{path}: {e.value.detail}" if path else e.value.detail)


def test_dump_writes_what_load_reads() -> None:
    document = Box.from_dict(box())
    assert document.to_dict() == box()
    assert Box.from_dict(document.to_dict()) == document
    assert list(document.tags) == ["a", "b"]  # a mapping is read sorted by key


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"items": [{"name": "bolt", "size": True, "low": 0}]}, "box.json.items[0].size", "got a"),
        ({"items": [{"name": "Bolt", "size": 1, "low": 0}]}, "box.json.items[0].name", "lowercase"),
        ({"items": [{"name": "bolt", "size": 1}]}, "box.json.items[0].low", "missing required"),
        ({"items": [{"name": "a", "size": 1, "low": 0, "x": 1}]}, "box.json.items[0]", "'x'"),
        ({"items": [{"name": "a", "size": 1, "low": 0}] * 2}, "box.json.items", "duplicate name"),
        ({"tags": {"a": "A" * 64}}, "box.json.tags.a", "is not a sha256"),
        ({"label": ""}, "box.json.label", "must not be empty"),
        ({"label": "two\nlines"}, "box.json.label", "control characters"),
        ({"extra": 1}, "box.json", "unknown key 'extra'"),
    ],
    ids=[
        "bool-count",
        "pattern",
        "missing",
        "unknown-nested",
        "unique",
        "map",
        "empty",
        "nl",
        "key",
    ],
)
def test_a_field_is_refused_by_its_path(change: dict[str, Any], path: str, message: str) -> None:
    refused(box(**change), path, message)


def test_the_format_is_read_before_anything_else() -> None:
    # Another format is refused as such, not for a key the other version defines.
    refused(box(format="box/3", extra=1), "box.json.format", "unsupported box format 'box/3'")
    with pytest.raises(ManifestError, match=r"reads 'box/2' or 'box/1'\)$"):
        Box.from_dict(box(format="box/3"))


def test_a_check_names_its_field_under_the_document_path() -> None:
    bad = {"name": "bolt", "size": 1, "low": 2}
    refused(box(items=[bad]), "box.json.items[0].low", "must be <= size (1), got 2")
    refused(box(items=[bad]), "items[0].low", "must be <= size (1), got 2", context="")


def test_a_check_about_the_whole_document_names_the_document() -> None:
    refused(box(format="box/1"), "box.json", "box/1 has no label")
    refused(box(format="box/1"), "", "box/1 has no label", context="")
    assert Box.from_dict(box(format="box/1", label=None)).label is None


def test_a_document_built_in_code_obeys_the_rules_of_one_read() -> None:
    assert Signed(digest="c" * 64, signer="ci").to_dict() == {"digest": "c" * 64, "signer": "ci"}
    with pytest.raises(ManifestError, match=r"^digest: 'C+' is not a sha256"):
        Signed(digest="C" * 64, signer="ci")
    with pytest.raises(ManifestError, match=r"^signer: expected a string, got an integer$"):
        Signed(digest="c" * 64, signer=7)  # type: ignore[arg-type]


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"^expected an object, got an array$"):
        Box.from_dict([])  # type: ignore[arg-type]
    refused(box(items=[[]]), "box.json.items[0]", "expected an object, got an array")


@pytest.mark.parametrize(
    ("context", "path", "joined"),
    [
        ("", "keys", "keys"),
        ("keys/2.json", "", "keys/2.json"),
        ("keys/2.json", "keys", "keys/2.json.keys"),
        ("bundles", "[2].sha256", "bundles[2].sha256"),
        ("", "", ""),
    ],
)
def test_under(context: str, path: str, joined: str) -> None:
    assert under(context, path) == joined
