"""``state.json``: every model's pointers (active, previous, highest seen, bad) and the record
of each kept bundle file. Replacing this one file is the store's atomic switch.

Pure: parsing and writing the document, and the rules a state must obey; no disk access.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from edgebundle.runtime._json import (
    dumps_canonical,
    get_bool,
    get_count,
    get_float,
    get_list,
    get_obj,
    get_optional,
    get_sha256,
    get_str,
    get_timestamp,
    join,
    json_type,
    quote,
    reject_unknown,
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


def _version(d: Mapping[str, Any], key: str, context: str) -> Version:
    return _canonical_version(get_str(d, key, context), join(context, key))


@dataclass(frozen=True, kw_only=True, slots=True)
class SelftestSummary:
    """What the install-time selftest found, as recorded in ``state.json``."""

    passed: bool
    rows: int
    max_abs_error: float
    detail: str

    @classmethod
    def from_result(cls, result: SelftestResult) -> SelftestSummary:
        return cls(
            passed=result.passed,
            rows=result.rows,
            max_abs_error=result.max_abs_error,
            detail=result.detail,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> SelftestSummary:
        reject_unknown(d, ("passed", "rows", "max_abs_error", "detail"), context)
        max_abs_error = get_float(d, "max_abs_error", context)
        if max_abs_error < 0:
            raise ManifestError(
                f"must be >= 0, got {max_abs_error!r}", context=join(context, "max_abs_error")
            )
        return cls(
            passed=get_bool(d, "passed", context),
            rows=get_count(d, "rows", context),
            max_abs_error=max_abs_error,
            detail=get_str(d, "detail", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "max_abs_error": self.max_abs_error,
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class InstalledVersion:
    """One kept bundle file: what it must hash to at load, and how it was installed."""

    sha256: str  # of the whole bundle file
    size: int
    precision: str
    keyid: str  # the trusted key whose signature verified at install
    installed_at: str  # UTC, whole seconds
    selftest: SelftestSummary

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> InstalledVersion:
        fields = ("sha256", "size", "precision", "keyid", "installed_at", "selftest")
        reject_unknown(d, fields, context)
        return cls(
            sha256=get_sha256(d, "sha256", context),
            size=get_count(d, "size", context),
            precision=get_str(d, "precision", context),
            keyid=get_sha256(d, "keyid", context),
            installed_at=get_timestamp(d, "installed_at", context),
            selftest=SelftestSummary.from_dict(
                get_obj(d, "selftest", context), join(context, "selftest")
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "precision": self.precision,
            "keyid": self.keyid,
            "installed_at": self.installed_at,
            "selftest": self.selftest.to_dict(),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelState:
    """One model's pointers. ``installed`` holds exactly the active and previous versions,
    keyed by their text: the store keeps those two bundle files and no others.

    A bad version is never ``previous`` (it could not be rolled back to); it stays ``active``
    only when there is no previous version to fall back to, since scoring must go on. A model
    none of whose versions was ever installed (``highest_seen`` None) is here only to remember
    the versions that failed their selftest, so that no update pass fetches them again.
    """

    active: Version | None
    previous: Version | None
    highest_seen: Version | None
    bad: tuple[Version, ...]
    installed: Mapping[str, InstalledVersion]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "installed", MappingProxyType(dict(sorted(self.installed.items())))
        )
        self._check()

    def _check(self) -> None:
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> ModelState:
        reject_unknown(d, ("active", "previous", "highest_seen", "bad", "installed"), context)
        installed = get_obj(d, "installed", context)
        installed_context = join(context, "installed")
        versions = [_canonical_version(text, installed_context) for text in installed]
        if len(set(versions)) != len(versions):
            raise ManifestError("lists one version twice", context=installed_context)
        try:
            return cls(
                active=get_optional(d, "active", context, _version),
                previous=get_optional(d, "previous", context, _version),
                highest_seen=get_optional(d, "highest_seen", context, _version),
                bad=_bad(d, "bad", context),
                installed={
                    text: InstalledVersion.from_dict(
                        get_obj(installed, text, installed_context), join(installed_context, text)
                    )
                    for text in installed
                },
            )
        except ManifestError as e:
            if e.context:  # a field's own error already names its path
                raise
            raise ManifestError(str(e), context=context) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": None if self.active is None else str(self.active),
            "previous": None if self.previous is None else str(self.previous),
            "highest_seen": None if self.highest_seen is None else str(self.highest_seen),
            "bad": [str(v) for v in self.bad],
            "installed": {text: record.to_dict() for text, record in self.installed.items()},
        }


def _bad(d: Mapping[str, Any], key: str, context: str) -> tuple[Version, ...]:
    items = get_list(d, key, context)
    bad_context = join(context, key)
    versions = []
    for index, item in enumerate(items):
        item_context = f"{bad_context}[{index}]"
        if not isinstance(item, str):
            raise ManifestError(f"expected a string, got {json_type(item)}", item_context)
        versions.append(_canonical_version(item, item_context))
    return tuple(versions)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreState:
    """``state.json``: every model's pointers. Replacing this one file switches versions."""

    format: str = STATE_FORMAT
    models: Mapping[str, ModelState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", MappingProxyType(dict(sorted(self.models.items()))))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> StoreState:
        fmt = get_str(d, "format", context)
        if fmt != STATE_FORMAT:
            raise ManifestError(
                f"unsupported state format {quote(fmt)} (this runtime reads {STATE_FORMAT!r})",
                context=join(context, "format"),
            )
        reject_unknown(d, ("format", "models"), context)
        models = get_obj(d, "models", context)
        models_context = join(context, "models")
        for name in models:
            if not _MODEL_NAME.fullmatch(name):
                raise ManifestError(f"{quote(name)} is not a valid model name", models_context)
        return cls(
            format=fmt,
            models={
                name: ModelState.from_dict(
                    get_obj(models, name, models_context), join(models_context, name)
                )
                for name in models
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "models": {name: model.to_dict() for name, model in self.models.items()},
        }

    def to_bytes(self) -> bytes:
        """Canonical ``state.json``; refuses to write a state it could not read back."""
        data = self.to_dict()
        StoreState.from_dict(data)
        return dumps_canonical(data)

    def with_model(self, name: str, model: ModelState) -> StoreState:
        return replace(self, models={**self.models, name: model})
