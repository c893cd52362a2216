"""The HTTP/1.1 request parser fed byte strings: whole heads, heads cut at every byte,
pipelined requests, refused request lines and header sections, and declared bodies."""

from __future__ import annotations

import pytest

from edgebundle.runtime.serve.http_request import (
    MAX_REQUEST_LINE,
    Head,
    HeaderFields,
    content_length,
    declares_body,
    head_complete,
    parse_head,
)
from edgebundle.runtime.serve.httpio import HttpError

LIMIT = 16 << 10  # ServerLimits' default max_header_bytes
BODY_LIMIT = 1 << 20
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


def parse(data: bytes, limit: int = LIMIT) -> tuple[Head | None, bytes]:
    """The head parsed from ``data`` (once it is complete) and the bytes left after it."""
    buffer = bytearray(data)
    assert head_complete(buffer, limit)
    return parse_head(buffer, limit), bytes(buffer)


def accepted(data: bytes, limit: int = LIMIT) -> Head:
    head, _ = parse(data, limit)
    assert head is not None and head.refusal is None, head
    return head


def refused(data: bytes, limit: int = LIMIT) -> tuple[HttpError, Head]:
    head, _ = parse(data, limit)
    assert head is not None and head.refusal is not None, head
    assert head.close
    return head.refusal, head


def fields(*lines: tuple[str, str]) -> HeaderFields:
    result = HeaderFields()
    for name, value in lines:
        result.add(name, value)
    return result


# --- whole requests ---------------------------------------------------------------------------


def test_a_get_request_is_parsed_and_keeps_its_connection_alive() -> None:
    head, rest = parse(LIVE)
    assert head is not None
    assert (head.method, head.path, head.version) == ("GET", "/v2/health/live", "HTTP/1.1")
    assert head.fields.get("host") == "x"
    assert (head.close, head.expects_continue, head.refusal) == (False, False, None)
    assert rest == b""


