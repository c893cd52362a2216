"""Response encoding without a socket: the status line and headers, HEAD, the Connection
header each version needs, the Date header, and the answers sent as they are."""

from __future__ import annotations

import email.utils
import re
import time

import pytest

from edgebundle.runtime import __version__
from edgebundle.runtime.serve.http_response import (
    CONTINUE,
    TOO_MANY_CONNECTIONS,
    encode_response,
)
from edgebundle.runtime.serve.httpio import HttpError, Response, error_response

OK = Response(200, b'{"live":true}')


def split(data: bytes) -> tuple[list[str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


def test_a_response_is_its_status_line_headers_and_body_in_one_buffer() -> None:
    lines, body = split(encode_response(OK, method="GET", version="HTTP/1.1", close=False))
    assert lines[0] == "HTTP/1.1 200 OK"
    assert lines[1] == f"Server: edgebundle/{__version__}"
    assert re.fullmatch(r"Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", lines[2])
    assert lines[3:] == ["Content-Type: application/json", "Content-Length: 13"]
    assert body == b'{"live":true}'


def test_extra_headers_follow_the_standard_ones() -> None:
    response = error_response(HttpError(405, "no", (("Allow", "GET, HEAD"),)))
    lines, body = split(encode_response(response, method="PUT", version="HTTP/1.1", close=False))
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed"
    assert lines[-1] == "Allow: GET, HEAD"
    assert body == b'{"error":"no"}'


def test_a_head_answer_has_the_get_headers_and_no_body() -> None:
    get = encode_response(OK, method="GET", version="HTTP/1.1", close=False)
    head = encode_response(OK, method="HEAD", version="HTTP/1.1", close=False)
    assert head == get[: -len(OK.body)] and head.endswith(b"Content-Length: 13\r\n\r\n")


@pytest.mark.parametrize(
    ("version", "close", "connection"),
    [
        ("HTTP/1.1", False, None),
        ("HTTP/1.1", True, "close"),
        ("HTTP/1.0", False, "keep-alive"),  # 1.0 closes unless told otherwise
        ("HTTP/1.0", True, "close"),
        ("HTTP/0.9", False, None),
    ],
)
def test_the_connection_header_says_what_the_version_would_not(
    version: str, close: bool, connection: str | None
) -> None:
    lines, _ = split(encode_response(OK, method="GET", version=version, close=close))
    found = [line.removeprefix("Connection: ") for line in lines if line.startswith("Connection")]
    assert found == ([] if connection is None else [connection])


def test_a_status_without_a_phrase_is_unknown() -> None:
    data = encode_response(Response(599, b""), method="GET", version="HTTP/1.1", close=True)
    assert data.startswith(b"HTTP/1.1 599 Unknown\r\n")


def test_the_date_is_an_imf_fixdate_of_now() -> None:
    before = time.time()
    lines, _ = split(encode_response(OK, method="GET", version="HTTP/1.1", close=False))
    date = lines[2].removeprefix("Date: ")
    stamp = email.utils.parsedate_to_datetime(date).timestamp()
    assert int(before) <= stamp <= time.time()
    assert date == email.utils.formatdate(stamp, usegmt=True)


def test_the_continue_and_too_many_connections_answers_are_fixed_bytes() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    lines, body = split(TOO_MANY_CONNECTIONS)
    assert lines == [
        "HTTP/1.1 503 Service Unavailable",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Retry-After: 1",
        "Connection: close",
    ]
    assert body == b'{"error":"server busy: too many open connections; retry"}'
