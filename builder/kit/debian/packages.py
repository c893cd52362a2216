"""A Debian ``Packages`` index read into typed stanzas: a package's name, version, file,
sha256 and the relations the resolver follows (``Pre-Depends`` and ``Depends``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from edgebundle.builder.kit.errors import KitError

# "libc6 (>= 2.38)", "python3:any", "foo:armhf (<< 2)": the name is all the resolver needs;
# one suite holds one version of each package, which satisfies its siblings' constraints.
_NAME = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)")

Alternatives = tuple[str, ...]  # "a | b | c": any one will do, the first is preferred


@dataclass(frozen=True, kw_only=True, slots=True)
class Package:
    name: str
    version: str
    filename: str  # pool/main/o/onnxruntime/python3-onnxruntime_1.21.0..._armhf.deb
    sha256: str
    size: int
    priority: str
    essential: bool
    depends: tuple[Alternatives, ...]  # Pre-Depends first, then Depends
    pre_depends: tuple[Alternatives, ...]  # configured before this one is even unpacked
    provides: tuple[str, ...]

    @property
    def deb_name(self) -> str:
        return self.filename.rsplit("/", 1)[-1]


def parse_index(text: str) -> dict[str, Package]:
    """Every package of the index by name (the newest, should the index list one twice)."""
    packages: dict[str, Package] = {}
    for fields in _stanzas(text):
        package = _package(fields)
        packages[package.name] = package
    return packages


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def _package(fields: dict[str, str]) -> Package:
    try:
        return Package(
            name=fields["Package"],
            version=fields["Version"],
            filename=fields["Filename"],
            sha256=fields["SHA256"],
            size=int(fields["Size"]),
            priority=fields.get("Priority", "optional"),
            essential=fields.get("Essential") == "yes",
            depends=relations(fields.get("Pre-Depends", "")) + relations(fields.get("Depends", "")),
            pre_depends=relations(fields.get("Pre-Depends", "")),
            provides=tuple(a[0] for a in relations(fields.get("Provides", ""))),
        )
    except (KeyError, ValueError) as e:
        name = fields.get("Package", "?")
        raise KitError(f"the Debian index's entry for {name} lacks a valid {e}") from None


def relations(field: str) -> tuple[Alternatives, ...]:
    """``"a (>= 1), b | c:any"`` as ``(("a",), ("b", "c"))``."""
    groups = []
    for group in field.split(","):
        names = tuple(m.group(1) for part in group.split("|") if (m := _NAME.match(part)))
        if names:
            groups.append(names)
    return tuple(groups)
