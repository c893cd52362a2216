"""A download's bytes on one terminal line, for a person running ``bundle-runtime update``.

``download_meters()`` gives meters only when stderr is a terminal: a pipe, a file, a service's
journal get nothing (the report on stdout is all a script needs). The line is rewritten with
``\\r`` at most a few times a second, so a fast download does not flood a slow serial console,
and ends with a newline however the download ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_INTERVAL = 0.25  # seconds between rewrites of the line: four a second at most


class Meter:
    """``label: received of total`` on one line of ``stream``."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._total = total
        self._clock = clock
        self._received = 0
        self._shown_at: float | None = None

    def update(self, received: int) -> None:
        """``received`` bytes so far; drawn if the last drawing is old enough."""
        self._received = received
        now = self._clock()
        if self._shown_at is None or now - self._shown_at >= _INTERVAL:
            self._shown_at = now
            self._draw()

    def __enter__(self) -> Meter:
        self._draw()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._draw(" failed" if kind is not None else "")
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, suffix: str = "") -> None:
        share = f" ({100 * self._received // self._total}%)" if self._total else ""
        self._stream.write(
            f"\r{self._label}: {_bytes(self._received)} of {_bytes(self._total)}{share}{suffix}"
        )
        self._stream.flush()


MeterFactory = Callable[[str, int], Meter]


def download_meters() -> MeterFactory | None:
    """A meter per download on stderr when it is a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None
    stream = sys.stderr
    return lambda label, total: Meter(stream, label, total)


def _bytes(count: int) -> str:
    for unit, size in (("MB", 1_000_000), ("kB", 1_000)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"
