"""What the HTTP endpoints share: the error they raise, strict JSON in and out, and a strict
reader of request header sections.

Request JSON is read as strictly as input rows (``rows.py``): UTF-8 only, no ``NaN`` or
``Infinity`` tokens, no duplicate keys, so a body means one thing or is refused with a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from edgebundle.runtime._json import quote, strict_decoder

JSON_TYPE = "application/json"


class HttpError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


_DECODER = strict_decoder(
    lambda key: bad_request(f"JSON body has a duplicate key {quote(key)}"),
    lambda token: bad_request(
        f"JSON body contains {token}, which is not JSON; send null for missing"
    ),
)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def decode_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"JSON body is not valid UTF-8 (byte {e.start})") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise bad_request(
            f"invalid JSON body: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except ValueError as e:  # integers beyond the interpreter's digit limit
        raise bad_request(f"invalid JSON body: {e}") from None
    except RecursionError:
        raise bad_request("invalid JSON body: nested too deeply") from None


def encode_json(value: object) -> bytes:
    """Compact ASCII JSON; callers have already turned non-finite floats into ``None``."""
    return _ENCODER.encode(value).encode("ascii")


def media_type(content_type: str | None) -> str:
    """``"application/json"`` from ``"Application/JSON; charset=utf-8"``; "" when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


# The stdlib's bounds on a header section, kept alongside our byte budget for the whole section.
MAX_HEADER_LINE = 65536
MAX_HEADER_LINES = 100  # counting the blank line that ends the section, as http.client does
_HEADER_END = (b"\r\n", b"\n", b"")
# RFC 9110 token characters: what a header name may be made of.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HeaderFields:
    """A request's header fields by case-insensitive name, in arrival order.

    Replaces the stdlib's ``email.message.Message``: its parser costs more than scoring a row,
    and it accepts malformed lines silently (dropping every header after them), where this
    refuses them.
    """

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self._fields.setdefault(name.lower(), []).append(value)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._fields

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        values = self._fields.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._fields.get(name.lower(), [])


class HeaderSectionTooLarge(Exception):
    """Over ``max_bytes``, a line over ``MAX_HEADER_LINE`` or over ``MAX_HEADER_LINES``: 431."""


class MalformedHeader(Exception):
    """A line that is not ``name: value`` (obsolete line folding included): 400."""


def read_header_fields(readline: Callable[[int], bytes], max_bytes: int) -> HeaderFields:
    """The header section after a request line, read with ``readline`` up to its blank line.

    At most ``max_bytes`` in all: the stdlib's per-line and line-count bounds alone allow
    6.4 MB per connection.
    """
    fields = HeaderFields()
    left = max_bytes
    for _ in range(MAX_HEADER_LINES):
        line = readline(min(left, MAX_HEADER_LINE) + 1)
        left -= len(line)
        if left < 0 or len(line) > MAX_HEADER_LINE:
            raise HeaderSectionTooLarge
        if line in _HEADER_END:
            return fields
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise MalformedHeader
        # Latin-1 and the value's edges as http.client leaves them: leading blanks dropped.
        fields.add(name.decode("latin-1"), value.decode("latin-1").lstrip(" \t").rstrip("\r\n"))
    raise HeaderSectionTooLarge
