"""Declarative JSON documents: a format object is a frozen dataclass whose fields are
``Annotated`` with the ``Rule`` that reads and writes their JSON value, and ``load`` / ``dump``
serve every such class (pypa/packaging's ``direct_url.py`` and ``pylock.py`` are the model).

A rule's reader gets the JSON value and its dotted path (``files.model.onnx.sha256``) and raises
``ManifestError`` naming that path. Every key is required: a value that may be absent is
present and ``null`` (``optional``), since absence is a typo; only keys added to a format
after its release (``extension``) may be left out: absent reads as None, so older documents
still read, and None is written by leaving the key out (never ``null``). Unknown keys are
refused. A field named ``format`` is read first, so a document of another format version is
refused as such rather than for the keys that version defines. Rules that tie fields together
go in the class's ``check()`` method, which ``load`` runs once the fields are read; it (and a
``__post_init__``) raises ``ManifestError`` with a path relative to the document (``keys``, or
``""`` for the document itself), which ``load`` places under the document's own path.
"""

from __future__ import annotations

import functools
import re
import typing
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from edgebundle.runtime._json import (
    join,
    quote,
    read_array,
    read_count,
    read_object,
    reject_unknown,
)
from edgebundle.runtime._json import read_boolean as read_boolean
from edgebundle.runtime._json import read_integer as read_integer
from edgebundle.runtime._json import read_number as read_number
from edgebundle.runtime._json import read_string as read_string
from edgebundle.runtime._json import read_timestamp as read_timestamp
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.semver import Version

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")
_Doc = TypeVar("_Doc", bound="Document")

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Control characters and line breaks would let a field forge lines in logs and reports.
_FORBIDDEN_CATEGORIES = ("Cc", "Zl", "Zp")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Rule(Generic[T]):
    """How one field's JSON value is read (``read(value, path)``) and written."""

    read: Callable[[Any, str], T]
    write: Callable[[T], Any] = _same
    # an extension key (see ``extension``): absent reads as None, None is not written
    omissible: bool = False


# --- the loader ------------------------------------------------------------------------------


def load(cls: type[D], value: object, context: str = "") -> D:
    """``cls`` read from the JSON ``value``, strictly."""
    values = read_object(value, context)
    rules = _rules(cls)
    fields_read: dict[str, Any] = {}
    if "format" in rules:
        fields_read["format"] = _field(rules["format"], values, "format", context)
    reject_unknown(values, rules, context)
    for name, rule in rules.items():
        if name not in fields_read:
            fields_read[name] = _field(rule, values, name, context)
    try:
        document = cls(**fields_read)
        check = getattr(document, "check", None)
        if check is not None:
            check()
    except ManifestError as e:  # a rule of the class's own: its path is relative to it
        raise ManifestError(e.detail, context=under(context, e.context)) from None
    return document


def under(context: str, path: str) -> str:
    """``path`` (``keys``, ``[2].sha256`` or ``""`` for the document itself) inside ``context``."""
    if not context or not path:
        return context or path
    return context + path if path.startswith("[") else f"{context}.{path}"


def dump(document: DataclassInstance) -> dict[str, Any]:
    """The JSON value of ``document``: what ``load`` reads back as an equal document."""
    rules = _rules(type(document))
    return {
        name: rule.write(getattr(document, name))
        for name, rule in rules.items()
        if not (rule.omissible and getattr(document, name) is None)
    }


def check_fields(document: DataclassInstance) -> None:
    """Hold a document built in code to the rules it would be read by (for a ``__post_init__``
    whose class is also built outside the loader, such as a fresh signature)."""
    for name, rule in _rules(type(document)).items():
        rule.read(rule.write(getattr(document, name)), name)


class Document:
    """``from_dict`` / ``to_dict`` for a dataclass whose fields carry their rules."""

    __slots__ = ()

    @classmethod
    def from_dict(cls: type[_Doc], d: Mapping[str, Any], context: str = "") -> _Doc:
        return cast(_Doc, load(cast(Any, cls), d, context))

    def to_dict(self) -> dict[str, Any]:
        return dump(cast(Any, self))


def _field(rule: Rule[Any], d: Mapping[str, Any], name: str, context: str) -> Any:
    if name not in d and rule.omissible:
        return None
    if name not in d:
        raise ManifestError("missing required key", context=join(context, name))
    return rule.read(d[name], join(context, name))


@functools.cache
def _rules(cls: type[DataclassInstance]) -> Mapping[str, Rule[Any]]:
    """Each field's rule, from its ``Annotated`` type, in field order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    rules = {}
    for item in fields(cls):
        found = [m for m in getattr(hints[item.name], "__metadata__", ()) if isinstance(m, Rule)]
        if len(found) != 1:
            raise TypeError(f"{cls.__name__}.{item.name} needs exactly one Rule in Annotated[]")
        rules[item.name] = found[0]
    return MappingProxyType(rules)


# --- values ----------------------------------------------------------------------------------


def read_text(value: object, path: str) -> str:
    """A non-empty string free of control characters and line breaks."""
    text = read_string(value, path)
    if not text:
        raise ManifestError("must not be empty", context=path)
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text):
        raise ManifestError("must not contain control characters or line breaks", context=path)
    return text


def read_version(value: object, path: str) -> Version:
    return Version.parse(read_string(value, path), context=path)


# --- rules -----------------------------------------------------------------------------------

STRING: Rule[str] = Rule(read_string)
TEXT: Rule[str] = Rule(read_text)
BOOLEAN: Rule[bool] = Rule(read_boolean)
NUMBER: Rule[float] = Rule(read_number)
TIMESTAMP: Rule[str] = Rule(read_timestamp)
VERSION: Rule[Version] = Rule(read_version, str)


def matching(pattern: re.Pattern[str], description: str) -> Rule[str]:
    def read(value: object, path: str) -> str:
        text = read_string(value, path)
        if not pattern.fullmatch(text):
            raise ManifestError(f"{quote(text)} is not {description}", context=path)
        return text

    return Rule(read)


SHA256 = matching(_SHA256, "a sha256 digest (64 lowercase hex digits)")


def choice(options: tuple[str, ...]) -> Rule[str]:
    def read(value: object, path: str) -> str:
        text = read_string(value, path)
        if text not in options:
            allowed = ", ".join(repr(option) for option in options)
            raise ManifestError(f"{quote(text)} is not one of {allowed}", path)
        return text

    return Rule(read)


def constant(expected: str | tuple[str, ...], what: str) -> Rule[str]:
    """A format id (or one of several a class reads): anything else is another format,
    refused by name."""
    accepted = (expected,) if isinstance(expected, str) else expected

    def read(value: object, path: str) -> str:
        text = read_string(value, path)
        if text not in accepted:
            reads = " or ".join(repr(item) for item in accepted)
            raise ManifestError(
                f"unsupported {what} format {quote(text)} (this runtime reads {reads})",
                context=path,
            )
        return text

    return Rule(read)


def count(minimum: int = 0) -> Rule[int]:
    return Rule(lambda value, path: read_count(value, path, minimum))


COUNT = count()


def _bounded(test: Callable[[float], bool], rule: str) -> Rule[float]:
    def read(value: object, path: str) -> float:
        number = read_number(value, path)
        if not test(number):
            raise ManifestError(f"must be {rule}, got {number!r}", context=path)
        return number

    return Rule(read)


NON_NEGATIVE = _bounded(lambda x: x >= 0, ">= 0")
POSITIVE = _bounded(lambda x: x > 0, "> 0")
FRACTION = _bounded(lambda x: 0 <= x <= 1, "between 0 and 1")


def optional(rule: Rule[T]) -> Rule[T | None]:
    """Present, and ``null`` or what ``rule`` reads."""

    def read(value: object, path: str) -> T | None:
        return None if value is None else rule.read(value, path)

    def write(value: T | None) -> Any:
        return None if value is None else rule.write(value)

    return Rule(read, write)


def extension(rule: Rule[T]) -> Rule[T | None]:
    """A key added to a format after its first release: absent means None and None is not
    written, so documents that do not use it keep their bytes and older readers still read
    them (a reader that predates the key refuses a document that has it, as an unknown key)."""

    def read(value: object, path: str) -> T:
        if value is None:
            raise ManifestError("expected a value, got null (leave the key out instead)", path)
        return rule.read(value, path)

    def write(value: T | None) -> Any:
        return None if value is None else rule.write(value)  # None is left out by ``dump``

    return Rule(read, write, omissible=True)


def nested(cls: type[D]) -> Rule[D]:
    return Rule(lambda value, path: load(cls, value, path), dump)


def array(
    rule: Rule[T], *, nonempty: bool = False, unique: tuple[Callable[[T], str], str] | None = None
) -> Rule[tuple[T, ...]]:
    """A JSON array read into a tuple; ``unique=(key, what)`` refuses two items with one key."""

    def read(value: object, path: str) -> tuple[T, ...]:
        value = read_array(value, path)
        if nonempty and not value:
            raise ManifestError("must not be empty", context=path)
        items = tuple(rule.read(item, f"{path}[{index}]") for index, item in enumerate(value))
        if unique is not None:
            check_unique([unique[0](item) for item in items], unique[1], path)
        return items

    return Rule(read, lambda items: [rule.write(item) for item in items])


def mapping(
    rule: Rule[T], *, key: Callable[[str, str], None] | None = None, nonempty: bool = False
) -> Rule[Mapping[str, T]]:
    """A JSON object read into a read-only mapping sorted by key; ``key(name, path)`` vets
    each key (raising ``ManifestError``) before its value is read."""

    def read(value: object, path: str) -> Mapping[str, T]:
        value = read_object(value, path)
        if nonempty and not value:
            raise ManifestError("must not be empty", context=path)
        if key is not None:
            for name in value:
                key(name, path)
        return freeze({name: rule.read(item, join(path, name)) for name, item in value.items()})

    return Rule(read, lambda items: {name: rule.write(item) for name, item in items.items()})


def freeze(items: Mapping[str, T]) -> Mapping[str, T]:
    return MappingProxyType(dict(sorted(items.items())))


def check_unique(names: list[str], what: str, context: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ManifestError(f"duplicate {what} {quote(name)}", context=context)
        seen.add(name)
