"""Progress of long work, one line per stage with its time, for a person watching a terminal.

``Progress.to_stderr()`` writes only when stderr is a terminal: a pipe, a file or CI gets
nothing (the result on stdout is all a script needs). Stages never change what is computed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    @classmethod
    def to_stderr(cls) -> Progress:
        return cls(sys.stderr if sys.stderr.isatty() else None)

    @contextmanager
    def stage(self, text: str) -> Iterator[None]:
        """``text…`` when the stage starts, its seconds when it ends (or ``failed``)."""
        if self._stream is None:
            yield
            return
        self._stream.write(f"{text}…")
        self._stream.flush()
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self._stream.write(" failed\n")
            raise
        self._stream.write(f" {time.perf_counter() - started:.1f} s\n")
        self._stream.flush()


SILENT = Progress(None)
