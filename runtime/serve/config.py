"""How ``bundle-runtime serve`` is configured: where it listens, its bearer token, and every
bound on what one client can make it hold or do (each has a CLI flag)."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from edgebundle.runtime.errors import ServeError
from edgebundle.runtime.monitor.counting import DEFAULT_WINDOW_ROWS
from edgebundle.runtime.monitor.saved import REPORT_INTERVAL
from edgebundle.runtime.scoring import DEFAULT_THREADS
from edgebundle.runtime.serve.capture import Capture
from edgebundle.runtime.serve.serving import RELOAD_INTERVAL

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_MAX_TOKEN_BYTES = 4096


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
    # Open connections. When all are taken, a new one closes the connection that has waited
    # longest without completing a request (README "Serving on a network"); with none, 503.
    max_connections: int = 128
    # Open connections from one address: one peer cannot take every slot (503 beyond).
    max_connections_per_peer: int = 32
    # From half of max_connections open, a new connection's first request must start within
    # this many seconds rather than read_timeout: slots free faster while they are scarce.
    busy_first_byte_timeout: float = 2.0
    drain_timeout: float = 10.0  # seconds SIGTERM waits for requests in flight

    def __post_init__(self) -> None:
        counts = ("max_body_bytes", "max_header_bytes", "max_rows", "max_inflight")
        for name in (*counts, "max_connections", "max_connections_per_peer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        timeouts = ("read_timeout", "idle_timeout", "busy_first_byte_timeout", "drain_timeout")
        for name in timeouts:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (``tls.py`` loads them)."""

    cert: Path  # PEM: the server's certificate, then any intermediates
    key: Path  # PEM: its private key, unencrypted
    client_ca: Path | None = None  # PEM: the CAs that sign client certificates; None: no mTLS

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + (() if self.client_ca is None else (self.client_ca,))


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
    tls: TlsFiles | None = None  # None: plain HTTP
    access_log: str | None = None  # a file to append a line per request to; "-": stdout


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
