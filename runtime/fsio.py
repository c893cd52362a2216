"""Durable file operations for the store: each change survives a crash whole or not at all.

Every replacement is temp file in the same directory → write → fsync → ``os.replace`` →
fsync(directory): the rename is atomic on POSIX file systems, the first fsync makes the new
content durable before any name points at it, and the directory fsync makes the name itself
durable before the caller builds on it. Errors surface as one-line ``StoreError``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from edgebundle.runtime.errors import BundleError, StoreError

TEMP_SUFFIX = ".tmp"


def temp_name(target: str) -> str:
    """A fresh hidden temp name for ``target``; ``is_temp_name`` recognises it after a crash."""
    return f".{target}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"cannot sync directory {path}: {e.strerror}") from None


def write_durably(path: Path, data: bytes) -> None:
    """Atomically give ``path`` the content ``data``, durably."""
    temp = path.with_name(temp_name(path.name))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as e:
        _remove_quietly(temp)
        raise StoreError(f"cannot write {path}: {e.strerror}") from None
    fsync_dir(path.parent)


def append_durably(path: Path, line: bytes) -> None:
    """Append one line at the end of ``path`` (created if missing), durably: whole or not at
    all, also when the file system fills up half-way through the line."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            # Callers append under the store's exclusive lock: nobody else moves the end.
            end = os.fstat(fd).st_size
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError:
                # A full disk takes the bytes up to the last page it has room for, then
                # fails: cut the torn line off, or the next line would be glued to it.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"cannot append to {path}: {e.strerror}") from None


def make_dir_durably(path: Path) -> None:
    """Create ``path`` (its parent must exist) if missing, and make its name durable."""
    if path.is_dir():
        return
    try:
        path.mkdir(exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create directory {path}: {e.strerror}") from None
    fsync_dir(path.parent)


def remove_durably(directory: Path, names: Iterable[str]) -> None:
    """Remove the files ``names`` from ``directory``, then make the removals durable."""
    removed = False
    for name in names:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"cannot remove {directory / name}: {e.strerror}") from None
        removed = True
    if removed:
        fsync_dir(directory)


def read_capped(
    path: Path, cap: int, error: type[BundleError] = StoreError
) -> bytes | None:
    """A small file's bytes, or None if it does not exist; an OS error or a file over ``cap``
    bytes is a one-line ``error`` (the reader's own domain error)."""
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
    if len(data) > cap:
        raise error(f"{path} is over the {cap}-byte cap")
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_quietly(path: Path) -> None:
    # Cleanup after a failure that is already being reported; a leftover temp file is
    # harmless (the store sweeps them) and must not hide the original error.
    with contextlib.suppress(OSError):
        path.unlink()
