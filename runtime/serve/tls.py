"""TLS for ``bundle-runtime serve`` (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``): the
server's ``ssl.SSLContext``, rebuilt when its files change, and the handshake done without
blocking the connection loop. Imported only when TLS is on: ``ssl`` costs a device's server
memory it has no use for otherwise.

TLS 1.2 and 1.3 only, TLS 1.2 limited to forward-secret AEAD suites (ECDHE with AES-GCM or
ChaCha20); no compression, no renegotiation. With a client CA, a client must present a
certificate that CA signed (mutual TLS); none of the system's CAs is trusted for clients.

A device agent rotates the certificate by replacing the files: ``context`` compares their
inode, size and modification time with the last ones loaded (at most once a second: a few
``stat`` calls) and loads the new pair for the connections accepted from then on. A pair that
does not load (a key that does not match, a half-written file) keeps the previous context and
is logged once.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable

from edgebundle.runtime.errors import ServeError
from edgebundle.runtime.serve.config import TlsFiles

_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2's; TLS 1.3's are all AEAD already
_CHECK_SECONDS = 1.0
# What a TLS connection opens with: a handshake record. Anything else is taken for plain HTTP
# and answered in plain HTTP before the connection is closed.
_HANDSHAKE_RECORD = 0x16

# What a non-blocking TLS socket raises where a plain one raises BlockingIOError.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

_Stamp = tuple[tuple[int, int, int], ...]


class NotTls(Exception):
    """A connection to the TLS port that does not start a TLS handshake."""

    def __init__(self, first: bytes) -> None:
        super().__init__("not a TLS handshake")
        self.closed = not first  # else it sent something: an answer in plain HTTP may help


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context for ``files``; ServeError in one line when they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(files.cert, files.key)
        if files.client_ca is not None:
            context.load_verify_locations(cafile=files.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as e:  # before OSError, which it is
        raise ServeError(f"cannot load TLS files ({_names(files)}): {e.reason or e}") from None
    except OSError as e:
        raise ServeError(f"cannot load TLS files ({_names(files)}): {e.strerror or e}") from None
    return context


class Tls:
    """The server's TLS: the context for new connections, reloaded when the files change
    (module docstring), and each connection's handshake step by step."""

    would_block = WOULD_BLOCK
    NotTls = NotTls

    def __init__(self, files: TlsFiles, log: Callable[[str], None]) -> None:
        self.files = files
        self._log = log
        self._stamp = _stamp(files)
        self._context = server_context(files)
        self._failed: _Stamp | None = None  # the files' stamp that did not load, said once
        self._next_check = time.monotonic() + _CHECK_SECONDS
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                self._next_check = now + _CHECK_SECONDS
                stamp = _stamp(self.files)
                if stamp not in (self._stamp, self._failed):
                    self._reload(stamp)
        return self._context

    def _reload(self, stamp: _Stamp) -> None:
        try:
            self._context = server_context(self.files)
        except ServeError as e:
            self._failed = stamp
            self._log(f"error: {e}; still serving the previous certificate")
            return
        self._stamp, self._failed = stamp, None
        self._log(f"TLS certificate reloaded from {self.files.cert}")

    @staticmethod
    def speaks_tls(sock: socket.socket) -> bool | None:
        """Whether a new connection's first byte, peeked at, opens a TLS handshake; None when
        nothing has arrived. ``NotTls`` when it speaks something else, or closed."""
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        if not first or first[0] != _HANDSHAKE_RECORD:
            raise NotTls(first)
        return True

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """The TLS socket over ``sock``, which it takes over; the handshake is not done yet."""
        return self.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    @staticmethod
    def handshake(sock: socket.socket) -> int:
        """One step of the server's handshake: the selector events it waits for next, 0 when
        it is done; ``OSError`` (``ssl.SSLError``) when the client failed it."""
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        return 0

    @staticmethod
    def pending(sock: socket.socket) -> int:
        """Bytes decrypted but not read yet: no selector sees them."""
        return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0

    @staticmethod
    def close_notify(sock: socket.socket) -> None:
        """Tell a TLS client the connection ends on purpose (a truncation looks the same
        otherwise), without waiting for its reply."""
        if isinstance(sock, ssl.SSLSocket) and sock.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError):  # ValueError: no handshake yet
                sock.setblocking(False)
                sock.unwrap()


def _stamp(files: TlsFiles) -> _Stamp:
    stamps = []
    for path in files.paths:
        try:
            info = os.stat(path)
        except OSError:  # mid-rotation: the next check sees the new file
            stamps.append((0, 0, 0))
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def _names(files: TlsFiles) -> str:
    return ", ".join(str(path) for path in files.paths)
