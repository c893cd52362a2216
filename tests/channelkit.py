"""An OTA channel served from a directory by a real HTTP server on 127.0.0.1, with scripted
misbehaviour per path (python-tuf's tests serve metadata from a simulator; ours is a server)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
