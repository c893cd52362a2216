"""Bounded downloads for OTA: a byte cap, a per-read timeout, an overall deadline, and no
redirect off the channel's origin.

Stdlib only (``urllib``), for ``file://``, ``http://`` and ``https://`` channel URLs. A server
that sends more than allowed, trickles bytes, stalls or redirects elsewhere is cut off; nothing
partial is ever returned, so nothing partial is ever installed.

Two kinds of fault, so a caller knows whether to wait or to worry:

- ``ChannelUnreachableError``: the bytes could not be obtained (refused, DNS, timeouts, the
  deadline, any HTTP error status, no such file): an outage, retry later.
- ``ChannelError``: the channel answered in a way no honest channel does (over the byte cap,
  a redirect to another origin or from https to http, an untrusted TLS certificate, an
  unsupported URL): refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

from edgebundle.runtime.errors import ChannelError, ChannelUnreachableError, IntegrityError

_CHUNK = 64 * 1024
_SCHEMES = ("file", "http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})  # "this document does not exist", as opposed to "cannot tell"

# Told the bytes received so far after each read (a download meter).
Progress = Callable[[int], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchLimits:
    """Caps for one OTA pass (python-tuf keeps the same kind in ``ngclient/config.py``)."""

    max_index_bytes: int = 1024 * 1024  # an index lists bundles, not models: 1 MiB is plenty
    max_keys_bytes: int = 64 * 1024
    max_key_statements: int = 256  # key statements one pass walks before refusing the chain
    max_redirects: int = 5
    read_timeout: float = 10.0  # seconds of silence before a connect or read gives up
    deadline: float = 300.0  # seconds for one whole http(s) download, however it trickles


def channel_url(text: str) -> str:
    """What ``--channel`` accepts: an ``http(s)://`` or ``file://`` URL, or a directory path
    (relative or absolute), which becomes an absolute ``file://`` URL."""
    is_url = "://" in text or urllib.parse.urlsplit(text).scheme in _SCHEMES
    if is_url and urllib.parse.urlsplit(check_url(text)).scheme != "file":
        return text
    directory = Path(_file_path(text) if is_url else text)
    if not directory.is_dir():
        problem = "not a directory" if directory.exists() else "no such directory"
        raise ChannelUnreachableError(f"cannot read channel {text}: {problem} (retry later)")
    return directory.absolute().as_uri()


def join_url(base: str, path: str) -> str:
    """``path`` (e.g. ``bundles/x-1.0.0.bundle``) inside the channel at ``base``."""
    root = base.rstrip("/") + "/"
    url = urllib.parse.urljoin(root, path)
    if not url.startswith(root):
        raise ChannelError(f"refused {path!r}: it is outside the channel {base}")
    return url


