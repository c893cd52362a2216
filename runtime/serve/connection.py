"""One client connection: its received bytes, the request being answered, and how the answer
is written.

The loop thread (``loop.py``) runs a request here once all of it has arrived; what would make
the loop wait for the client (a body still arriving, a response read slowly, a linger) is done
on a worker thread the connection moves to meanwhile (``waits``).

A request must arrive whole (line, headers, body) within ``read_timeout`` of its first byte, so
a client trickling bytes cannot hold a connection; a new connection must start its first
request within ``read_timeout`` too, and an idle keep-alive connection is closed after
``idle_timeout``. Each response is written in one ``send``: header and body in separate small
writes stall 40 ms per request on Nagle and delayed ACK. When the server closes a connection
with a body still unread, it reads and drops what the client keeps sending for a moment, so the
client sees the answer rather than a reset.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from edgebundle.runtime.serve.dispatch import answer
from edgebundle.runtime.serve.http_request import (
    Head,
    content_length,
    declares_body,
    head_complete,
    parse_head,
)
from edgebundle.runtime.serve.http_response import CONTINUE, encode_response
from edgebundle.runtime.serve.httpio import HttpError, Response, error_response

if TYPE_CHECKING:
    from edgebundle.runtime.serve.loop import Loop

RECV_BYTES = 1 << 16
# A body over this is scored on a thread of its own: one big batch must not hold up the
# single-row requests queued behind it on the loop thread.
_INLINE_BODY_BYTES = 64 << 10
_LINGER_SECONDS = 1.0


class Input:
    """A connection's received bytes not yet consumed by the request parser.

    On the loop thread the parser only runs once the bytes it will read are all here; on a
    worker thread a read past them waits on the socket until ``deadline`` (``time.monotonic``):
    a per-``recv`` timeout alone lets a client that sends one byte every few seconds hold the
    connection forever, the deadline bounds the whole request however its bytes trickle in.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.deadline = 0.0

    def read(self, size: int) -> bytes:
        """``size`` bytes; less when the client closed the connection first."""
        while len(self.buffer) < size and self._receive():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _receive(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(RECV_BYTES)
        self.buffer += data
        return bool(data)


class Connection:
    """A client's socket and the request being answered on it, on the loop thread or, while
    it waits for the client, on a worker thread (``waits``)."""

    head: Head  # the request being answered, from read_head on

    def __init__(
        self, loop: Loop, sock: socket.socket, peer: str, first_byte_timeout: float
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.peer = peer  # the client's address, for admission and the access log
        self.input = Input(sock)
        self.waits = False  # on a worker thread: reads and writes may wait for the client
        self.close_connection = False
        self.handshaking = False  # a TLS connection whose handshake is not done
        self.wrapped = False  # its socket is the TLS socket (``use_socket``)
        # A new connection gets read_timeout (less when the server is busy: admission.py) for
        # its first request: one that sends nothing would otherwise hold a connection slot
        # for the whole idle_timeout.
        self.waiting_since = time.monotonic()  # since accepted, or since its last answer
        self.deadline = self.waiting_since + first_byte_timeout
        self._started = 0.0
        self._body_unread = False
        self._unsent = b""  # response bytes the socket did not take without waiting
        self._linger_due = False
        self.answered = 0  # the number of the loop's answer that was this connection's last

    def use_socket(self, sock: socket.socket) -> None:
        """The TLS socket wrapping the one accepted."""
        self.sock = self.input.sock = sock
        self.wrapped = True

    def begin_request(self) -> None:
        """The first bytes of a request are here: from now it must arrive whole in time."""
        self._started = time.perf_counter()
        self.deadline = self.input.deadline = time.monotonic() + self.loop.limits.read_timeout

    def wait_for_next(self) -> None:
        self.waiting_since = time.monotonic()
        self.deadline = self.waiting_since + self.loop.limits.idle_timeout

    def head_ready(self) -> bool:
        """Whether ``read_head`` can run on what has arrived, without waiting."""
        return head_complete(self.input.buffer, self.loop.limits.max_header_bytes)

    def needs_thread(self) -> bool:
        """Whether the parsed request's body is still on its way, or too big to score on the
        loop thread. A body the request will be refused for is never read."""
        fields = self.head.fields
        if "Content-Length" not in fields:  # no body (or one refused unread)
            return False
        try:
            size = content_length(fields, self.loop.limits.max_body_bytes)
        except HttpError:
            return False
        return size > _INLINE_BODY_BYTES or len(self.input.buffer) < size

    @property
    def unfinished(self) -> bool:
        """Whether an answered request left something to do that waits for the client."""
        return bool(self._unsent) or self._linger_due

    def read_head(self) -> bool:
        """The request line and headers; False when there is no request to dispatch (a refused
        one is answered, and the connection is then closed)."""
        self._body_unread = False
        head = parse_head(self.input.buffer, self.loop.limits.max_header_bytes)
        if head is None:
            self.close_connection = True
            return False
        self.head = head
        self.close_connection = head.close
        if head.expects_continue:
            self._write(CONTINUE)
        if head.refusal is not None:
            self._refuse(head.refusal)
            return False
        return True

    def dispatch(self) -> None:
        loop = self.loop
        app = loop.app
        with app.in_flight():
            self._body_unread = declares_body(self.head.fields)
            endpoint, response = answer(app, self.head, self._read_body, loop.token, loop.log)
            self._send(response)
        elapsed = time.perf_counter() - self._started
        app.metrics.observe_request(response.model, endpoint, response.status, elapsed)
        self._log_access(response, elapsed)

    def _read_body(self) -> bytes:
        size = content_length(self.head.fields, self.loop.limits.max_body_bytes)
        try:
            body = self.input.read(size)
        except TimeoutError:
            raise HttpError(408, "the request body did not arrive in time") from None
        if len(body) < size:
            raise HttpError(400, "the body ended before its Content-Length")
        self._body_unread = False
        return body

    def _refuse(self, error: HttpError) -> None:
        """A request refused for its line or headers, answered in JSON."""
        self.close_connection = True
        response = error_response(error)
        self._send(response)
        elapsed = time.perf_counter() - self._started
        self.loop.app.metrics.observe_request("", "other", error.status, elapsed)
        self._log_access(response, elapsed)

    def _log_access(self, response: Response, elapsed: float) -> None:
        access_log = self.loop.access_log
        if access_log is not None:
            head = self.head
            size = 0 if head.method == "HEAD" else len(response.body)
            access_log.record(self.peer, head.method, head.path, response.status, size, elapsed)

    def _send(self, response: Response) -> None:
        """The whole response in one write (see the module docstring)."""
        if self._body_unread or self.loop.draining:
            self.close_connection = True
        head = self.head
        data = encode_response(
            response, method=head.method, version=head.version, close=self.close_connection
        )
        try:
            self._write(data)
        except OSError:  # the client went away or stopped reading
            self.close_connection = True
            return
        if self._body_unread:
            self._linger_due = True
            if self.waits:
                self.finish()

    def _write(self, data: bytes) -> None:
        if self.waits:
            self.sock.settimeout(self.loop.limits.read_timeout)
            self.sock.sendall(data)
        elif self._unsent:  # after bytes still waiting to go: keep the order
            self._unsent += data
        else:
            try:
                sent = self.sock.send(data)
            except self.loop.would_block:  # TLS: sent again whole, as OpenSSL requires
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
        left = self.loop.limits.max_body_bytes
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
