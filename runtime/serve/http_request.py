"""HTTP/1.1 request heads from bytes: the request line and the header section, checked by
``http.server.BaseHTTPRequestHandler``'s rules, and the body's declared length.

No sockets here: the connection hands over its received bytes once a head has arrived whole
(``head_complete``), and gets back the parsed ``Head``, or the status and one-line text the
request is refused with. Written here rather than taken from ``http.server``, which imports
``http.client``, ``email`` and ``ssl``: about 7 MB of resident memory a device's server has no
use for.

Bodies need a ``Content-Length``: chunked uploads are answered 411 (a device API gains nothing
from them, and a fixed length lets an oversized body be refused with 413 before it is read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgebundle.runtime.serve.httpio import HttpError

MAX_REQUEST_LINE = 65536  # as http.server
# The stdlib's bounds on a header section, kept alongside our byte budget for the whole section.
MAX_HEADER_LINE = 65536
MAX_HEADER_LINES = 100  # counting the blank line that ends the section, as http.client does
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
_HEAD_END = re.compile(rb"\n\r?\n")  # the blank line that ends a header section
_SECTION_END = (b"\r\n", b"\n")
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


@dataclass(frozen=True, slots=True)
class Head:
    """A request's line and header section."""

    method: str  # "" when the request line is refused
    path: str
    version: str  # as sent: "HTTP/1.1"; "HTTP/0.9" for a request line without one
    fields: HeaderFields
    close: bool  # the connection ends with this request's answer
    expects_continue: bool  # the client waits for "100 Continue" before sending the body
    refusal: HttpError | None  # why it is answered without being dispatched


def head_complete(buffer: bytes | bytearray, max_header_bytes: int) -> bool:
    """Whether ``parse_head`` can run on the bytes that have arrived, without waiting: the blank
    line ending the header section is here, the request line is blank, or a limit is passed."""
    if _HEAD_END.search(buffer) or buffer.startswith((b"\n", b"\r\n")):
        return True
    first = buffer.find(b"\n")
    if first < 0:
        return len(buffer) > MAX_REQUEST_LINE
    return len(buffer) - first - 1 > max_header_bytes


def parse_head(buffer: bytearray, max_header_bytes: int) -> Head | None:
    """Take the head of the request at the front of ``buffer`` off it, leaving its body and any
    pipelined requests after it; only once ``head_complete`` holds. None when the request line
    is blank: there is no request, and the connection ends."""
    line = _take_line(buffer, MAX_REQUEST_LINE + 1)
    if len(line) > MAX_REQUEST_LINE:
        return _refused(414)
    words = str(line, "latin-1").rstrip("\r\n").split()
    if not words:
        return None
    version = words[-1] if len(words) >= 3 else "HTTP/0.9"  # no version: HTTP/0.9, GET only
    number = _http_version(version)
    if number is None:
        return _refused(400)
    if number >= (2, 0):
        return _refused(505)
    if not 2 <= len(words) <= 3 or (len(words) == 2 and words[0] != "GET"):
        return _refused(400)
    method, path = words[:2]
    # As the stdlib (gh-87389): "//host/x" must not read as a scheme-relative URL.
    path = "/" + path.lstrip("/") if path.startswith("//") else path
    try:
        fields = _read_fields(buffer, max_header_bytes)
    except HttpError as e:  # with the method: a HEAD request's refusal goes without a body
        return Head(method, path, version, HeaderFields(), True, False, e)
    connection = (fields.get("Connection") or "").lower()
    close = connection == "close" or (connection != "keep-alive" and number < (1, 1))
    # Versions compared as text, as http.server compares them.
    expects = (fields.get("Expect") or "").lower() == "100-continue" and version >= "HTTP/1.1"
    if method not in _METHODS:
        return Head(method, path, version, fields, True, expects, _protocol_error(501))
    return Head(method, path, version, fields, close, expects, None)


def declares_body(fields: HeaderFields) -> bool:
    """Whether the request says a body follows its head."""
    if "Transfer-Encoding" in fields:
        return True
    return (fields.get("Content-Length") or "").strip() not in ("", "0")


def content_length(fields: HeaderFields, limit: int) -> int:
    """The body's declared size; HttpError when it is undeclared, malformed or over ``limit``."""
    if "Transfer-Encoding" in fields:
        raise HttpError(411, "Transfer-Encoding is not supported; send a Content-Length")
    lengths = fields.get_all("Content-Length")
    if not lengths:
        raise HttpError(411, "a Content-Length header is required")
    text = lengths[0].strip()
    if len(set(lengths)) != 1 or not (text.isascii() and text.isdigit()):
        raise HttpError(400, "invalid Content-Length")
    if len(text) > 15 or int(text) > limit:
        raise HttpError(413, f"body of {text} bytes is over the limit of {limit} bytes")
    return int(text)


# Fixed texts: the stdlib's own messages quote the client's bytes back.
_PROTOCOL_ERRORS = {
    400: "malformed request line or header",
    414: "request line too long",
    501: "unsupported method",
    505: "unsupported HTTP version",
}


def _protocol_error(status: int) -> HttpError:
    return HttpError(status, _PROTOCOL_ERRORS[status])


def _refused(status: int) -> Head:
    """A request refused for its request line: no method, so its answer has a body."""
    return Head("", "", "HTTP/0.9", HeaderFields(), True, False, _protocol_error(status))


def _read_fields(buffer: bytearray, max_bytes: int) -> HeaderFields:
    """The header section after a request line, up to its blank line.

    At most ``max_bytes`` in all: the stdlib's per-line and line-count bounds alone allow
    6.4 MB per connection.
    """
    fields = HeaderFields()
    left = max_bytes
    for _ in range(MAX_HEADER_LINES):
        line = _take_line(buffer, min(left, MAX_HEADER_LINE) + 1)
        left -= len(line)
        if left < 0 or len(line) > MAX_HEADER_LINE:
            break
        if line in _SECTION_END:
            return fields
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):  # obsolete folding included
            raise _protocol_error(400)
        # Latin-1 and the value's edges as http.client leaves them: leading blanks dropped.
        fields.add(name.decode("latin-1"), value.decode("latin-1").lstrip(" \t").rstrip("\r\n"))
    # Over the byte budget, a line over its bound, or too many lines.
    limits = f"limit {max_bytes} bytes, {MAX_HEADER_LINES} lines"
    raise HttpError(431, f"request header section too large ({limits})")


def _take_line(buffer: bytearray, limit: int) -> bytes:
    """Up to and including the next ``\\n``, at most ``limit`` bytes."""
    end = buffer.find(b"\n", 0, limit)
    size = end + 1 if end >= 0 else min(limit, len(buffer))
    line = bytes(buffer[:size])
    del buffer[:size]
    return line


def _http_version(text: str) -> tuple[int, int] | None:
    """``(1, 1)`` from ``"HTTP/1.1"``; None unless ``HTTP/<digits>.<digits>``, 10 digits at most."""
    if not text.startswith("HTTP/"):
        return None
    numbers = text[5:].split(".")
    # isascii: str.isdigit() also accepts "²", which int() refuses.
    if len(numbers) != 2 or not all(n.isascii() and n.isdigit() and len(n) <= 10 for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1])
