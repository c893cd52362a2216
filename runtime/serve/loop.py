"""The connection loop: one thread waits on every socket (``selectors``) and answers each
request as soon as all of it has arrived, scoring inline.

A connection whose request must wait for its client (a body still arriving, a response read
slowly) waits on a thread of its own, as does a body over 64 KiB while it is scored, and comes
back to the loop when that request is answered. Keep-alive and ``TCP_NODELAY``;
``admission.py`` decides which connections are taken and which make room for new ones,
``max_inflight`` bounds the requests being scored (more get a 503 at once rather than a
queue). Ready connections take turns, the longest waiting first, each answering at most
``_TURN_ANSWERS`` requests per turn.

With TLS (``tls.py``) a new connection's handshake runs here too, one non-blocking step each
time its socket is ready, so a slow or stalled handshake holds no one else up; it must be done,
and the first request started, within the connection's first-byte deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgebundle.runtime.serve.access_log import AccessLog
from edgebundle.runtime.serve.admission import Admission, Refusal
from edgebundle.runtime.serve.config import ServerConfig
from edgebundle.runtime.serve.connection import RECV_BYTES, Connection
from edgebundle.runtime.serve.endpoints import App
from edgebundle.runtime.serve.http_response import (
    MADE_ROOM,
    PLAIN_HTTP_ON_TLS,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_PEER,
)
from edgebundle.runtime.serve.httpio import one_line

if TYPE_CHECKING:
    from edgebundle.runtime.serve.tls import Tls

_BACKLOG = 128
# Requests one connection has answered before the other ready ones get a turn: 64 KiB of
# pipelined health checks is ~1,600 requests, which held everyone else up for ~80 ms.
_TURN_ANSWERS = 8
_POLL_SECONDS = 0.25  # how soon the loop sees a stop without being woken
_WAKE = object()  # the selector key data of the wake-up socket


class Loop:
    """The listening socket and the loop thread that serves every connection.

    One thread waits on all sockets (``selectors``) and answers each request that has arrived
    whole, scoring it inline. With a thread per connection, requests spent their time waiting
    to take the interpreter lock back after each ``recv`` and ``send``; one thread never waits
    for it. A connection moves to a worker thread only while it must wait for its client (see
    ``Connection``) and comes back when that request is answered.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        config: ServerConfig,
        log: Callable[[str], None],
        tls: Tls | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.limits = config.limits
        self.token = config.token
        self.log = log
        self.tls = tls
        self.access_log = access_log
        # What a non-blocking socket raises when it cannot go on now.
        self.would_block: tuple[type[OSError], ...] = (
            (BlockingIOError,) if tls is None else tls.would_block
        )
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
        self._owned: set[Connection] = set()  # registered with the selector: loop thread only
        self._next_expiry = math.inf
        self._returned: deque[Connection] = deque()  # from worker threads, to register again
        self._again: list[Connection] = []  # answered their turn's share; more are buffered
        self.admission = Admission(config.limits)
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
                        if isinstance(data, Connection):
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
        elif isinstance(data, Connection):
            self._receive(data)

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._socket.accept()
            except OSError:  # none waiting (or out of descriptors: try again next time)
                return
            peer = str(address[0])
            refusal = self.admission.admit(peer)
            if refusal is Refusal.FULL and self._make_room():
                refusal = self.admission.admit(peer)
            if refusal is not None:
                self.app.metrics.connection_dropped(refusal.value)
                _send_at_once(sock, TOO_MANY_FROM_PEER if refusal is Refusal.PEER
                              else TOO_MANY_CONNECTIONS)
                sock.close()
                continue
            with contextlib.suppress(OSError):  # reset already: its first recv says so
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, peer, self.admission.first_byte_timeout())
            conn.handshaking = self.tls is not None
            self._own(conn)

    def _make_room(self) -> bool:
        """Close a connection that waits for a request, in ``admission.py``'s order; False
        when every one is busy."""
        idle = [conn for conn in self._owned if conn not in self._again]
        if not idle:
            return False
        order = self.admission.victim_order
        victim = min(idle, key=lambda c: order(c.answered > 0, c.peer, c.waiting_since))
        if victim.input.buffer and not victim.handshaking:  # a request had begun: say why
            with contextlib.suppress(*self.would_block, OSError):
                victim.sock.send(MADE_ROOM)
        self.app.metrics.connection_dropped("made_room")
        self._close(victim)
        return True

    def _own(self, conn: Connection) -> None:
        conn.sock.setblocking(False)
        conn.waits = False
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._owned.add(conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _handshake(self, conn: Connection, tls: Tls) -> bool:
        """One step of a new TLS connection's start (module docstring): True once its
        handshake is done and its requests can be read."""
        try:
            if not conn.wrapped:
                if tls.speaks_tls(conn.sock) is None:
                    return False
                self._selector.unregister(conn.sock)  # the TLS socket takes its descriptor
                try:
                    conn.use_socket(tls.wrap(conn.sock))
                except OSError:
                    self._owned.discard(conn)
                    self._release(conn)
                    raise
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            events = tls.handshake(conn.sock)
        except tls.NotTls as e:
            if not e.closed:
                self.app.metrics.connection_dropped("plain_http_on_tls")
                _send_at_once(conn.sock, PLAIN_HTTP_ON_TLS)
            self._close(conn)
            return False
        except OSError:  # a failed handshake: the client's fault, not the log's business
            self.app.metrics.connection_dropped("tls_handshake")
            self._close(conn)  # unless released above
            return False
        if events:
            self._selector.modify(conn.sock, events, conn)
            return False
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        conn.handshaking = False
        return True

    def _recv(self, conn: Connection) -> bytes | None:
        """What arrived on ``conn`` (b"": it is closed or reset), None when nothing new."""
        try:
            data = conn.sock.recv(RECV_BYTES)
            tls = self.tls
            if tls is not None:  # a TLS record's bytes beyond RECV_BYTES wake no selector
                while data and (more := tls.pending(conn.sock)):
                    data += conn.sock.recv(more)
        except self.would_block:  # nothing new: a turn for the requests already buffered
            return None
        except OSError:  # reset by the client, or a TLS record that does not decrypt
            return b""
        return data

    def _receive(self, conn: Connection) -> None:
        if conn.handshaking and (self.tls is None or not self._handshake(conn, self.tls)):
            return
        data = self._recv(conn)
        if data == b"":
            self._close(conn)
            return
        if data:
            if not conn.input.buffer:
                conn.begin_request()
                self._next_expiry = min(self._next_expiry, conn.deadline)
            conn.input.buffer += data
        self._serve(conn)

    def _serve(self, conn: Connection) -> None:
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

    def _hand_over(self, conn: Connection, *, dispatch: bool) -> None:
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

    def _close(self, conn: Connection) -> None:
        if conn in self._owned:  # else a worker thread has it, or it is closed already
            self._selector.unregister(conn.sock)
            self._owned.discard(conn)
            self._release(conn)

    # --- worker threads ---

    def _work(self, conn: Connection, dispatch: bool) -> None:
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

    def _release(self, conn: Connection) -> None:
        if self.tls is not None:
            self.tls.close_notify(conn.sock)
        with contextlib.suppress(OSError):  # already reset by the client
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()
        self.admission.release(conn.peer)

    def connection_failed(self, error: Exception) -> None:
        if not isinstance(error, (ConnectionError, TimeoutError)):  # else: the client went away
            self.log(f"error: connection failed: {type(error).__name__}: {one_line(error)}")


def _waiting_since(ready: object) -> int:
    """When a ready socket's wait began: a connection's last answer; the listening and
    wake-up sockets come first."""
    return ready.answered if isinstance(ready, Connection) else -1


def _send_at_once(sock: socket.socket, answer: bytes) -> None:
    """An answer on a plain socket about to be closed, without blocking the loop thread. What
    the client sent is read first, if it is here: closing on unread bytes resets the
    connection, which can destroy the answer before the client reads it."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.recv(RECV_BYTES)
    with contextlib.suppress(OSError):
        sock.send(answer)
