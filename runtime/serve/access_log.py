"""``serve --access-log FILE|-``: one line per answered request, written by a thread of its own.

A line is ``TIME PEER METHOD PATH STATUS BYTES SECONDS``: an ISO 8601 UTC time with
milliseconds, the client's address, the request's method and path (its first 512 characters;
bytes outside printable ASCII as ``%XX``, so a path cannot forge a line or a terminal escape),
the status, the body bytes sent and the time from the request's first byte to its written
answer. A request refused before its method was read logs ``-`` for both.

The request only appends its fields to a queue: a slow or stalled disk never holds up scoring.
When the writer falls ``_MAX_PENDING`` lines behind, further lines are dropped and a line says
how many.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import BinaryIO

from edgebundle.runtime.errors import ServeError

_MAX_PENDING = 10_000  # lines of at most ~600 bytes: a few MB however slow the disk
_MAX_PATH = 512  # characters of a path logged: the request line may be 64 KiB
_Entry = tuple[float, str, str, str, int, int, float]


class AccessLog:
    def __init__(self, target: str) -> None:
        """``target``: a file to append to, or ``-`` for standard output."""
        self._owned = target != "-"
        try:
            self._out: BinaryIO = open(target, "ab") if self._owned else sys.stdout.buffer  # noqa: SIM115
        except OSError as e:
            raise ServeError(f"cannot open the access log {target}: {e.strerror}") from None
        self._pending: deque[_Entry] = deque()
        self._dropped = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="edgebundle-access-log",
                                        daemon=True)
        self._thread.start()

    def record(
        self, peer: str, method: str, path: str, status: int, size: int, seconds: float
    ) -> None:
        """Queue one request's line (any thread; never waits)."""
        if len(self._pending) >= _MAX_PENDING:
            self._dropped += 1  # an approximate count under races: it only says lines are lost
            return
        self._pending.append((time.time(), peer, method, path[:_MAX_PATH], status, size, seconds))
        self._wake.set()

    def close(self) -> None:
        """Write what is queued, then stop (the file is closed; standard output is not)."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=10)
        if self._owned:
            self._out.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            closing = self._closing
            lines = []
            while self._pending:
                lines.append(_line(self._pending.popleft()))
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                lines.append(f"{_iso(time.time())} access log fell behind: "
                             f"{dropped} lines dropped\n")
            try:
                self._out.write("".join(lines).encode("ascii"))
                self._out.flush()
            except (OSError, ValueError):  # a full disk or a closed stdout: lose these lines
                pass
            if closing:
                return


def _line(entry: _Entry) -> str:
    at, peer, method, path, status, size, seconds = entry
    return (f"{_iso(at)} {_printable(peer)} {_printable(method) or '-'} "
            f"{_printable(path) or '-'} {status} {size} {seconds:.6f}\n")


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _printable(text: str) -> str:
    if text.isascii() and text.isprintable() and " " not in text:
        return text
    return "".join(
        c if "!" <= c <= "~" else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text
    )
