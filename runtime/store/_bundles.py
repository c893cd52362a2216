"""``bundles/<name>/<version>.bundle``: the kept bundle files, each written whole, read back only
while it hashes to the sha256 ``state.json`` recorded, and deleted once no state names it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgebundle.runtime.bundle import Limits, read_bundle_file
from edgebundle.runtime.errors import IntegrityError
from edgebundle.runtime.fsio import is_temp_name, make_dir_durably, remove_durably, write_durably
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store._files import list_names, remove_dir
from edgebundle.runtime.store._state import StoreState

BUNDLES_DIR = "bundles"
BUNDLE_SUFFIX = ".bundle"


def _path(root: Path, name: str, version: Version) -> Path:
    return root / BUNDLES_DIR / name / f"{version}{BUNDLE_SUFFIX}"


def write_bundle(root: Path, name: str, version: Version, data: bytes) -> None:
    make_dir_durably(root / BUNDLES_DIR)
    make_dir_durably(root / BUNDLES_DIR / name)
    write_durably(_path(root, name, version), data)


def read_kept(root: Path, name: str, version: Version, expected: str, limits: Limits) -> bytes:
    """The kept bundle file's bytes, refused unless they hash to the recorded sha256."""
    path = _path(root, name, version)
    data = read_bundle_file(path, limits)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise IntegrityError(
            f"{path} changed on disk: its sha256 is {actual}, the store recorded {expected}"
        )
    return data


def sweep(root: Path, state: StoreState) -> None:
    """Delete bundle and temp files ``state`` does not name: crash leftovers, old versions.

    Called only after ``state`` is durable, so nothing a reader could be sent to goes.
    """
    bundles = root / BUNDLES_DIR
    remove_durably(root, [n for n in list_names(root) if is_temp_name(n)])
    for entry in list_names(bundles):
        directory = bundles / entry
        if not directory.is_dir() or directory.is_symlink():
            remove_durably(bundles, [entry])
            continue
        model = state.models.get(entry)
        keep = set() if model is None else {f"{v}{BUNDLE_SUFFIX}" for v in model.installed}
        remove_durably(directory, [n for n in list_names(directory) if n not in keep])
        if not keep:
            remove_dir(directory)


def discard(root: Path, name: str, version: Version) -> None:
    """Undo the file write of an install that is being refused."""
    directory = root / BUNDLES_DIR / name
    remove_durably(directory, [f"{version}{BUNDLE_SUFFIX}"])
    if not list_names(directory):
        remove_dir(directory)
