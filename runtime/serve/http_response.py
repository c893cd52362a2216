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


def _too_many_connections() -> bytes:
    body = encode_json({"error": "server busy: too many open connections; retry"})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# The answer to a connection over max_connections, whatever it asks: sent as it is accepted.
TOO_MANY_CONNECTIONS = _too_many_connections()

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
