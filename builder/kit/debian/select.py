"""The .deb files a kit carries for a ``DebianRoute``: the route's packages and what they need
beyond a minimal system, downloaded and checked, in the order dpkg installs them."""

from __future__ import annotations

from pathlib import Path

from edgebundle.builder.kit.debian.archive import Archive, fetch_debs
from edgebundle.builder.kit.debian.resolve import closure, install_order, minimal_system
from edgebundle.builder.kit.target import DebianRoute


def kit_debs(route: DebianRoute, archive: Archive, dest: Path) -> list[Path]:
    index = archive.index()
    names = closure(index, route.packages, minimal_system(index))
    return fetch_debs(archive, [index[name] for name in install_order(index, names)], dest)
