"""Semantic Versioning 2.0.0 versions, ordered by semver precedence.

Equality follows precedence, like ordering: build metadata is kept (``str`` shows it) but never
compared, so ``Version.parse("1.0.0+a") == Version.parse("1.0.0+b")`` and both hash alike.
Compare ``str(v)`` when the exact text matters (e.g. "same version, other content" checks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgebundle.runtime.errors import ManifestError

# semver.org's reference grammar, ASCII digits only (``\d`` would admit other scripts' digits).
_NUMBER = r"0|[1-9][0-9]*"
_PRERELEASE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_BUILD_ID = r"[0-9A-Za-z-]+"
_VERSION = re.compile(
    rf"(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>(?:{_PRERELEASE_ID})(?:\.(?:{_PRERELEASE_ID}))*))?"
    rf"(?:\+(?P<build>{_BUILD_ID}(?:\.{_BUILD_ID})*))?"
)
_PRERELEASE_ID_RE = re.compile(_PRERELEASE_ID)
_BUILD_ID_RE = re.compile(_BUILD_ID)
# Bounds the integer conversion; no real version comes near it.
_MAX_TEXT = 256

_PrereleaseKey = tuple[tuple[int, int, str], ...]
_SortKey = tuple[int, int, int, int, _PrereleaseKey]


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if isinstance(part, bool) or not isinstance(part, int) or part < 0:
                raise ManifestError(f"version numbers must be non-negative integers, not {part!r}")
        for ident in self.prerelease:
            if not _PRERELEASE_ID_RE.fullmatch(ident):
                raise ManifestError(f"invalid prerelease identifier {ident!r}")
        for ident in self.build:
            if not _BUILD_ID_RE.fullmatch(ident):
                raise ManifestError(f"invalid build metadata identifier {ident!r}")

    @classmethod
    def parse(cls, text: str, *, context: str = "") -> Version:
        """Parse strict semver text; ``context`` is the manifest field for error messages."""
        match = _VERSION.fullmatch(text) if len(text) <= _MAX_TEXT else None
        if match is None:
            raise ManifestError(
                f"{text[:_MAX_TEXT]!r} is not a semantic version "
                "(MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], no leading zeros, no 'v' prefix)",
                context=context,
            )
        prerelease, build = match["prerelease"], match["build"]
        return cls(
            major=int(match["major"]),
            minor=int(match["minor"]),
            patch=int(match["patch"]),
            prerelease=tuple(prerelease.split(".")) if prerelease else (),
            build=tuple(build.split(".")) if build else (),
        )

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def _key(self) -> _SortKey:
        # A release outranks all of its prereleases (1.0.0-rc.1 < 1.0.0), hence the flag.
        is_release = 0 if self.prerelease else 1
        return (self.major, self.minor, self.patch, is_release, _prerelease_key(self.prerelease))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() >= other._key()


def _prerelease_key(identifiers: tuple[str, ...]) -> _PrereleaseKey:
    # Numeric identifiers compare numerically and below alphanumeric ones, which compare in
    # ASCII order; a shorter list that is a prefix of a longer one ranks lower (tuple order).
    return tuple((0, int(ident), "") if ident.isdigit() else (1, 0, ident) for ident in identifiers)