def test_a_post_head_leaves_its_body_in_the_buffer() -> None:
    head, rest = parse(b"POST /invocations HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    assert head is not None and head.method == "POST"
    assert rest == b"{}"


def test_bare_newlines_end_lines_and_the_section_as_crlf_does() -> None:
    head = accepted(b"GET /v2 HTTP/1.1\nHost: x\n\n")
    assert (head.path, head.fields.get("Host")) == ("/v2", "x")


def test_header_names_are_case_insensitive_and_repeats_kept_in_order() -> None:
    head = accepted(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nCONTENT-type: text/csv\r\n\r\n")
    assert head.fields.get_all("x-A") == ["1", "2"]
    assert head.fields.get("X-A") == "1"
    assert head.fields.get("Content-Type") == "text/csv"
    assert "content-type" in head.fields and "Accept" not in head.fields
    assert head.fields.get("Accept") is None and head.fields.get_all("Accept") == []


def test_header_values_lose_leading_blanks_and_keep_the_rest() -> None:
    head = accepted(b"GET / HTTP/1.1\r\nX-A: \t a b \r\nX-B:\r\n\r\n")
    assert head.fields.get("X-A") == "a b "
    assert head.fields.get("X-B") == ""


def test_header_bytes_are_read_as_latin1() -> None:
    head = accepted(b"GET /caf\xe9 HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n")
    assert head.path == "/caf\xe9" and head.fields.get("X-Name") == "caf\xe9"


def test_a_scheme_relative_path_is_read_as_a_path() -> None:
    assert accepted(b"GET //evil.example/v2 HTTP/1.1\r\n\r\n").path == "/evil.example/v2"


@pytest.mark.parametrize(
    ("request_line", "connection", "close"),
    [
        (b"GET / HTTP/1.1", None, False),
        (b"GET / HTTP/1.1", b"close", True),
        (b"GET / HTTP/1.1", b"Close", True),
        (b"GET / HTTP/1.0", None, True),
        (b"GET / HTTP/1.0", b"keep-alive", False),
        (b"GET / HTTP/1.0", b"Keep-Alive", False),
        (b"GET /", None, True),  # HTTP/0.9
        (b"GET / HTTP/1.1", b"upgrade", False),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_header(
    request_line: bytes, connection: bytes | None, close: bool
) -> None:
    header = b"" if connection is None else b"Connection: " + connection + b"\r\n"
    assert accepted(request_line + b"\r\n" + header + b"\r\n").close is close


def test_a_request_line_without_a_version_is_http_0_9() -> None:
    head = accepted(b"GET /v2\r\n\r\n")
    assert (head.method, head.path, head.version) == ("GET", "/v2", "HTTP/0.9")


@pytest.mark.parametrize(
    ("version", "expects"),
    [(b"HTTP/1.1", True), (b"HTTP/1.2", True), (b"HTTP/1.0", False)],
)
def test_expect_100_continue_is_honoured_from_http_1_1(version: bytes, expects: bool) -> None:
    data = b"POST /invocations " + version + b"\r\nExpect: 100-Continue\r\n\r\n"
    assert accepted(data).expects_continue is expects


def test_only_100_continue_is_expected() -> None:
    assert not accepted(b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n").expects_continue


def test_a_blank_request_line_is_no_request() -> None:
    for data in (b"\r\n", b"\n", b" \r\n\r\n"):
        assert parse(data)[0] is None


# --- cut anywhere, pipelined ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        LIVE,
        b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
        b"GET /v2 HTTP/1.0\n\n",
        b"GET /v2\r\n\r\n",
    ],
)
def test_a_head_cut_at_any_byte_is_incomplete_until_its_blank_line(data: bytes) -> None:
    for cut in range(1, len(data)):
        assert not head_complete(data[:cut], LIMIT), cut
    assert head_complete(data, LIMIT)
    assert head_complete(data + b'{"inputs": []}', LIMIT)


def test_pipelined_requests_are_parsed_one_after_another() -> None:
    post = b"POST /invocations HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    buffer = bytearray(LIVE + post + LIVE)
    paths = []
    while buffer:
        assert head_complete(buffer, LIMIT)
        head = parse_head(buffer, LIMIT)
        assert head is not None and head.refusal is None
        paths.append(head.path)
        if declares_body(head.fields):
            size = content_length(head.fields, BODY_LIMIT)
            assert bytes(buffer[:size]) == b"{}"
            del buffer[:size]
    assert paths == ["/v2/health/live", "/invocations", "/v2/health/live"]


def test_the_next_request_arriving_with_this_one_stays_in_the_buffer() -> None:
    head, rest = parse(LIVE + LIVE[:10])
    assert head is not None and rest == LIVE[:10]
    assert not head_complete(rest, LIMIT)


# --- refused request lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / FTP/1.1\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / HTTP/1\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / HTTP/1.1.1\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / HTTP/1.\xb2\r\n\r\n", 400, "malformed request line or header"),
        (b"GET / HTTP/12345678901.1\r\n\r\n", 400, "malformed request line or header"),
        (b"POST /v2\r\n\r\n", 400, "malformed request line or header"),  # HTTP/0.9 is GET only
        (b"GET /v2/health/live HTTP/2.0\r\n\r\n", 505, "unsupported HTTP version"),
        (b"GET / x HTTP/3.0\r\n\r\n", 505, "unsupported HTTP version"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 501, "unsupported method"),
        (b"get / HTTP/1.1\r\n\r\n", 501, "unsupported method"),
    ],
)
def test_a_bad_request_line_is_refused_with_a_fixed_text(
    data: bytes, status: int, message: str
) -> None:
    error, _ = refused(data)
    assert (error.status, error.message) == (status, message)


def test_a_request_line_over_the_limit_is_414_before_its_end_arrives() -> None:
    data = b"GET /" + b"a" * MAX_REQUEST_LINE
    assert head_complete(data, LIMIT)
    assert not head_complete(data[: MAX_REQUEST_LINE - 1], LIMIT)
    error, head = refused(data)
    assert (error.status, error.message, head.method) == (414, "request line too long", "")


def test_a_request_line_at_the_limit_is_read() -> None:
    line = b"GET /" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n"
    assert len(line) == MAX_REQUEST_LINE
    assert accepted(line + b"\r\n").method == "GET"


# --- refused header sections ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"No colon\r\n",
        b"Host : x\r\n",
        b": no name\r\n",
        b"X-\xe9: 1\r\n",
        b"X-A: 1\r\n folded\r\n",
        b"X-A: 1\r\n\tfolded\r\n",
    ],
)
def test_a_malformed_header_line_is_400(header: bytes) -> None:
    error, _ = refused(b"GET /v2 HTTP/1.1\r\n" + header + b"\r\n")
    assert (error.status, error.message) == (400, "malformed request line or header")


