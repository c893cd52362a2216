"""Writing a bundle file the way every ``bundle`` command does."""

from __future__ import annotations

from pathlib import Path

from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.fsio import write_durably


def write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write ``path`` durably and atomically (a reader sees the old file or the whole new one).
    An existing bundle with other bytes is kept unless forced: devices refuse the same version
    with other content, so silently replacing it would strand them."""
    if path.exists() and not force and path.read_bytes() != data:
        raise BundleError(
            f"{path} exists with other content; bump --version (devices refuse the same "
            "version with other content) or pass --force"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, data)
