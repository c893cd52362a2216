"""Strict JSON for signed documents: one parse, no ambiguity, typed field access.

Signed bytes must mean exactly one thing, so the parser refuses what ``json.loads`` tolerates:
duplicate keys (last one silently wins), ``NaN``/``Infinity`` tokens, numbers that overflow to
infinity, and bytes that are not UTF-8. The ``read_*`` functions check one parsed value each and
raise ``ManifestError`` carrying its dotted path, in the style of pypa/packaging's
``direct_url.py``; ``runtime.document`` builds its rules on them, and the ``get_*`` helpers read
one field of an object with them.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn, TypeVar

from edgebundle.runtime.errors import ManifestError

_T = TypeVar("_T")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def loads_strict(data: bytes, what: str) -> dict[str, Any]:
    """Parse ``data`` as one JSON object; ``what`` names the document in error messages."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{what} is not valid UTF-8 (byte {e.start})") from None
    decoder = strict_decoder(
        lambda key: ManifestError(f"{what} has a duplicate key {quote(key)}"),
        lambda token: ManifestError(f"{what} contains {token}, which is not JSON"),
        lambda token: _finite_float(token, what),
    )
    try:
        value = decoder.decode(text)
    except ValueError as e:  # JSONDecodeError, and ints beyond the interpreter's digit limit
        raise ManifestError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{what} must be a JSON object, not {json_type(value)}")
    return value


def strict_decoder(
    duplicate: Callable[[str], Exception],
    constant: Callable[[str], Exception],
    parse_float: Callable[[str], float] = float,
) -> json.JSONDecoder:
    """A decoder that raises ``duplicate(key)`` on a repeated key and ``constant(token)`` on
    ``NaN``/``Infinity``: the strictness every JSON input of ours shares, with each caller's
    own error. Build it once; ``json.loads`` with hooks builds one per call."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise duplicate(key)
            obj[key] = value
        return obj

    def refuse(token: str) -> NoReturn:
        raise constant(token)

    return json.JSONDecoder(
        object_pairs_hook=unique, parse_constant=refuse, parse_float=parse_float
    )


def _finite_float(token: str, what: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ManifestError(f"{what} contains the number {token}, which overflows a float")
    return value


def dumps_canonical(obj: Mapping[str, Any], compact: bool = False) -> bytes:
    """The one byte form of a signed document: sorted keys, UTF-8, final newline; 2-space
    indent for documents people read, ``compact`` for bulky data such as selftest rows."""
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False, **layout)
    return (text + "\n").encode("utf-8")


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def join(context: str, key: str) -> str:
    """Dotted path of ``key`` inside ``context`` (``files`` + ``model.onnx``)."""
    return f"{context}.{key}" if context else key


def quote(value: str) -> str:
    """``repr`` of a document's string for an error message, cut short: it may be hostile."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."


def reject_unknown(d: Mapping[str, Any], allowed: Collection[str], context: str) -> None:
    """Refuse keys this format version does not define, so typos never pass silently."""
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        # The key is named in the message, not the context: it is untrusted text.
        where = "key" if context else "top-level key"
        raise ManifestError(f"unknown {where} {quote(unknown[0])}", context=context)


# --- one JSON value each, ``path`` naming it in errors (``runtime.document`` builds on these) --


def _wrong(value: object, expected: str, path: str) -> ManifestError:
    return ManifestError(f"expected {expected}, got {json_type(value)}", context=path)


def read_string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong(value, "a string", path)
    check_unicode(value, path)
    return value


def check_unicode(value: str, context: str) -> None:
    """Refuse lone surrogates (legal in JSON escapes), which cannot be written back as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError("string holds a lone surrogate escape", context=context) from None


def read_integer(value: object, path: str) -> int:
    # bool is an int subclass in Python; JSON true is never a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(value, "an integer", path)
    return value


def read_count(value: object, path: str, minimum: int = 0) -> int:
    number = read_integer(value, path)
    if number < minimum:
        raise ManifestError(f"must be >= {minimum}, got {number}", context=path)
    return number


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


def read_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(value, "an object", path)
    return value


def read_array(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong(value, "an array", path)
    return value


def read_timestamp(value: object, path: str) -> str:
    """RFC 3339 UTC, whole seconds: ``2025-01-31T12:00:00Z``."""
    text = read_string(value, path)
    rule = "an RFC 3339 UTC time like 2025-01-31T12:00:00Z"
    if not _TIMESTAMP.fullmatch(text):
        raise ManifestError(f"{quote(text)} is not {rule}", context=path)
    try:
        datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise ManifestError(f"{quote(text)} is not {rule}", context=path) from None
    return text

