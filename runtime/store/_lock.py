"""``lock``: writers flock it exclusively, loaders shared, so no installer deletes a bundle file
between a loader reading ``state.json`` and reading the file it names."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from edgebundle.runtime.errors import StoreError

LOCK_FILE = "lock"
# An installer holds the lock through verification and the selftest (seconds for a large
# model); a waiter gives up after this long rather than hang a boot or an OTA run forever.
LOCK_TIMEOUT = 60.0
_LOCK_POLL = 0.05


def exclusive(root: Path, timeout: float) -> contextlib.AbstractContextManager[None]:
    return _locked(root, fcntl.LOCK_EX, timeout)


def shared(root: Path, timeout: float) -> contextlib.AbstractContextManager[None]:
    return _locked(root, fcntl.LOCK_SH, timeout)


@contextlib.contextmanager
def _locked(root: Path, operation: int, timeout: float) -> Iterator[None]:
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreError(f"cannot open {path}: {e.strerror}") from None
    try:  # closing the descriptor releases the lock, also when the process dies
        _acquire(fd, operation, timeout, path)
        yield
    finally:
        os.close(fd)


def _acquire(fd: int, operation: int, timeout: float, path: Path) -> None:
    # flock has no timeout of its own; polling keeps this free of signals (alarm() would
    # disturb the HTTP server's threads).
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"store is locked by another process ({path}; waited {timeout:g} s)"
                ) from None
        time.sleep(_LOCK_POLL)
