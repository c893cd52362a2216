"""Optional data capture for debugging: a sample of scored rows, written as rotating JSONL files.

Each row is kept with probability ``rate``, independently of the others, and becomes one line::

    {"time": "2025-01-31T12:00:00.123Z", "model": ..., "version": ...,
     "input": {feature: value}, "output": {the output record}}

Inputs are float32 written with the shortest decimal that reads back as the same float32
(``0.1``); a missing value (NaN) is ``null`` and ±inf, which JSON cannot spell, is the string
``"inf"`` / ``"-inf"`` so that it is not mistaken for missing. Keys follow feature and output
order, and non-ASCII is escaped, so every file is plain ASCII.

Files are ``capture-<UTC yyyymmddThhmmssZ>-<seq>.jsonl`` in one directory (``0o700``, files
``0o600``: captured rows may be private). Their names sort in the order they were written: the
sequence number continues across restarts, and a file's timestamp is never earlier than that of
the newest file already there. A file is closed (and fsynced) before a write would make it
exceed ``file_bytes``; before each write the oldest capture files are deleted until all of them
fit in ``max_bytes``. Other files in the directory are never touched. A line longer than
``max_bytes`` could never be kept under the cap and is dropped.

Lines are written whole: each batch is one ``write`` of complete lines to a file opened for
appending, with no buffering in this process, so between writes every file ends with a whole
line. A write that fails (full disk) is cut back to the last whole line. There is no fsync per
batch, which would wear flash for debugging data: a crash or power loss may lose the batches
the OS had not yet written back and cut the last line of the file being written short (a
restart starts a new file, so that line stays last). A reader tailing the current file may see
a batch that is still being written.

Capture must never break scoring: the first ``OSError`` while writing is logged once and turns
capture off for the rest of the process. Two processes must not share one directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random as _random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.rows.answers import encode_jsonl
from edgebundle.runtime.scoring import to_python, to_records

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MIN_FILE_BYTES = 64 * 1024
FILES_PER_CAP = 10  # the default file size is max_bytes / FILES_PER_CAP
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"capture-(\d{8}T\d{6}Z)-(\d{6,})\.jsonl")


def _log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Capture:
    """Writes a random sample of scored rows under ``directory``; thread-safe.

    ``random`` draws for one-row calls, ``rng`` for larger ones; both are injectable so tests
    choose the sampled rows. ``log`` receives the one line reporting a write failure.
    """

    def __init__(
        self,
        directory: Path,
        rate: float,
        max_bytes: int = DEFAULT_MAX_BYTES,
        file_bytes: int | None = None,
        *,
        random: Callable[[], float] = _random.random,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = _log_to_stderr,
    ) -> None:
        """Check the limits (``ValueError``) and open ``directory`` (``StoreError``)."""
        self._file_bytes = _check_limits(rate, max_bytes, file_bytes)
        self._max_bytes = max_bytes
        # 0.0 means off (after a failure or close), so the request path needs no extra check.
        self._rate = rate
        self._random = random
        self._rng = rng if rng is not None else np.random.default_rng()
        self._clock = clock
        self._log = log
        self._dir = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0  # bytes written to the current file
        self._old: deque[tuple[str, int]] = deque()  # closed capture files, oldest first
        self._total = 0  # bytes in all capture files, the current one included
        self._seq = 0
        self._newest_stamp = ""
        self._current = ""  # name of the file open as _fd
        try:
            self._load(_open_dir(directory))
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable")
            self._make_room(0)  # the cap may have been lowered since the last run
        except OSError as e:
            raise StoreError(
                f"cannot use capture directory {directory}: {e.strerror or e}"
            ) from None

    def record(
        self,
        model: str,
        version: str,
        features: Sequence[str],
        x: npt.NDArray[np.float32],
        outputs: Mapping[str, npt.NDArray[Any]],
    ) -> None:
        """Maybe capture rows of ``x`` (float32 ``[N, F]``) with the model's ``outputs`` for
        them; output records are rendered for the sampled rows only."""
        if len(x) == 1:
            # The common single-row request pays one draw and one comparison, nothing more.
            if self._random() >= self._rate:
                return
            chosen = None
        else:
            chosen = np.flatnonzero(self._rng.random(len(x)) < self._rate)
            if not chosen.size:
                return
        self._write_lines(_lines(self._clock(), model, version, features, x, outputs, chosen))

    def close(self) -> None:
        """Flush the current file to disk; later ``record`` calls do nothing."""
        with self._lock:
            if self._rate:
                self._rate = 0.0
                self._guard(self._close_file)

    def _write_lines(self, lines: list[bytes]) -> None:
        with self._lock:
            if self._rate:  # not turned off while this batch was being encoded
                self._guard(lambda: self._append(lines))

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as e:
            self._rate = 0.0
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            self._log(
                f"error: capture: cannot write to {self._dir}: {e.strerror or e}; capture is off"
            )

    def _append(self, lines: list[bytes]) -> None:
        """Write ``lines`` in as few writes as the file size limit allows."""
        batch: list[bytes] = []
        pending = 0
        for line in lines:
            if len(line) > self._max_bytes:
                continue
            if self._size + pending + len(line) > self._file_bytes:
                self._write(batch)
                batch, pending = [], 0
                self._close_file()
            batch.append(line)
            pending += len(line)
        self._write(batch)

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self._drop_deleted_file(self._fd)
        if self._fd is None:
            self._fd = self._new_file()
        data = b"".join(batch)
        self._make_room(len(data))
        try:
            _write_all(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half line left behind
            raise
        self._size += len(data)
        self._total += len(data)

    def _drop_deleted_file(self, fd: int) -> None:
        # Someone deleted the current file: while it is open its space stays in use, for lines
        # nobody can read any more.
        self._fd = None
        os.close(fd)
        self._total -= self._size
        self._size = 0

    def _new_file(self) -> int:
        # Devices without a real-time clock boot with a clock in the past; the name's timestamp
        # never goes back, so names keep sorting in the order the files were written.
        self._newest_stamp = max(self._newest_stamp, _name_stamp(self._clock()))
        self._seq += 1
        self._current = f"capture-{self._newest_stamp}-{self._seq:06d}.jsonl"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(self._dir / self._current, flags, FILE_MODE)

    def _close_file(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)  # once per file, not per line
        finally:
            os.close(fd)
        self._old.append((self._current, self._size))
        self._size = 0

    def _make_room(self, needed: int) -> None:
        while self._old and self._total + needed > self._max_bytes:
            name, size = self._old.popleft()
            with contextlib.suppress(FileNotFoundError):  # deleted by someone else
                (self._dir / name).unlink()
            self._total -= size

    def _load(self, found: list[_Found]) -> None:
        self._old.extend((name, size) for _, _, name, size in found)
        self._total = sum(size for _, _, _, size in found)
        if found:
            self._newest_stamp = found[-1][0]
            self._seq = max(seq for _, seq, _, _ in found)


# (name timestamp, sequence number, file name, size) of a capture file already on disk
_Found = tuple[str, int, str, int]


def _open_dir(directory: Path) -> list[_Found]:
    """Create ``directory`` if missing; its capture files, oldest first."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=DIR_MODE)
    found: list[_Found] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                found.append((match[1], int(match[2]), entry.name, size))
    return sorted(found)


