"""The device kit: an offline installer of the runtime for one platform and Python."""

from edgebundle.builder.kit.assemble import Kit, KitOptions, make_kit, write_kit
from edgebundle.builder.kit.errors import KitError
from edgebundle.builder.kit.target import Target, parse_target

__all__ = [
    "Kit",
    "KitError",
    "KitOptions",
    "Target",
    "make_kit",
    "parse_target",
    "write_kit",
]