def test_a_refused_head_request_keeps_its_method_so_its_answer_has_no_body() -> None:
    error, head = refused(b"HEAD /v2 HTTP/1.1\r\nNo colon\r\n\r\n")
    assert (error.status, head.method) == (400, "HEAD")


def test_a_header_section_of_exactly_the_limit_is_read_and_one_byte_more_is_431() -> None:
    section = b"X-Big: " + b"b" * 100 + b"\r\n\r\n"
    data = b"GET /v2 HTTP/1.1\r\n" + section
    assert accepted(data, limit=len(section)).fields.get("X-Big") == "b" * 100
    error, _ = refused(data, limit=len(section) - 1)
    assert error.status == 431
    limits = f"limit {len(section) - 1} bytes, 100 lines"
    assert error.message == f"request header section too large ({limits})"


def test_header_bytes_past_the_limit_are_refused_before_the_blank_line_arrives() -> None:
    limit = 300
    data = b"GET /v2 HTTP/1.1\r\nX-Big: " + b"b" * 200
    assert not head_complete(data, limit)
    assert head_complete(data + b"b" * 100, limit)
    error, _ = refused(data + b"b" * 100, limit)
    assert error.status == 431


def test_a_header_line_over_64_kib_is_431_whatever_the_byte_limit() -> None:
    data = b"GET /v2 HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n"
    assert refused(data, limit=1 << 20)[0].status == 431


def test_99_header_lines_are_read_and_100_are_431() -> None:
    def head(count: int) -> bytes:
        return b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(count))

    assert len(accepted(head(99) + b"\r\n").fields.get_all("X-98")) == 1
    assert refused(head(100) + b"\r\n")[0].status == 431


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "declared"),
    [
        ((), False),
        ((("Content-Length", "0"),), False),
        ((("Content-Length", " 0 "),), False),
        ((("Content-Length", "12"),), True),
        ((("Content-Length", "ten"),), True),
        ((("Transfer-Encoding", "chunked"),), True),
    ],
)
def test_declares_body(lines: tuple[tuple[str, str], ...], declared: bool) -> None:
    assert declares_body(fields(*lines)) is declared


def test_content_length_is_the_declared_size() -> None:
    assert content_length(fields(("content-length", " 12 ")), BODY_LIMIT) == 12
    assert content_length(fields(("Content-Length", "5"), ("Content-Length", "5")), 5) == 5


@pytest.mark.parametrize(
    ("lines", "status", "fragment"),
    [
        ((("Transfer-Encoding", "chunked"),), 411, "Transfer-Encoding is not supported"),
        (
            (("Transfer-Encoding", "chunked"), ("Content-Length", "5")),
            411,
            "Transfer-Encoding is not supported",
        ),
        ((), 411, "a Content-Length header is required"),
        ((("Content-Length", "ten"),), 400, "invalid Content-Length"),
        ((("Content-Length", "-1"),), 400, "invalid Content-Length"),
        ((("Content-Length", "\u0661"),), 400, "invalid Content-Length"),  # Arabic-Indic 1
        ((("Content-Length", "2"), ("Content-Length", "3")), 400, "invalid Content-Length"),
        ((("Content-Length", str(BODY_LIMIT + 1)),), 413, "over the limit of 1048576 bytes"),
        ((("Content-Length", "9" * 20),), 413, f"body of {'9' * 20} bytes is over the limit"),
    ],
)
def test_a_body_without_a_usable_length_is_refused(
    lines: tuple[tuple[str, str], ...], status: int, fragment: str
) -> None:
    with pytest.raises(HttpError) as raised:
        content_length(fields(*lines), BODY_LIMIT)
    assert raised.value.status == status and fragment in raised.value.message


def test_a_chunked_request_head_is_parsed_and_its_body_refused() -> None:
    data = (
        b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    head, rest = parse(data)
    assert head is not None and head.refusal is None
    assert rest == b"5\r\nhello\r\n0\r\n\r\n"  # never read as a request of its own
    assert declares_body(head.fields)
    with pytest.raises(HttpError) as raised:
        content_length(head.fields, BODY_LIMIT)
    assert raised.value.status == 411