def _check_limits(rate: float, max_bytes: int, file_bytes: int | None) -> int:
    """The file size to rotate at, after checking all three limits."""
    if not 0.0 < rate <= 1.0:  # also refuses NaN
        raise ValueError(f"capture rate must be > 0 and <= 1, got {rate}")
    if max_bytes <= 0:
        raise ValueError(f"capture max bytes must be > 0, got {max_bytes}")
    if file_bytes is None:
        # A tenth: deleting the oldest file frees a tenth of the cap, so a full directory
        # holds 90-100% of it. At least 64 KiB, so a small cap does not mean a file per row.
        return min(max_bytes, max(max_bytes // FILES_PER_CAP, MIN_FILE_BYTES))
    if not 0 < file_bytes <= max_bytes:
        raise ValueError(f"capture file bytes must be > 0 and <= {max_bytes}, got {file_bytes}")
    return file_bytes


def _lines(
    now: float,
    model: str,
    version: str,
    features: Sequence[str],
    x: npt.NDArray[np.float32],
    outputs: Mapping[str, npt.NDArray[Any]],
    chosen: npt.NDArray[np.intp] | None,
) -> list[bytes]:
    """One encoded line per chosen row (``None``: every row)."""
    if chosen is not None:
        x = x[chosen]
        outputs = {name: value[chosen] for name, value in outputs.items()}
    records = to_records(outputs)
    head: dict[str, object] = {"time": _rfc3339(now), "model": model, "version": version}
    return [
        encode_jsonl(
            [{**head, "input": dict(zip(features, row, strict=True)), "output": dict(record)}]
        )
        for row, record in zip(_inputs(x), records, strict=True)
    ]


def _inputs(x: npt.NDArray[np.float32]) -> list[list[object]]:
    values: list[list[object]] = to_python(x)
    infinite = np.isinf(x)
    if infinite.any():  # rare, and argwhere costs more than the rest of a row
        for i, j in np.argwhere(infinite).tolist():
            values[i][j] = "inf" if x[i, j] > 0 else "-inf"
    return values


def _rfc3339(now: float) -> str:
    seconds, millis = divmod(int(now * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _name_stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
