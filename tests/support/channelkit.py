"""An OTA channel served from a directory by a real HTTP server on 127.0.0.1, with scripted
misbehaviour per path (python-tuf's tests serve metadata from a simulator; ours is a server)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.ota.channel import (
    INDEX_CONTEXT,
    TIME_FORMAT,
    ChannelEntry,
    ChannelIndex,
    Envelope,
)
from edgebundle.runtime.semver import Version

Behaviour = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus scripted misbehaviour for chosen paths."""

    behaviours: ClassVar[dict[str, Behaviour]] = {}

    def do_GET(self) -> None:
        behaviour = self.behaviours.get(self.path)
        if behaviour is None:
            super().do_GET()
        else:
            behaviour(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Channel:
    directory: Path
    url: str
    behaviours: dict[str, Behaviour] = field(default_factory=dict)


@contextmanager
def served(directory: Path) -> Iterator[Channel]:
    """``directory`` (created if missing) served on 127.0.0.1 until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    behaviours: dict[str, Behaviour] = {}
    handler = type("Handler", (_Handler,), {"behaviours": behaviours})

    def make(*args: Any) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(directory))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Channel(directory, f"http://127.0.0.1:{server.server_address[1]}/", behaviours)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def entry_for(name: str, version: str, data: bytes) -> ChannelEntry:
    """The index entry for ``data`` published as ``name`` ``version``."""
    return ChannelEntry.of(name, Version.parse(version), data)


def write_index(
    directory: Path,
    signers: Sequence[Ed25519PrivateKey],
    files: Sequence[tuple[ChannelEntry, bytes]],
    serial: int,
    expires: datetime | None = None,
) -> None:
    """Each entry's bytes at its place and an index listing them signed by ``signers``,
    bypassing ``bundle publish``'s own checks, as an attacker holding those keys would."""
    for entry, data in files:
        (directory / entry.file).parent.mkdir(parents=True, exist_ok=True)
        (directory / entry.file).write_bytes(data)
    until = expires or datetime.now(timezone.utc) + timedelta(days=1)
    index = ChannelIndex(
        serial=serial,
        expires=until.strftime(TIME_FORMAT),
        bundles=tuple(entry for entry, _ in files),
    )
    envelope = Envelope.signed(index.to_bytes(), signers, INDEX_CONTEXT)
    (directory / "index.json").write_bytes(envelope.to_bytes())
