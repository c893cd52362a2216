"""What the HTTP server's modules share: the error an endpoint raises, the response it returns,
strict JSON in and out, and an error in one line for the log.

Request JSON is read as strictly as input rows (``rows.py``): UTF-8 only, no ``NaN`` or
``Infinity`` tokens, no duplicate keys, so a body means one thing or is refused with a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    model: str = ""  # the served model it concerned, for the metrics' model label


def json_response(status: int, value: object, model: str = "") -> Response:
    return Response(status, encode_json(value), model=model)


def error_response(error: HttpError, model: str = "") -> Response:
    body = encode_json({"error": error.message})
    return Response(error.status, body, headers=error.headers, model=model)


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


def one_line(error: BaseException) -> str:
    """The first line of an error's text: a log line per failure, never a traceback."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
