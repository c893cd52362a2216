"""The store's reads and directory chores, with every OS error as a one-line ``StoreError``.

Writes go through ``runtime.fsio``, which makes each one durable; these are what surrounds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.fsio import fsync_dir, read_capped


def read_small(path: Path, cap: int) -> bytes | None:
    """A small file's bytes, or None if it does not exist."""
    return read_capped(path, cap, StoreError)


def list_names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"cannot list {directory}: {e.strerror}") from None


def remove_dir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError as e:
        raise StoreError(f"cannot remove {directory}: {e.strerror}") from None
    fsync_dir(directory.parent)
