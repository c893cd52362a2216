"""``store.json``: its presence makes a directory a store, and its format gates everything.

Making a store refuses any directory holding something already; opening one refuses a
directory without the marker or with a format this runtime does not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import Document, constant
from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import fsync_dir, write_durably
from edgebundle.runtime.store._files import read_small

STORE_FORMAT = "edgebundle.store/1"
STORE_FILE = "store.json"
_MAX_MARKER_BYTES = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreMarker(Document):
    """``store.json``: its presence makes a directory a store; its format gates everything."""

    format: Annotated[str, constant(STORE_FORMAT, "store")] = STORE_FORMAT


def prepare_empty_dir(root: Path) -> None:
    """Create ``root``, or accept it empty: a store is never made over someone's files."""
    if (root / STORE_FILE).exists():
        raise StoreError(f"{root} is already an edgebundle store")
    try:
        root.mkdir(parents=True, exist_ok=True)
        occupied = any(root.iterdir())
    except FileExistsError:
        raise StoreError(f"{root} exists and is not a directory") from None
    except OSError as e:
        raise StoreError(f"cannot create the store directory {root}: {e.strerror}") from None
    if occupied:
        raise StoreError(
            f"{root} is not empty and is not an edgebundle store; give a new or empty directory"
        )
    fsync_dir(root.parent)


def write_marker(root: Path) -> None:
    write_durably(root / STORE_FILE, dumps_canonical(StoreMarker().to_dict()))


def check_marker(root: Path) -> None:
    """Refuse ``root`` unless it is a store this runtime reads."""
    data = read_small(root / STORE_FILE, _MAX_MARKER_BYTES)
    if data is None:
        raise StoreError(f"{root} is not an edgebundle store (run bundle-runtime init)")
    try:
        StoreMarker.from_dict(loads_strict(data, STORE_FILE))
    except ManifestError as e:
        raise StoreError(f"{root / STORE_FILE}: {e}") from None
