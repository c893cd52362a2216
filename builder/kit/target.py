"""Which devices a kit is for: a platform (OS/machine) and a CPython minor version.

A kit holds binary wheels, so it fits exactly one machine and one Python. The manylinux tags
are listed one by one because pip's ``--platform`` does not widen ``manylinux_2_28`` to the
older tags a wheel may carry. PyPI has no onnxruntime or numpy for 32-bit ARM: there the kit
carries Debian's packages instead (a ``DebianRoute``) and only edgebundle's own wheel.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebundle.builder.kit.errors import KitError

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# glibc 2.28 (Debian 10, RHEL 8) is the newest a device must have: the wheels pip picks may
# need any glibc from 2.17 up to it, never newer.
_GLIBC_MINORS = range(28, 16, -1)
_MACHINES = ("aarch64", "x86_64", "armv7l")


@dataclass(frozen=True)
class DebianRoute:
    """The runtime's dependencies as a Debian suite's packages, for its own Python."""

    suite: str
    arch: str  # Debian's name for the machine
    python: str  # the suite's python3
    packages: tuple[str, ...]  # the runtime's requirements, as that suite packages them


# trixie is the first Debian with onnxruntime (1.21.0, what float bundles need); Raspberry Pi OS
# 32-bit is built on it too.
_DEBIAN = {
    "armv7l": DebianRoute(
        suite="trixie",
        arch="armhf",
        python="3.13",
        # python3-venv: Debian keeps venv's scripts (and ensurepip) out of the stdlib
        packages=(
            "python3-onnxruntime", "python3-numpy", "python3-cryptography", "python3-orjson",
            "python3-venv",
        ),
    ),
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

    @property
    def debian(self) -> DebianRoute | None:
        """Where the runtime's dependencies come from when PyPI has no wheels for the target."""
        return _DEBIAN.get(self.machine)

    def pip_platforms(self) -> list[str]:
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in _GLIBC_MINORS]
        return [*tags, f"manylinux2014_{self.machine}"]


def parse_target(platform: str, python: str) -> Target:
    """The target for ``linux/MACHINE`` and ``3.N``, or a one-line ``KitError``."""
    system, _, machine = platform.partition("/")
    if system != "linux" or machine not in _MACHINES:
        supported = ", ".join(f"linux/{m}" for m in _MACHINES)
        raise KitError(f"platform {platform} is not supported: use one of {supported}")
    if python not in PYTHONS:
        raise KitError(
            f"python {python} is not supported: the runtime's kits are for {', '.join(PYTHONS)}"
        )
    route = _DEBIAN.get(machine)
    if route is not None and python != route.python:
        raise KitError(
            f"{platform} kits run on Debian {route.suite}'s Python {route.python} (PyPI has no "
            f"onnxruntime or numpy wheels for {machine}): pass --python {route.python}"
        )
    return Target(machine=machine, python=python)
