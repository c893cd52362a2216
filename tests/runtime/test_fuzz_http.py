"""Property-based fuzzing of the HTTP request parser: arbitrary bytes and near-valid requests,
pipelined, never raise, always make progress (a connection cannot spin on its buffer), and
never hold more than the header budget (``make fuzz`` runs many more examples)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgebundle.runtime.serve.http_request import (
    MAX_HEADER_LINES,
    content_length,
    declares_body,
    head_complete,
    parse_head,
)
from edgebundle.runtime.serve.httpio import HttpError
from tests.support.fuzzing import within_memory

MAX_HEADER_BYTES = 1024
MAX_BODY = 4096

_METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "BREW", "get", "", "G\x00T", "POST "])
_PATHS = st.one_of(
    st.sampled_from(["/", "/v2/health/live", "//evil/x", "/invocations?model=a", "*", ""]),
    st.text(max_size=40),
)
_VERSIONS = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "HTTP/1", "HTTP/x.y", "",
     "http/1.1", "HTTP/99999999999.1", "HTTP/².1"]
)
_NAMES = st.one_of(
    st.sampled_from(["Host", "Content-Length", "content-length", "Transfer-Encoding", "Expect",
                     "Connection", "Content-Type", " Folded", "Bad Name", "", "X\x7f"]),
    st.text(max_size=20),
)
_VALUES = st.one_of(
    st.sampled_from(["0", "5", "-1", "+5", "1e3", "99999999999999999999", "chunked", "close",
                     "keep-alive", "100-continue", "5, 5", " 7 ", "٣"]),
    st.text(max_size=60),
)
_ENDS = st.sampled_from(["\r\n", "\n", "\r", ""])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request that is right or nearly so: real parts, odd parts, missing separators."""
    end = draw(_ENDS)
    line = f"{draw(_METHODS)} {draw(_PATHS)} {draw(_VERSIONS)}{end}"
    headers = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
    text = line + "".join(f"{name}:{value}{draw(_ENDS)}" for name, value in headers)
    body = draw(st.binary(max_size=64))
    data = (text + draw(_ENDS) + draw(_ENDS)).encode("utf-8", "surrogatepass") + body
    # a few bytes changed, as a broken client or a hostile one would
    for _ in range(draw(st.integers(0, 3))):
        if data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + draw(st.binary(min_size=0, max_size=2)) + data[at + 1 :]
    return data


def consume(data: bytes) -> int:
    """Serve ``data`` as one connection's bytes, as connection.py does: heads while they are
    complete, then each body by its declared length. Returns the requests read."""
    buffer = bytearray(data)
    answered = 0
    while buffer and head_complete(buffer, MAX_HEADER_BYTES):
        before = len(buffer)
        head = parse_head(buffer, MAX_HEADER_BYTES)
        assert len(buffer) < before  # progress: the loop cannot spin on the same bytes
        if head is None:  # a blank request line: the connection ends
            break
        held = sum(len(n) + len(v) for n in head.fields._fields for v in head.fields.get_all(n))
        assert held <= MAX_HEADER_BYTES
        assert len(head.fields._fields) <= MAX_HEADER_LINES
        if head.refusal is not None:
            assert 400 <= head.refusal.status < 600 and "\n" not in head.refusal.message
            break  # the connection closes after a refusal
        answered += 1
        if declares_body(head.fields):
            try:
                size = content_length(head.fields, MAX_BODY)
            except HttpError as e:
                assert e.status in (400, 411, 413)
                break
            assert 0 <= size <= MAX_BODY
            del buffer[:size]
    return answered


@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    within_memory(len(data), lambda: consume(data))


@given(st.lists(requests(), min_size=1, max_size=4))
def test_near_valid_pipelined_requests(parts: list[bytes]) -> None:
    data = b"".join(parts)
    within_memory(len(data), lambda: consume(data))


@given(st.integers(0, 3 * MAX_HEADER_BYTES), st.sampled_from([b"a", b"\n", b"a:", b"\r\n"]))
def test_oversized_heads_are_complete_by_the_budget(size: int, unit: bytes) -> None:
    """However a head's bytes come, head_complete says yes once the budget is passed: a
    connection is answered (431 or 414), never left waiting for a blank line."""
    data = b"GET / HTTP/1.1\r\n" + (unit * size)[:size]
    if len(data) - data.find(b"\n") - 1 > MAX_HEADER_BYTES:
        assert head_complete(bytearray(data), MAX_HEADER_BYTES)
    consume(data)
