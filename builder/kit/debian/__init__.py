"""Debian packages for a kit whose target has no wheels on PyPI (32-bit ARM): the archive's
signed index, the dependency closure of the packages the runtime needs relative to a minimal
system, and the .deb files, each checked against the index's sha256."""

from edgebundle.builder.kit.debian.archive import Archive, fetch_debs
from edgebundle.builder.kit.debian.packages import Package
from edgebundle.builder.kit.debian.resolve import (
    closure,
    install_order,
    install_steps,
    minimal_system,
)
from edgebundle.builder.kit.debian.select import kit_debs

__all__ = ["Archive", "Package", "closure", "fetch_debs", "install_order", "install_steps",
           "kit_debs",
           "minimal_system"]
