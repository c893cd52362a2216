"""``bundle-runtime serve``: the store's models over HTTP/1.1 (stdlib sockets).

Endpoints (DESIGN §5):

- Open Inference Protocol v2 (``oip.py``): ``GET /v2/health/live``, ``/v2/health/ready``
  (ready when every model with an active version in the store is loaded), ``/v2``,
  ``/v2/models/{name}[/versions/{v}]``, ``.../ready``, and
  ``POST /v2/models/{name}[/versions/{v}]/infer``. A version other than the one being served
  is a 404.
- MLflow-style ``POST /invocations[?model=NAME]`` (``invocations.py``); without ``model`` the
  store's only model.
- ``GET /metrics``, Prometheus text format (``metrics.py``).

Every error is JSON ``{"error": "one line"}`` with its status; an unexpected exception is a
500 with a generic message and one line on stderr. With a bearer token every endpoint but the
two health checks answers 401 without it.

Connections: one loop thread serves them all (``selectors``), answering each request as soon
as all of it has arrived, scoring inline; a connection whose request must wait for its client
(a body still arriving, a response read slowly) waits on a thread of its own, as does a body
over 64 KiB while it is scored. Keep-alive, ``TCP_NODELAY``, and each response written in one
``send`` (header and body in separate small writes stall 40 ms per request on Nagle and
delayed ACK). A request must arrive whole (line, headers, body) within ``read_timeout`` of its
first byte, so a client trickling bytes cannot hold a connection; a new connection must start
its first request within ``read_timeout`` too, and an idle keep-alive connection is closed
after ``idle_timeout``. ``max_connections`` bounds the connections, ``max_inflight`` the
requests being scored (more get a 503 at once rather than a queue).

Bodies need a ``Content-Length``: chunked uploads are answered 411 (a device API gains nothing
from them, and a fixed length lets an oversized body be refused with 413 before it is read).
When the server closes a connection with a body still unread, it reads and drops what the
client keeps sending for a moment, so the client sees the answer rather than a reset.

Request parsing follows ``http.server.BaseHTTPRequestHandler`` but is written on sockets
directly: ``http.server`` imports ``http.client``, ``email`` and ``ssl``, about 7 MB of resident
memory a device's server has no use for.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import itertools
import math
import re
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edgebundle.runtime import __version__
from edgebundle.runtime._json import quote
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.memory import limit_malloc_arenas
from edgebundle.runtime.monitor import DEFAULT_WINDOW_ROWS, REPORT_INTERVAL, Monitor, save_report
from edgebundle.runtime.scoring import DEFAULT_THREADS
from edgebundle.runtime.serve.capture import Capture
from edgebundle.runtime.serve.endpoints import (
    PUBLIC_PATHS,
    App,
    Request,
    Response,
    call,
    error_response,
    match,
    model_label,
)
from edgebundle.runtime.serve.httpio import (
    HeaderFields,
    HeaderSectionTooLarge,
    HttpError,
    MalformedHeader,
    encode_json,
    read_header_fields,
)
from edgebundle.runtime.serve.metrics import Metrics
from edgebundle.runtime.serve.serving import RELOAD_INTERVAL, ServedModels
from edgebundle.runtime.store import Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_LINGER_SECONDS = 1.0
_MALLOC_ARENAS = 1  # see runtime.memory.limit_malloc_arenas
_MAX_TOKEN_BYTES = 4096


class ServeError(BundleError):
    """The server cannot start as configured (unreadable or unsafe token file...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerLimits:
    """Every bound on what one client can make the server hold or do; each has a CLI flag."""

    # 1 MiB holds max_rows rows of ~25 features as binary FP32, or of ~10 features as JSON.
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 16 << 10  # the whole header section of one request
    max_rows: int = 10_000  # rows per request
    # Seconds for a request to arrive whole once it starts, for a new connection's first
    # request to start, and for each response to be written.
    read_timeout: float = 10.0
    idle_timeout: float = 30.0  # seconds a keep-alive connection may wait for its next request
    max_inflight: int = 32  # scoring requests at once; more are answered 503 at once
    max_connections: int = 128  # open connections (a thread each); more are answered 503
    drain_timeout: float = 10.0  # seconds SIGTERM waits for requests in flight

    def __post_init__(self) -> None:
        counts = ("max_body_bytes", "max_header_bytes", "max_rows", "max_inflight")
        for name in (*counts, "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("read_timeout", "idle_timeout", "drain_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: bytes | None = None  # bearer token; None: no authentication
    threads: int = DEFAULT_THREADS  # onnxruntime intra-op threads per model
    reload_interval: float = RELOAD_INTERVAL
    limits: ServerLimits = field(default_factory=ServerLimits)
    monitor_window: int | None = DEFAULT_WINDOW_ROWS  # drift monitor's recent rows; None: off
    report_interval: float = REPORT_INTERVAL  # seconds between drift report files
    capture: Capture | None = None  # sampled rows to JSONL for debugging; closed at stop


# --- connections ------------------------------------------------------------------------------


class _Input:
    """A connection's received bytes not yet consumed by the request parser.

    On the loop thread the parser only runs once the bytes it will read are all here; on a
    worker thread a read past them waits on the socket until ``deadline`` (``time.monotonic``):
    a per-``recv`` timeout alone lets a client that sends one byte every few seconds hold the
    connection forever, the deadline bounds the whole request however its bytes trickle in.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.buffer = bytearray()
        self.deadline = 0.0

    def readline(self, limit: int) -> bytes:
        """Up to and including the next ``\\n``, at most ``limit`` bytes; less at the end."""
        searched = 0
        while True:
            end = self.buffer.find(b"\n", searched, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self.buffer) >= limit:
                return self._take(limit)
            searched = len(self.buffer)
            if not self._receive():
                return self._take(len(self.buffer))

    def read(self, size: int) -> bytes:
        """``size`` bytes; less when the client closed the connection first."""
        while len(self.buffer) < size and self._receive():
            pass
        return self._take(min(size, len(self.buffer)))

    def _receive(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(remaining)
        data = self._sock.recv(_RECV_BYTES)
        self.buffer += data
        return bool(data)

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


# Fixed texts for errors found while parsing the request line and headers: the stdlib's own
# messages quote the client's bytes back.
_PROTOCOL_ERRORS = {
    400: "malformed request line or header",
    414: "request line too long",
    501: "unsupported method",
    505: "unsupported HTTP version",
}


_MAX_REQUEST_LINE = 65536  # as http.server
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
_HEAD_END = re.compile(rb"\n\r?\n")  # the blank line that ends a header section
_RECV_BYTES = 1 << 16
# A body over this is scored on a thread of its own: one big batch must not hold up the
# single-row requests queued behind it on the loop thread.
_INLINE_BODY_BYTES = 64 << 10


class _Connection:
    """One client connection: its bytes, the request being answered, and how it answers.

    The server's loop thread runs a request here when all of it has arrived; what would make
    the loop wait for the client (a body still arriving, a response the client reads slowly,
    a linger) moves the connection to a worker thread of its own (``waits``).
    """

    server_version = f"edgebundle/{__version__}"

    def __init__(self, server: _Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.input = _Input(sock)
        self.waits = False  # on a worker thread: reads and writes may wait for the client
        self.close_connection = False
        # A new connection gets read_timeout for its first request: one that sends nothing
        # would otherwise hold a connection slot for the whole idle_timeout.
        self.deadline = time.monotonic() + server.limits.read_timeout
        self.fields = HeaderFields()  # the request's headers, set by parse_request
        self.command = ""  # the request's method; "" before one is parsed
        self.path = ""
        self.request_version = "HTTP/0.9"
        self._started = 0.0
        self._body_unread = False
        self._unsent = b""  # response bytes the socket did not take without waiting
        self._linger_due = False
        self.answered = 0  # the number of the server's answer that was this connection's last

    def begin_request(self) -> None:
        """The first bytes of a request are here: from now it must arrive whole in time."""
        self._started = time.perf_counter()
        self.deadline = self.input.deadline = time.monotonic() + self.server.limits.read_timeout

    def wait_for_next(self) -> None:
        self.deadline = time.monotonic() + self.server.limits.idle_timeout

    def head_ready(self) -> bool:
        """Whether ``read_head`` can run on what has arrived, without waiting: the blank line
        ending the header section is here, the request line is blank, or a limit is passed."""
        buffer = self.input.buffer
        if _HEAD_END.search(buffer) or buffer.startswith((b"\n", b"\r\n")):
            return True
        first = buffer.find(b"\n")
        if first < 0:
            return len(buffer) > _MAX_REQUEST_LINE
        return len(buffer) - first - 1 > self.server.limits.max_header_bytes

    def needs_thread(self) -> bool:
        """Whether the parsed request's body is still on its way, or too big to score on the
        loop thread. A body the request will be refused for is never read."""
        if "Content-Length" not in self.fields:  # no body (or one refused unread)
            return False
        try:
            size = _content_length(self.fields, self.server.limits.max_body_bytes)
        except HttpError:
            return False
        return size > _INLINE_BODY_BYTES or len(self.input.buffer) < size

    @property
    def unfinished(self) -> bool:
        """Whether an answered request left something to do that waits for the client."""
        return bool(self._unsent) or self._linger_due

    def read_head(self) -> bool:
        """The request line and headers; False when there is no request to dispatch (each
        error is answered, and the connection is then closed)."""
        self._body_unread = False
        self.command, self.request_version = "", "HTTP/0.9"
        line = self.input.readline(_MAX_REQUEST_LINE + 1)
        if len(line) > _MAX_REQUEST_LINE:
            self.send_error(414)
        elif not line:
            self.close_connection = True
        elif self.parse_request(line):
            if self.command in _METHODS:
                return True
            self.send_error(501)
        return False

    def parse_request(self, line: bytes) -> bool:
        """http.server's request-line rules, with our own header reader
        (``read_header_fields``).

        Sets ``command``, ``path``, ``request_version``, ``close_connection`` and ``fields``;
        on a bad request answers it and returns False.
        """
        self.close_connection = True
        words = str(line, "latin-1").rstrip("\r\n").split()
        if not words:
            return False
        status = self._parse_request_line(words)
        if status is None:
            status = self._parse_header_section()
        if status is not None:
            self.send_error(status)
            return False
        connection = (self.fields.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = (self.fields.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _parse_request_line(self, words: list[str]) -> int | None:
        """``METHOD PATH [HTTP/x.y]`` into attributes, or the status refusing it."""
        if len(words) >= 3:
            version = _http_version(words[-1])
            if version is None:
                return 400
            if version >= (2, 0):
                return 505
            self.close_connection = version < (1, 1)
            self.request_version = words[-1]
        if not 2 <= len(words) <= 3:
            return 400
        if len(words) == 2:  # HTTP/0.9: GET only, and no keep-alive
            self.close_connection = True
            if words[0] != "GET":
                return 400
        self.command, path = words[:2]
        # As the stdlib (gh-87389): "//host/x" must not read as a scheme-relative URL.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        return None

    def _parse_header_section(self) -> int | None:
        try:
            self.fields = read_header_fields(
                self.input.readline, self.server.limits.max_header_bytes
            )
        except HeaderSectionTooLarge:
            return 431
        except MalformedHeader:
            return 400
        return None

    def dispatch(self) -> None:
        app = self.server.app
        with app.in_flight():
            endpoint, response = self._answer()
            self._send(response)
        elapsed = time.perf_counter() - self._started
        app.metrics.observe_request(response.model, endpoint, response.status, elapsed)

    def _answer(self) -> tuple[str, Response]:
        app = self.server.app
        target = urlsplit(self.path)
        path, query = target.path, parse_qs(target.query)
        route, params = match(path)
        endpoint = route.name if route is not None else "other"
        model = model_label(app.models.current, params, query)
        self._body_unread = "Transfer-Encoding" in self.fields or (
            (self.fields.get("Content-Length") or "").strip() not in ("", "0")
        )
        try:
            if path not in PUBLIC_PATHS:
                self._authorize()
            if route is None:
                raise HttpError(404, f"no endpoint {quote(path)}")
            return endpoint, call(route, app, self._request(params, query))
        except HttpError as e:
            return endpoint, error_response(e, model)
        except Exception as e:  # a bug: answer, log one line, keep serving
            self.server.log(f"error: {self.command} {endpoint}: {type(e).__name__}: {_one_line(e)}")
            return endpoint, error_response(HttpError(500, "internal server error"), model)

    def _request(self, params: Mapping[str, str], query: Mapping[str, list[str]]) -> Request:
        return Request(
            method=self.command,
            params=params,
            query=query,
            header=self.fields.get,
            read_body=self._read_body,
        )

    def _authorize(self) -> None:
        token = self.server.token
        if token is None:
            return
        scheme, _, credentials = (self.fields.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise HttpError(401, "a bearer token is required", _CHALLENGE)
        offered = credentials.strip().encode("latin-1", "replace")
        if not hmac.compare_digest(offered, token):
            raise HttpError(401, "invalid bearer token", _INVALID_TOKEN)

    def _read_body(self) -> bytes:
        size = _content_length(self.fields, self.server.limits.max_body_bytes)
        try:
            body = self.input.read(size)
        except TimeoutError:
            raise HttpError(408, "the request body did not arrive in time") from None
        if len(body) < size:
            raise HttpError(400, "the body ended before its Content-Length")
        self._body_unread = False
        return body

    def send_error(self, code: int) -> None:
        """Errors in the request line or headers, answered in JSON."""
        self.close_connection = True
        if code == 431:
            limit = self.server.limits.max_header_bytes
            text = f"request header section too large (limit {limit} bytes, 100 lines)"
        else:
            text = _PROTOCOL_ERRORS.get(code, HTTPStatus(code).phrase.lower())
        self._send(error_response(HttpError(code, text)))
        elapsed = time.perf_counter() - self._started
        self.server.app.metrics.observe_request("", "other", code, elapsed)

    def _send(self, response: Response) -> None:
        """The whole response in one write (see the module docstring)."""
        if self._body_unread or self.server.draining:
            self.close_connection = True
        lines = [
            f"HTTP/1.1 {response.status} {_phrase(response.status)}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self._write(head if self.command == "HEAD" else head + response.body)
        except OSError:  # the client went away or stopped reading
            self.close_connection = True
            return
        if self._body_unread:
            self._linger_due = True
            if self.waits:
                self.finish()

    def _write(self, data: bytes) -> None:
        if self.waits:
            self.sock.settimeout(self.server.limits.read_timeout)
            self.sock.sendall(data)
        elif self._unsent:  # after bytes still waiting to go: keep the order
            self._unsent += data
        else:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            self._unsent = data[sent:]

    def finish(self) -> None:
        """What an answered request left that waits for the client (worker thread only): the
        rest of the response, then the linger."""
        if self._unsent:
            data, self._unsent = self._unsent, b""
            try:
                self._write(data)
            except OSError:
                self.close_connection = True
                self._linger_due = False
                return
        if self._linger_due:
            self._linger_due = False
            self._linger()

    def _linger(self) -> None:
        """Read and drop what the client still sends, briefly: closing a socket with unread
        bytes resets the connection, which can destroy the answer before the client reads it."""
        left = self.server.limits.max_body_bytes
        deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass


def _content_length(fields: HeaderFields, limit: int) -> int:
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


_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="edgebundle"'),)
_INVALID_TOKEN = (("WWW-Authenticate", 'Bearer realm="edgebundle", error="invalid_token"'),)


_PHRASES = {int(status): status.phrase for status in HTTPStatus}


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


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


def _http_version(text: str) -> tuple[int, int] | None:
    """``(1, 1)`` from ``"HTTP/1.1"``; None unless ``HTTP/<digits>.<digits>``, 10 digits at most."""
    if not text.startswith("HTTP/"):
        return None
    numbers = text[5:].split(".")
    # isascii: str.isdigit() also accepts "²", which int() refuses.
    if len(numbers) != 2 or not all(n.isascii() and n.isdigit() and len(n) <= 10 for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1])


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class _Server:
    """The listening socket and the loop thread that serves every connection.

    One thread waits on all sockets (``selectors``) and answers each request that has arrived
    whole, scoring it inline. With a thread per connection, requests spent their time waiting
    to take the interpreter lock back after each ``recv`` and ``send``; one thread never waits
    for it. A connection moves to a worker thread only while it must wait for its client (see
    ``_Connection``) and comes back when that request is answered.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        config: ServerConfig,
        log: Callable[[str], None],
    ) -> None:
        self.app = app
        self.limits = config.limits
        self.token = config.token
        self.log = log
        self.draining = False  # set by RunningServer.stop: answer, then close every connection
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Restart at once on the same port, as http.server does.
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(_BACKLOG)
        except BaseException:
            self._socket.close()
            raise
        self._socket.setblocking(False)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._owned: set[_Connection] = set()  # registered with the selector: loop thread only
        self._next_expiry = math.inf
        self._returned: deque[_Connection] = deque()  # from worker threads, to register again
        self._again: list[_Connection] = []  # answered their turn's share; more are buffered
        self._open = 0  # connections, wherever they are served
        self._open_lock = threading.Lock()
        self._stopping = False
        self._answers = itertools.count(1)  # numbers each answer on the loop thread, in order
        self._thread = threading.Thread(target=self._run, name="edgebundle-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop accepting and close idle connections; requests on worker threads go on."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout)

    def close(self) -> None:
        """Release the listening and wake-up sockets (the loop does at its end; so does a
        server that never started)."""
        self._socket.close()
        self._wake_in.close()
        self._wake_out.close()
        self._selector.close()

    # --- the loop thread ---

    def _run(self) -> None:
        selector = self._selector
        selector.register(self._socket, selectors.EVENT_READ, None)
        selector.register(self._wake_in, selectors.EVENT_READ, _WAKE)
        try:
            while not self._stopping:
                wait = min(max(self._next_expiry - time.monotonic(), 0.0), _POLL_SECONDS)
                ready = {key.data for key, _ in selector.select(0.0 if self._again else wait)}
                ready.update(conn for conn in self._again if conn in self._owned)
                self._again.clear()
                # Longest waiting first. epoll lists the connections it reported last time
                # ahead of any that became ready since, so in arrival order the same clients
                # went last round after round: 2 of 8 keep-alive clients got 40% fewer answers
                # and waited up to 3x the median.
                for data in sorted(ready, key=_waiting_since):
                    try:
                        self._ready(data)
                    except Exception as e:  # a bug: lose that connection, never the loop
                        self.connection_failed(e)
                        if isinstance(data, _Connection):
                            self._close(data)
                if time.monotonic() >= self._next_expiry:
                    self._expire()
        finally:
            for conn in list(self._owned):
                self._close(conn)
            self.close()
            while self._returned:  # given back after the last wake-up was read
                self._release(self._returned.popleft())

    def _ready(self, data: object) -> None:
        if data is None:
            self._accept()
        elif data is _WAKE:
            self._take_back()
        elif isinstance(data, _Connection):
            self._receive(data)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._socket.accept()
            except OSError:  # none waiting (or out of descriptors: try again next time)
                return
            with self._open_lock:
                full = self._open >= self.limits.max_connections
                if not full:
                    self._open += 1
            if full:
                _refuse_connection(sock)
                sock.close()
                continue
            with contextlib.suppress(OSError):  # reset already: its first recv says so
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._own(_Connection(self, sock))

    def _own(self, conn: _Connection) -> None:
        conn.sock.setblocking(False)
        conn.waits = False
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._owned.add(conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except BlockingIOError:  # nothing new: a turn for the requests already buffered
            data = None
        except OSError:  # reset by the client
            data = b""
        if data == b"":
            self._close(conn)
            return
        if data:
            if not conn.input.buffer:
                conn.begin_request()
                self._next_expiry = min(self._next_expiry, conn.deadline)
            conn.input.buffer += data
        self._serve(conn)

    def _serve(self, conn: _Connection) -> None:
        """Answer the connection's requests that have arrived whole, in order, up to
        ``_TURN_ANSWERS`` of them; the rest after every other ready connection's turn."""
        for _ in range(_TURN_ANSWERS):
            if not (conn.input.buffer and conn.head_ready()):
                break
            try:
                dispatch = conn.read_head()
                if dispatch and conn.needs_thread():
                    self._hand_over(conn, dispatch=True)
                    return
                if dispatch:
                    conn.dispatch()
            except Exception as e:
                self.connection_failed(e)
                conn.close_connection = True
            if conn.unfinished:
                self._hand_over(conn, dispatch=False)
                return
            conn.answered = next(self._answers)
            if conn.close_connection or self.draining:
                self._close(conn)
                return
            if conn.input.buffer:  # the next request came with this one
                conn.begin_request()
            else:
                conn.wait_for_next()
        else:
            if conn.input.buffer:  # more are waiting: after every other ready connection
                self._again.append(conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _expire(self) -> None:
        """Close connections past their deadline: a request that did not arrive whole in time,
        an idle keep-alive connection, a new one that never sent a request."""
        now = time.monotonic()
        self._next_expiry = math.inf
        for conn in list(self._owned):
            if conn.deadline <= now:
                self._close(conn)
            else:
                self._next_expiry = min(self._next_expiry, conn.deadline)

    def _hand_over(self, conn: _Connection, *, dispatch: bool) -> None:
        self._selector.unregister(conn.sock)
        self._owned.discard(conn)
        worker = threading.Thread(
            target=self._work, args=(conn, dispatch), name="edgebundle-wait", daemon=True
        )
        try:
            worker.start()
        except RuntimeError as e:  # out of threads: this connection cannot wait, the rest go on
            self.connection_failed(e)
            self._release(conn)

    def _take_back(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._returned:
            conn = self._returned.popleft()
            self._own(conn)
            if conn.input.buffer:
                conn.begin_request()
                self._serve(conn)

    def _close(self, conn: _Connection) -> None:
        if conn in self._owned:  # else a worker thread has it, or it is closed already
            self._selector.unregister(conn.sock)
            self._owned.discard(conn)
            self._release(conn)

    # --- worker threads ---

    def _work(self, conn: _Connection, dispatch: bool) -> None:
        """Finish one request that waits for its client, then give the connection back."""
        conn.waits = True
        try:
            if dispatch:
                conn.dispatch()
            conn.finish()
        except Exception as e:
            self.connection_failed(e)
            conn.close_connection = True
        if conn.close_connection or self.draining or self._stopping:
            self._release(conn)
            return
        conn.wait_for_next()
        self._returned.append(conn)
        self._wake()

    # --- any thread ---

    def _wake(self) -> None:
        # Full: a wake-up is pending anyway; closed: the loop has ended.
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _release(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError):  # already reset by the client
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()
        with self._open_lock:
            self._open -= 1

    def connection_failed(self, error: Exception) -> None:
        if not isinstance(error, (ConnectionError, TimeoutError)):  # else: the client went away
            self.log(f"error: connection failed: {type(error).__name__}: {_one_line(error)}")


def _waiting_since(ready: object) -> int:
    """When a ready socket's wait began: a connection's last answer; the listening and
    wake-up sockets come first."""
    return ready.answered if isinstance(ready, _Connection) else -1


_BACKLOG = 128
# Requests one connection has answered before the other ready ones get a turn: 64 KiB of
# pipelined health checks is ~1,600 requests, which held everyone else up for ~80 ms.
_TURN_ANSWERS = 8
_POLL_SECONDS = 0.25  # how soon the loop sees a stop without being woken
_WAKE = object()  # the selector key data of the wake-up socket


def _refuse_connection(sock: socket.socket) -> None:
    """503 on a connection over ``max_connections``, without blocking the accepting thread."""
    body = encode_json({"error": "server busy: too many open connections; retry"})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.setblocking(False)
        sock.send(head.encode("ascii") + body)
    except OSError:
        pass


# --- running ----------------------------------------------------------------------------------


def log_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class RunningServer:
    """A started server: its address, a way to force a reload, and a draining ``stop``."""

    def __init__(self, store: Store, config: ServerConfig, log: Callable[[str], None]) -> None:
        limit_malloc_arenas(_MALLOC_ARENAS)
        metrics = Metrics()
        models = ServedModels(store, config.threads, metrics, log, config.monitor_window)
        self._reporter = _Reporter(store.root, models, log)
        limits = config.limits
        self._app = App(models, metrics, limits.max_rows, limits.max_inflight, config.capture)
        # Bind before loading models: a taken port fails at once.
        self._server = _Server((config.host, config.port), self._app, config, log)
        try:
            models.refresh(force=True)  # serve the installed models from the first request
        except BaseException:
            self._server.close()
            raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = (
            threading.Thread(
                target=models.watch,
                args=(self._stop, self._wake, config.reload_interval),
                name="edgebundle-reload",
                daemon=True,
            ),
            threading.Thread(
                target=self._reporter.run,
                args=(self._stop, config.report_interval),
                name="edgebundle-drift-reports",
                daemon=True,
            ),
        )
        for thread in self._threads:
            thread.start()
        self._server.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def reload(self) -> None:
        """Re-read the store now and retry versions that failed to load (SIGHUP)."""
        self._wake.set()

    def stop(self) -> bool:
        """Stop accepting, let requests in flight finish; False if some outlived the drain."""
        self._server.draining = True
        timeout = self._server.limits.drain_timeout
        self._server.stop(timeout)
        drained = self._app.wait_idle(timeout)
        self._stop.set()
        self._wake.set()
        self._reporter.save()  # the final counts, for status after the server is gone
        if self._app.capture is not None:
            self._app.capture.close()
        return drained


class _Reporter:
    """Leaves each served model's drift report in the store for ``bundle-runtime status``,
    when its counts changed: the counts live in the server process only."""

    def __init__(self, root: Path, models: ServedModels, log: Callable[[str], None]) -> None:
        self._root = root
        self._models = models
        self._log = log
        self._saved: dict[str, tuple[Monitor, int]] = {}  # model -> (monitor, rows) saved
        self._failing = False

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            self.save()

    def save(self) -> None:
        for name, watched in self._models.current.watched.items():
            report = watched.monitor.report()
            saved = self._saved.get(name)
            if saved is not None and saved == (watched.monitor, report.since_start.rows):
                continue
            try:
                save_report(self._root, report)
            except BundleError as e:
                if not self._failing:  # say it once, not every minute
                    self._log(f"error: cannot write the drift report: {e}")
                self._failing = True
                return
            self._failing = False
            self._saved[name] = (watched.monitor, report.since_start.rows)


@dataclass(slots=True)
class _Signals:
    stop: bool = False
    reload: bool = False

    def on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def on_reload(self, signum: int, frame: object) -> None:
        self.reload = True


def serve(store: Store, config: ServerConfig, log: Callable[[str], None] = log_line) -> int:
    """Run until SIGTERM or SIGINT, then drain; SIGHUP reloads. Call from the main thread."""
    # The ~27k objects of the imported modules live as long as the process; a full garbage
    # collection walked them all, 10-16 ms that every queued request waited. Frozen before any
    # model is loaded, so that a model swapped out later can still be collected.
    gc.freeze()
    running = RunningServer(store, config, log)
    log(f"serving on {running.url}")
    signals = _Signals()
    previous = {
        signum: signal.signal(signum, handler)
        for signum, handler in (
            (signal.SIGTERM, signals.on_stop),
            (signal.SIGINT, signals.on_stop),
            (signal.SIGHUP, signals.on_reload),
        )
    }
    try:
        # Handlers only set flags: taking a lock inside one can deadlock the main thread.
        while not signals.stop:
            time.sleep(0.1)
            if signals.reload:
                signals.reload = False
                running.reload()
    finally:
        drained = running.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not drained:
        log(f"error: requests still in flight after {config.limits.drain_timeout} s; exiting")
    return 0


def read_token(path: Path) -> bytes:
    """The bearer token in ``path``, one trailing newline removed.

    Refused when other users may read or write the file (as ssh refuses such keys): a token
    anyone on the device can read protects nothing. Group access is allowed, for a service group.
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ServeError(f"token file {path} is not a regular file")
        if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ServeError(f"token file {path} is accessible to other users; chmod o-rw it")
        with path.open("rb") as f:
            data = f.read(_MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise ServeError(f"cannot read token file {path}: {e.strerror}") from None
    token = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(data) > _MAX_TOKEN_BYTES:
        raise ServeError(f"token file {path} is over {_MAX_TOKEN_BYTES} bytes")
    if not token:
        raise ServeError(f"token file {path} is empty")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise ServeError(f"token in {path} must be printable ASCII without spaces")
    return token
