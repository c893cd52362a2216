"""``state.json`` on disk: reading the pointers, and the switch.

Replacing ``state.json`` is the one atomic step of every change: the bundle files the new state
names are durable before it, and the files it stops naming are deleted only after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebundle.runtime._json import loads_strict
from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.store._bundles import sweep
from edgebundle.runtime.store._files import read_small
from edgebundle.runtime.store._state import MAX_STATE_BYTES, STATE_FILE, ModelState, StoreState


def read_state(root: Path) -> StoreState:
    """The parsed ``state.json``; an empty state before the first install."""
    path = root / STATE_FILE
    data = read_small(path, MAX_STATE_BYTES)
    if data is None:
        return StoreState()
    try:
        return StoreState.from_dict(loads_strict(data, STATE_FILE))
    except ManifestError as e:
        raise StoreError(f"{path} is corrupt: {e}") from None


def state_token(root: Path) -> tuple[int, int, int]:
    """Changes whenever ``state.json`` is replaced (a new inode each time); ``(0, 0, 0)``
    before the first install."""
    path = root / STATE_FILE
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    except OSError as e:
        raise StoreError(f"cannot stat {path}: {e.strerror}") from None
    return (info.st_dev, info.st_ino, info.st_mtime_ns)


def switch(root: Path, state: StoreState, name: str, model: ModelState) -> None:
    """Write ``state`` with ``name`` updated (this one rename is the atomic switch), then
    delete what it no longer names."""
    new_state = state.with_model(name, model)
    write_durably(root / STATE_FILE, new_state.to_bytes())
    sweep(root, new_state)
