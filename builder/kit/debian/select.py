"""The .deb files a kit carries for a ``DebianRoute``: the route's packages and what they need
beyond a minimal system, downloaded and checked, in the ``dpkg -i`` calls that install them."""

from __future__ import annotations

from pathlib import Path

from edgebundle.builder.kit.debian.archive import Archive, fetch_debs
from edgebundle.builder.kit.debian.resolve import (
    closure,
    install_order,
    install_steps,
    minimal_system,
)
from edgebundle.builder.kit.target import DebianRoute


def kit_debs(route: DebianRoute, archive: Archive, dest: Path) -> list[list[Path]]:
    index = archive.index()
    names = closure(index, route.packages, minimal_system(index))
    steps = install_steps(index, install_order(index, names))
    return [fetch_debs(archive, [index[name] for name in step], dest) for step in steps]
