"""HTTP/1.1 responses to bytes: the status line and headers every answer carries, then its
body, in one buffer for one ``send`` (``connection.py`` says why)."""

from __future__ import annotations

import time
from http import HTTPStatus

from edgebundle.runtime import __version__
from edgebundle.runtime.serve.httpio import Response, encode_json

SERVER = f"edgebundle/{__version__}"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {int(status): status.phrase for status in HTTPStatus}


def encode_response(response: Response, *, method: str, version: str, close: bool) -> bytes:
    """The answer to a ``method`` request sent as HTTP ``version``; ``close``: the connection
    ends after it. A HEAD request's answer has the headers of the GET answer and no body."""
    lines = [
        f"HTTP/1.1 {response.status} {_PHRASES.get(response.status, 'Unknown')}",
        f"Server: {SERVER}",
        f"Date: {_http_date()}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    if close:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":  # which closes after each answer unless told otherwise
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + response.body


def _at_once(status: int, message: str) -> bytes:
    """An answer sent without reading a request, then the connection is closed."""
    body = encode_json({"error": message})
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    head = (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{retry}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# Answers to a connection whatever it asks, sent as it is accepted or closed: over
# max_connections, over max_connections_per_peer, closed to make room for a new one, and
# plain HTTP sent to a TLS port.
TOO_MANY_CONNECTIONS = _at_once(503, "server busy: too many open connections; retry")
TOO_MANY_FROM_PEER = _at_once(503, "too many open connections from your address; retry")
MADE_ROOM = _at_once(503, "server busy: this connection waited too long for a request; retry")
PLAIN_HTTP_ON_TLS = _at_once(400, "this port speaks HTTPS; use an https:// URL")

# (second, its Date header text): formatting a date per response costs as much as the rest of
# the header; every thread may replace it, and any of them writes a correct value.
_date_cache = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        t = time.gmtime(now)
        # Not strftime: %a and %b follow the process's locale; HTTP dates are English.
        text = (
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        )
        _date_cache = (now, text)
    return text


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