def check_url(url: str) -> str:
    """``url``, if it is one this module fetches; ChannelError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ChannelError(
            f"unsupported channel URL {_shown(url)}: use http://, https://, file:// or a directory"
        )
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ChannelError(f"invalid channel URL {_shown(url)}: a file on another host")
    if parts.scheme != "file" and not parts.hostname:
        raise ChannelError(f"invalid channel URL {_shown(url)}: no host")
    _origin(url)  # a port that is not a number
    return url


def fetch(url: str, max_bytes: int, limits: FetchLimits) -> bytes:
    """The whole body of ``url`` if it is at most ``max_bytes``. ChannelUnreachableError when
    it cannot be had (retry later), ChannelError when the channel is refused."""
    return _fetch(url, max_bytes, limits)[0]


def fetch_optional(url: str, max_bytes: int, limits: FetchLimits) -> bytes | None:
    """As ``fetch``, but None when the document does not exist (HTTP 404 or 410, no such
    file); any other fault raises as ``fetch`` does."""
    found = _fetch_or_none(url, max_bytes, limits, missing_ok=True)
    return None if found is None else found[0]


def fetch_exact(
    url: str, size: int, sha256: str, limits: FetchLimits, progress: Progress | None = None
) -> bytes:
    """A file the signed index describes: exactly ``size`` bytes with that ``sha256``, or an
    error. The declared size is the cap, so an endless response stops at size + 1 bytes.
    ``progress`` is told the bytes received after each read."""
    data, digest = _fetch(url, size, limits, progress)
    if len(data) != size:
        raise IntegrityError(f"{url}: got {len(data)} bytes, the index lists {size}")
    if digest != sha256:
        raise IntegrityError(f"{url}: sha256 {digest} differs from the index's {sha256}")
    return data


def _fetch(
    url: str, max_bytes: int, limits: FetchLimits, progress: Progress | None = None
) -> tuple[bytes, str]:
    found = _fetch_or_none(url, max_bytes, limits, missing_ok=False, progress=progress)
    assert found is not None  # only missing_ok turns "no such document" into None
    return found


def _fetch_or_none(
    url: str,
    max_bytes: int,
    limits: FetchLimits,
    *,
    missing_ok: bool,
    progress: Progress | None = None,
) -> tuple[bytes, str] | None:
    """The body and its sha256, or None for a missing document when ``missing_ok``."""
    if urllib.parse.urlsplit(check_url(url)).scheme == "file":
        return _fetch_file(url, max_bytes, missing_ok=missing_ok, progress=progress)
    with _Watchdog(limits.deadline) as watchdog:
        return _fetch_http(
            url, max_bytes, limits, watchdog, missing_ok=missing_ok, progress=progress
        )


# --- file:// ---------------------------------------------------------------------------------


def _fetch_file(
    url: str, max_bytes: int, *, missing_ok: bool, progress: Progress | None
) -> tuple[bytes, str] | None:
    path = Path(_file_path(url))
    try:
        with path.open("rb") as stream:
            _check_declared(url, os.fstat(stream.fileno()).st_size, max_bytes)
            return _read_capped(stream, url, max_bytes, progress)
    except FileNotFoundError:
        if missing_ok:
            return None
        problem = "no such file" if path.parent.is_dir() else "no such directory"
        raise _unreachable(url, problem) from None
    except OSError as e:
        raise _unreachable(url, e.strerror or str(e)) from None


def _file_path(url: str) -> str:
    return urllib.request.url2pathname(urllib.parse.urlsplit(url).path)


# --- http:// and https:// ------------------------------------------------------------------


def _fetch_http(
    url: str,
    max_bytes: int,
    limits: FetchLimits,
    watchdog: _Watchdog,
    *,
    missing_ok: bool,
    progress: Progress | None,
) -> tuple[bytes, str] | None:
    """Redirects are followed here rather than by urllib, which reads a redirect's whole body
    into memory and follows it to any host."""
    opener = _opener(watchdog)
    first = url
    for _ in range(limits.max_redirects + 1):
        try:
            return _get(opener, url, max_bytes, limits, watchdog, progress)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code not in _REDIRECTS:
                if missing_ok and e.code in _GONE:
                    return None
                raise _unreachable(url, f"HTTP {_status(e.code)}") from None
            url = _redirect(url, e.headers.get("Location"))
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            raise _fault(url, e, limits, watchdog) from None
    raise ChannelError(f"refused {first}: more than {limits.max_redirects} redirects")


def _get(
    opener: urllib.request.OpenerDirector,
    url: str,
    max_bytes: int,
    limits: FetchLimits,
    watchdog: _Watchdog,
    progress: Progress | None,
) -> tuple[bytes, str]:
    with opener.open(url, timeout=limits.read_timeout) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit():
            _check_declared(url, int(declared), max_bytes)
        body = _read_capped(response, url, max_bytes, progress)
    if watchdog.expired:  # the watchdog's shutdown reads as a clean end of file
        raise _too_slow(url, limits)
    return body


def _redirect(url: str, location: str | None) -> str:
    """The target of a redirect from ``url``, if it stays on ``url``'s origin."""
    if not location:
        raise ChannelError(f"refused {url}: a redirect without a Location")
    target = urllib.parse.urljoin(url, location)
    here, there = _origin(url), _origin(target)
    if here.startswith("https:") and there.startswith("http:"):
        raise ChannelError(f"refused {url}: a redirect from https to http ({here} → {there})")
    if here != there:
        raise ChannelError(f"refused {url}: a redirect to another origin ({here} → {there})")
    return target


