"""``state.json``: every model's pointers (active, previous, highest seen, bad) and the record
of each kept bundle file. Replacing this one file is the store's atomic switch.

Pure: parsing and writing the document, and the rules a state must obey; no disk access.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated

from edgebundle.runtime._json import dumps_canonical, quote
from edgebundle.runtime.document import (
    BOOLEAN,
    COUNT,
    NON_NEGATIVE,
    SHA256,
    STRING,
    TIMESTAMP,
    Document,
    Rule,
    array,
    constant,
    freeze,
    mapping,
    nested,
    optional,
    read_string,
)
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.selftest import SelftestResult
from edgebundle.runtime.semver import Version

STATE_FORMAT = "edgebundle.state/1"
STATE_FILE = "state.json"
# A state entry is ~1 KB per model; this bounds what a corrupt or hostile file can cost.
MAX_STATE_BYTES = 4 * 1024 * 1024

# The manifest's rule for model names: one plain path component, safe as a directory name.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _canonical_version(text: str, context: str) -> Version:
    """A version written exactly as ``str(Version)`` writes it: one spelling per file name."""
    version = Version.parse(text, context=context)
    if str(version) != text:
        raise ManifestError(f"{quote(text)} is not written canonically", context=context)
    return version


_VERSION: Rule[Version] = Rule(
    lambda value, path: _canonical_version(read_string(value, path), path), str
)


def _version_key(text: str, path: str) -> None:
    _canonical_version(text, path)


def _model_name(name: str, path: str) -> None:
    if not _MODEL_NAME.fullmatch(name):
        raise ManifestError(f"{quote(name)} is not a valid model name", path)


@dataclass(frozen=True, kw_only=True, slots=True)
class SelftestSummary(Document):
    """What the install-time selftest found, as recorded in ``state.json``."""

    passed: Annotated[bool, BOOLEAN]
    rows: Annotated[int, COUNT]
    max_abs_error: Annotated[float, NON_NEGATIVE]
    detail: Annotated[str, STRING]

    @classmethod
    def from_result(cls, result: SelftestResult) -> SelftestSummary:
        return cls(
            passed=result.passed,
            rows=result.rows,
            max_abs_error=result.max_abs_error,
            detail=result.detail,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class InstalledVersion(Document):
    """One kept bundle file: what it must hash to at load, and how it was installed."""

    sha256: Annotated[str, SHA256]  # of the whole bundle file
    size: Annotated[int, COUNT]
    precision: Annotated[str, STRING]
    keyid: Annotated[str, SHA256]  # the trusted key whose signature verified at install
    installed_at: Annotated[str, TIMESTAMP]  # UTC, whole seconds
    selftest: Annotated[SelftestSummary, nested(SelftestSummary)]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelState(Document):
    """One model's pointers. ``installed`` holds exactly the active and previous versions,
    keyed by their text: the store keeps those two bundle files and no others.

    A bad version is never ``previous`` (it could not be rolled back to); it stays ``active``
    only when there is no previous version to fall back to, since scoring must go on. A model
    none of whose versions was ever installed (``highest_seen`` None) is here only to remember
    the versions that failed their selftest, so that no update pass fetches them again.
    """

    active: Annotated[Version | None, optional(_VERSION)]
    previous: Annotated[Version | None, optional(_VERSION)]
    highest_seen: Annotated[Version | None, optional(_VERSION)]
    bad: Annotated[tuple[Version, ...], array(_VERSION)]
    installed: Annotated[
        Mapping[str, InstalledVersion], mapping(nested(InstalledVersion), key=_version_key)
    ]

    def __post_init__(self) -> None:
        object.__setattr__(self, "installed", freeze(self.installed))
        self.check()

    def check(self) -> None:
        kept = [str(v) for v in (self.active, self.previous) if v is not None]
        if self.active is None and self.previous is not None:
            raise ManifestError("a model with a previous version must have an active one")
        if self.active is not None and self.active == self.previous:
            raise ManifestError(f"active and previous are both {self.active}")
        if sorted(self.installed) != sorted(kept):
            listed = ", ".join(self.installed) or "none"
            raise ManifestError(
                f"installed versions ({listed}) must be exactly the active and previous ones"
            )
        if self.highest_seen is None and self.installed:
            raise ManifestError("installed versions need a highest_seen")
        for text in self.installed:
            if self.highest_seen is not None and Version.parse(text) > self.highest_seen:
                raise ManifestError(f"installed {text} is above highest_seen {self.highest_seen}")
        if len(set(self.bad)) != len(self.bad):
            raise ManifestError("lists a bad version twice")
        if self.previous is not None and self.is_bad(self.previous):
            raise ManifestError(f"previous version {self.previous} is marked bad")
        if self.active is not None and self.previous is not None and self.is_bad(self.active):
            raise ManifestError(f"active version {self.active} is marked bad yet has a previous")

    def is_bad(self, version: Version) -> bool:
        return version in self.bad

    def record(self, version: Version) -> InstalledVersion | None:
        """The kept record for ``version`` by semver precedence (build metadata ignored)."""
        for text, record in self.installed.items():
            if Version.parse(text) == version:
                return record
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreState(Document):
    """``state.json``: every model's pointers. Replacing this one file switches versions."""

    format: Annotated[str, constant(STATE_FORMAT, "state")] = STATE_FORMAT
    models: Annotated[Mapping[str, ModelState], mapping(nested(ModelState), key=_model_name)] = (
        field(default_factory=dict)
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", freeze(self.models))

    def to_bytes(self) -> bytes:
        """Canonical ``state.json``; refuses to write a state it could not read back."""
        data = self.to_dict()
        StoreState.from_dict(data)
        return dumps_canonical(data)

    def with_model(self, name: str, model: ModelState) -> StoreState:
        return replace(self, models={**self.models, name: model})
