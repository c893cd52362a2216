"""The connection loop: one thread waits on every socket (``selectors``) and answers each
request as soon as all of it has arrived, scoring inline.

A connection whose request must wait for its client (a body still arriving, a response read
slowly) waits on a thread of its own, as does a body over 64 KiB while it is scored, and comes
back to the loop when that request is answered. Keep-alive and ``TCP_NODELAY``;
``max_connections`` bounds the connections, ``max_inflight`` the requests being scored (more
get a 503 at once rather than a queue). Ready connections take turns, the longest waiting
first, each answering at most ``_TURN_ANSWERS`` requests per turn.
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

from edgebundle.runtime.serve.config import ServerConfig
from edgebundle.runtime.serve.connection import RECV_BYTES, Connection
from edgebundle.runtime.serve.endpoints import App
from edgebundle.runtime.serve.http_response import TOO_MANY_CONNECTIONS
from edgebundle.runtime.serve.httpio import one_line

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
        self._owned: set[Connection] = set()  # registered with the selector: loop thread only
        self._next_expiry = math.inf
        self._returned: deque[Connection] = deque()  # from worker threads, to register again
        self._again: list[Connection] = []  # answered their turn's share; more are buffered
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
            self._own(Connection(self, sock))

    def _own(self, conn: Connection) -> None:
        conn.sock.setblocking(False)
        conn.waits = False
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._owned.add(conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _receive(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
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
        with contextlib.suppress(OSError):  # already reset by the client
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()
        with self._open_lock:
            self._open -= 1

    def connection_failed(self, error: Exception) -> None:
        if not isinstance(error, (ConnectionError, TimeoutError)):  # else: the client went away
            self.log(f"error: connection failed: {type(error).__name__}: {one_line(error)}")


def _waiting_since(ready: object) -> int:
    """When a ready socket's wait began: a connection's last answer; the listening and
    wake-up sockets come first."""
    return ready.answered if isinstance(ready, Connection) else -1


def _refuse_connection(sock: socket.socket) -> None:
    """503 on a connection over ``max_connections``, without blocking the accepting thread."""
    try:
        sock.setblocking(False)
        sock.send(TOO_MANY_CONNECTIONS)
    except OSError:
        pass