def _origin(url: str) -> str:
    """``scheme://host:port``, with the scheme's default port spelled out."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError as e:
        raise ChannelError(f"invalid URL {_shown(url)}: {e}") from None
    return _shown(f"{parts.scheme}://{parts.hostname or ''}" + (f":{port}" if port else ""))


def _shown(text: str) -> str:
    """Server-chosen text (a Location) made safe for a one-line log: short, printable."""
    return text if len(text) <= 200 and text.isprintable() else ascii(text[:200])


def _status(code: int) -> str:
    # the standard phrase, not the server's: its reason text may run to 64 KiB
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _fault(url: str, error: Exception, limits: FetchLimits, watchdog: _Watchdog) -> ChannelError:
    """The error to raise for ``error`` (from urllib, http.client or a socket)."""
    if watchdog.expired:  # whatever the shutdown looked like to http.client
        return _too_slow(url, limits)
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ChannelError(f"refused {url}: TLS certificate not trusted ({reason.verify_message})")
    return _unreachable(url, _describe(reason, url, limits))


def _describe(reason: BaseException | str, url: str, limits: FetchLimits) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {urllib.parse.urlsplit(url).hostname} ({reason.strerror})"
    if isinstance(reason, TimeoutError):
        return f"no answer within the {limits.read_timeout:g} s read timeout"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed before a response"
    if isinstance(reason, http.client.IncompleteRead):
        return "connection closed mid-body"
    if isinstance(reason, http.client.HTTPException):
        return f"malformed HTTP response ({type(reason).__name__})"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return str(reason)


def _unreachable(url: str, what: str) -> ChannelUnreachableError:
    return ChannelUnreachableError(f"cannot fetch {url}: {what} (retry later)")


def _too_slow(url: str, limits: FetchLimits) -> ChannelUnreachableError:
    return _unreachable(url, f"not done within the {limits.deadline:g} s deadline")


def _check_declared(url: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ChannelError(
            f"refused {url}: it declares {size} bytes, over the {max_bytes}-byte cap"
        )


def _read_capped(
    stream: BinaryIO, url: str, max_bytes: int, progress: Progress | None
) -> tuple[bytes, str]:
    """The body and its sha256, hashed as it streams; never more than max_bytes + 1 held."""
    parts: list[bytes] = []
    digest = hashlib.sha256()
    received = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - received))
        if not chunk:
            return b"".join(parts), digest.hexdigest()
        received += len(chunk)
        if received > max_bytes:
            raise ChannelError(f"refused {url}: it sent more than the {max_bytes} bytes allowed")
        digest.update(chunk)
        parts.append(chunk)
        if progress is not None:
            progress(received)


# --- the deadline --------------------------------------------------------------------------


class _Watchdog:
    """Ends one download at its deadline, whatever phase it is in.

    http.client blocks in ``recv`` for the status line, each header line and each body read,
    and each ``recv`` that gets a byte restarts the socket timeout, so a server trickling a
    byte a second is never timed out. A blocked ``recv`` cannot be woken from its own thread;
    shutting the socket down from a timer thread wakes it with an end of file, in any phase:
    a proxy's CONNECT, the TLS handshake, headers or body.

    Each socket is watched through a duplicate of its descriptor: TLS wrapping detaches the
    original socket object mid-handshake, and owning the duplicate means the descriptor the
    timer shuts down cannot have been closed and reused by then.
    """

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._fired = False
        self._spares: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.name = "fetch-deadline"
        # a daemon, so a download on a daemon thread (the poller) never delays interpreter exit
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        self._timer.join()  # no thread outlives the download
        for spare in self._spares:
            spare.close()

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self._ends

    def connect(
        self, address: tuple[str, int], timeout: float, source_address: tuple[str, int] | None
    ) -> socket.socket:
        """``socket.create_connection``, each attempt within what is left of the deadline (no
        socket exists to shut down yet), then watched."""
        left = self._ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        sock = socket.create_connection(address, min(timeout, left), source_address)
        sock.settimeout(timeout)
        spare = sock.dup()
        with self._lock:
            self._spares.append(spare)
            if self._fired:
                _shut(spare)
        return sock

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            for spare in self._spares:
                _shut(spare)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the peer has already reset it: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, watchdog: _Watchdog, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        # the hook http.client connects through (its tests use it too): the one place every
        # socket, proxied or not, TLS or not, passes before it is first read
        self._create_connection = watchdog.connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, watchdog: _Watchdog, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = watchdog.connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPConnection(self._watchdog, host, **kwargs)

        return self.do_open(connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPSConnection(self._watchdog, host, **kwargs)

        return self.do_open(connection, req)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib with its proxy support (``HTTP(S)_PROXY``, ``NO_PROXY``), sockets watched, and
    no redirect handler: a 3xx arrives as an HTTPError, for ``_fetch_http`` to judge."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _HTTPHandler(watchdog),
        _HTTPSHandler(watchdog),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener
