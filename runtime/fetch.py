"""Bounded downloads for OTA: a byte cap, a per-read timeout and an overall deadline.

Stdlib only (``urllib``), for ``file://``, ``http://`` and ``https://`` channel URLs. A server
that sends more than allowed, trickles bytes, or stalls is cut off; nothing partial is ever
returned, so nothing partial is ever installed.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import BinaryIO

from runtime.errors import ChannelError, IntegrityError

_CHUNK = 64 * 1024
_SCHEMES = ("file", "http", "https")


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchLimits:
    """Caps for one OTA pass (python-tuf keeps the same kind in ``ngclient/config.py``)."""

    max_index_bytes: int = 1024 * 1024  # an index lists bundles, not models: 1 MiB is plenty
    max_keys_bytes: int = 64 * 1024
    read_timeout: float = 10.0  # seconds of silence before a read gives up
    deadline: float = 300.0  # seconds for one whole download, however it trickles


def join_url(base: str, path: str) -> str:
    """``path`` (e.g. ``bundles/x-1.0.0.bundle``) inside the channel at ``base``."""
    return urllib.parse.urljoin(base.rstrip("/") + "/", path)


def check_url(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ChannelError(f"unsupported channel URL {url!r}: use file://, http:// or https://")
    return url


def fetch(url: str, max_bytes: int, limits: FetchLimits) -> bytes:
    """The whole body of ``url`` if it is at most ``max_bytes``; ChannelError otherwise."""
    data, _ = _fetch(url, max_bytes, limits, missing_ok=False)
    if data is None:
        raise ChannelError(f"cannot fetch {url}: not found")
    return data


def fetch_optional(url: str, max_bytes: int, limits: FetchLimits) -> bytes | None:
    """As ``fetch``, but None when the document does not exist (404, no such file)."""
    return _fetch(url, max_bytes, limits, missing_ok=True)[0]


def _fetch(
    url: str, max_bytes: int, limits: FetchLimits, *, missing_ok: bool
) -> tuple[bytes | None, str]:
    check_url(url)
    try:
        with urllib.request.urlopen(url, timeout=limits.read_timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ChannelError(f"{url} is {declared} bytes, over the {max_bytes}-byte cap")
            return _read_capped(response, url, max_bytes, limits)
    except urllib.error.HTTPError as e:
        if missing_ok and e.code == 404:
            return None, ""
        raise ChannelError(f"cannot fetch {url}: HTTP {e.code}") from None
    except urllib.error.URLError as e:
        if missing_ok and isinstance(e.reason, FileNotFoundError):
            return None, ""
        raise ChannelError(f"cannot fetch {url}: {e.reason}") from None
    except FileNotFoundError:
        if missing_ok:
            return None, ""
        raise ChannelError(f"cannot fetch {url}: not found") from None
    except (TimeoutError, OSError) as e:
        raise ChannelError(f"cannot fetch {url}: {e.strerror or e or 'timed out'}") from None


def _read_capped(
    stream: BinaryIO, url: str, max_bytes: int, limits: FetchLimits
) -> tuple[bytes, str]:
    """The body and its sha256, hashed as it streams."""
    started = time.monotonic()
    parts: list[bytes] = []
    digest = hashlib.sha256()
    received = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - received))
        if not chunk:
            return b"".join(parts), digest.hexdigest()
        received += len(chunk)
        if received > max_bytes:
            raise ChannelError(f"{url} sent more than the {max_bytes} bytes allowed")
        if time.monotonic() - started > limits.deadline:
            raise ChannelError(f"{url} took longer than {limits.deadline:g} s")
        digest.update(chunk)
        parts.append(chunk)


def fetch_exact(url: str, size: int, sha256: str, limits: FetchLimits) -> bytes:
    """A file the signed index describes: exactly ``size`` bytes with that ``sha256``, or an
    error. The declared size is the cap, so an endless response stops at size + 1 bytes."""
    data, digest = _fetch(url, size, limits, missing_ok=False)
    if data is None:
        raise ChannelError(f"cannot fetch {url}: not found")
    if len(data) != size:
        raise IntegrityError(f"{url}: got {len(data)} bytes, the index lists {size}")
    if digest != sha256:
        raise IntegrityError(f"{url}: sha256 {digest} differs from the index's {sha256}")
    return data
