"""Declarative JSON documents: a format object is a frozen dataclass whose fields are
``Annotated`` with the ``Rule`` that reads and writes their JSON value, and ``load`` / ``dump``
serve every such class (pypa/packaging's ``direct_url.py`` and ``pylock.py`` are the model).

A rule's reader gets the JSON value and its dotted path (``files.model.onnx.sha256``) and raises
``ManifestError`` naming that path. Every key is required: a value that may be absent is
present and ``null`` (``optional``), since absence is a typo; only keys added to a format
after its release (``extension``) may be left out. Unknown keys are refused. A field
named ``format`` is read first, so a document of another format version is refused as such
rather than for the keys that version defines. Rules that tie fields together go in the
class's ``check(context)`` method, which ``load`` runs once the fields are read.
"""

from __future__ import annotations

import functools
import math
import re
import typing
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from edgebundle.runtime._json import check_unicode, join, json_type, quote, reject_unknown
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.semver import Version

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIMESTAMP_RULE = "an RFC 3339 UTC time like 2025-01-31T12:00:00Z"
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
    if not isinstance(value, dict):
        raise ManifestError(f"expected an object, got {json_type(value)}", context)
    rules = _rules(cls)
    values: dict[str, Any] = {}
    if "format" in rules:
        values["format"] = _field(rules["format"], value, "format", context)
    reject_unknown(value, rules, context)
    for name, rule in rules.items():
        if name not in values:
            values[name] = _field(rule, value, name, context)
    document = cls(**values)
    check = getattr(document, "check", None)
    if check is not None:
        check(context)
    return document


def dump(document: DataclassInstance) -> dict[str, Any]:
    """The JSON value of ``document``: what ``load`` reads back as an equal document."""
    rules = _rules(type(document))
    return {
        name: rule.write(getattr(document, name))
        for name, rule in rules.items()
        if not (rule.omissible and getattr(document, name) is None)
    }


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


def _wrong(value: object, expected: str, path: str) -> ManifestError:
    return ManifestError(f"expected {expected}, got {json_type(value)}", context=path)


def read_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong(value, "a string", path)
    check_unicode(value, path)
    return value


def read_integer(value: object, path: str) -> int:
    # bool is an int subclass in Python; JSON true is never a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(value, "an integer", path)
    return value


def read_number(value: object, path: str) -> float:
    """A finite number; JSON integers are accepted (``0`` for ``0.0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(value, "a number", path)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ManifestError("number must be finite", context=path)
    return number


def read_boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong(value, "a boolean", path)
    return value


def read_text(value: object, path: str) -> str:
    """A non-empty string free of control characters and line breaks."""
    text = read_string(value, path)
    if not text:
        raise ManifestError("must not be empty", context=path)
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text):
        raise ManifestError("must not contain control characters or line breaks", context=path)
    return text


def read_timestamp(value: object, path: str) -> str:
    text = read_string(value, path)
    if not _TIMESTAMP.fullmatch(text):
        raise ManifestError(f"{quote(text)} is not {_TIMESTAMP_RULE}", context=path)
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise ManifestError(f"{quote(text)} is not {_TIMESTAMP_RULE}", context=path) from None
    return text


def read_version(value: object, path: str) -> Version:
    return Version.parse(read_string(value, path), context=path)


# --- rules -----------------------------------------------------------------------------------

STRING: Rule[str] = Rule(read_string)
TEXT: Rule[str] = Rule(read_text)
BOOLEAN: Rule[bool] = Rule(read_boolean)
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


def constant(expected: str, what: str) -> Rule[str]:
    """A format id: anything else is another format, refused by name."""

    def read(value: object, path: str) -> str:
        text = read_string(value, path)
        if text != expected:
            raise ManifestError(
                f"unsupported {what} format {quote(text)} (this runtime reads {expected!r})",
                context=path,
            )
        return text

    return Rule(read)


def count(minimum: int = 0) -> Rule[int]:
    def read(value: object, path: str) -> int:
        number = read_integer(value, path)
        if number < minimum:
            raise ManifestError(f"must be >= {minimum}, got {number}", context=path)
        return number

    return Rule(read)


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
            raise _wrong(value, "a value (leave the key out instead of null)", path)
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
        if not isinstance(value, list):
            raise _wrong(value, "an array", path)
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
        if not isinstance(value, dict):
            raise _wrong(value, "an object", path)
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
