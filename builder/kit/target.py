"""Which devices a kit is for: a platform (OS/machine) and a CPython minor version.

A kit holds binary wheels, so it fits exactly one machine and one Python. The manylinux tags
are listed one by one because pip's ``--platform`` does not widen ``manylinux_2_28`` to the
older tags a wheel may carry.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebundle.builder.kit.errors import KitError

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# glibc 2.28 (Debian 10, RHEL 8) is the newest a device must have: the wheels pip picks may
# need any glibc from 2.17 up to it, never newer.
_GLIBC_MINORS = range(28, 16, -1)
_MACHINES = ("aarch64", "x86_64")
_UNREACHABLE = {
    "armv7l": "linux/armv7l: onnxruntime publishes no armv7l wheels (nor does numpy on PyPI); "
    "32-bit ARM has no device kit yet",
}


@dataclass(frozen=True)
class Target:
    machine: str  # as platform.machine() reports it on the device
    python: str  # "3.11"

    @property
    def platform(self) -> str:
        return f"linux/{self.machine}"

    @property
    def cp_tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    def pip_platforms(self) -> list[str]:
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in _GLIBC_MINORS]
        return [*tags, f"manylinux2014_{self.machine}"]


def parse_target(platform: str, python: str) -> Target:
    """The target for ``linux/MACHINE`` and ``3.N``, or a one-line ``KitError``."""
    system, _, machine = platform.partition("/")
    if machine in _UNREACHABLE:
        raise KitError(_UNREACHABLE[machine])
    if system != "linux" or machine not in _MACHINES:
        supported = ", ".join(f"linux/{m}" for m in _MACHINES)
        raise KitError(f"platform {platform} is not supported: use one of {supported}")
    if python not in PYTHONS:
        raise KitError(
            f"python {python} is not supported: the runtime's kits are for {', '.join(PYTHONS)}"
        )
    return Target(machine=machine, python=python)
