"""The device's model store: trusted keys, installed bundles, and the active version per model.

A store is a directory::

    store.json                         {"format": "edgebundle.store/1"}: marks a store
    trust.json                         the trusted key set: keys, threshold, chain version
                                       (``runtime.ota.keychain.KeySet``); stores made before the
                                       key chain hold keys/<keyid>.pub instead, read as
                                       provisioned keys until the first rotation replaces them
    ota.json                           the last channel index serial accepted (OtaState)
    state.json                         the one pointer file, replaced atomically (StoreState)
    bundles/<name>/<version>.bundle    each installed bundle file, kept whole
    audit.log                          append-only JSON lines (AuditEvent)
    lock                               flock'ed: exclusively by writers, shared by loaders

Whole bundle files rather than unpacked directories: one file is one atomic rename, and
``load_active`` checks the file's sha256 against the one ``state.json`` recorded at install
*before* parsing anything (verify bytes, then parse), so disk corruption or a swapped file is
caught. Integrity at load rests on that recorded sha256, taken after the signature verified at
install (``runtime.bundle.open_installed``); the signature is not checked again, since the keys
live in this same directory, so loading never needs cryptography (~10 MB of a server's
resident memory). A key rotation (``adopt_trust``, after the updater verified the channel's
key chain) therefore cannot strand an installed bundle: the keys it drops sign no new install,
and what they signed before stays loadable by its pin.

Crash safety: every write is temp file + fsync + rename + fsync(directory) (``runtime.fsio``)
and happens in an order where a crash at any instant leaves ``state.json`` naming only complete,
durable files: the new bundle file is written before the state switch, the replaced
``state.json`` *is* the switch, and files are deleted only after the switch stops naming them.
Leftovers of a crash (unreferenced bundles, temp files) are swept by the next write.

Per model the store keeps exactly the active and the previous version's files. Anti-rollback:
a version below the highest ever installed, or equal to an installed one with other content,
or marked bad, is refused; reinstalling the active version's exact bytes is a no-op.
``rollback`` swaps active and previous (so rolling back twice restores the original);
``highest_seen`` is unchanged by it, since anti-rollback is about what was installed.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from edgebundle.runtime._json import (
    dumps_canonical,
    get_bool,
    get_float,
    get_list,
    get_obj,
    get_optional,
    get_str,
    join,
    json_type,
    loads_strict,
    quote,
    reject_unknown,
)
from edgebundle.runtime.bundle import (
    DEFAULT_LIMITS,
    Limits,
    VerifiedBundle,
    open_bundle,
    open_installed,
    read_bundle_file,
)
from edgebundle.runtime.errors import (
    BundleError,
    IntegrityError,
    ManifestError,
    RollbackError,
    SelftestError,
    StoreError,
)
from edgebundle.runtime.fsio import (
    append_durably,
    fsync_dir,
    is_temp_name,
    make_dir_durably,
    remove_durably,
    write_durably,
)
from edgebundle.runtime.manifest import Manifest, get_count, get_sha256, get_timestamp
from edgebundle.runtime.scoring import DEFAULT_THREADS, Scorer
from edgebundle.runtime.selftest import SelftestResult, parse_selftest, run_selftest
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import Baseline, baseline_of

if TYPE_CHECKING:
    from edgebundle.runtime.ota.keychain import KeySet
    from edgebundle.runtime.signing import TrustedKeys

STORE_FORMAT = "edgebundle.store/1"
STATE_FORMAT = "edgebundle.state/1"
AUDIT_EVENTS = ("init", "installed", "refused", "rollback", "marked-bad", "keys-rotated")
OTA_FORMAT = "edgebundle.ota/2"
# ota/1 also carried the version of the single-file key rotation; trust.json holds trust now.
_LEGACY_OTA_FORMAT = "edgebundle.ota/1"
OTA_FILE = "ota.json"
TRUST_FILE = "trust.json"

STORE_FILE = "store.json"
STATE_FILE = "state.json"
AUDIT_FILE = "audit.log"
LOCK_FILE = "lock"
KEYS_DIR = "keys"
BUNDLES_DIR = "bundles"
BUNDLE_SUFFIX = ".bundle"

# An installer holds the lock through verification and the selftest (seconds for a large
# model); a waiter gives up after this long rather than hang a boot or an OTA run forever.
LOCK_TIMEOUT = 60.0
_LOCK_POLL = 0.05
# A state entry is ~1 KB per model; this bounds what a corrupt or hostile file can cost.
_MAX_STATE_BYTES = 4 * 1024 * 1024
_MAX_MARKER_BYTES = 4096
_MAX_TRUST_BYTES = 16 * 1024  # 16 keys of ~50 bytes each, with room to spare

# The manifest's rule for model names: one plain path component, safe as a directory name.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# --- field readers ---------------------------------------------------------------------------


def _canonical_version(text: str, context: str) -> Version:
    """A version written exactly as ``str(Version)`` writes it: one spelling per file name."""
    version = Version.parse(text, context=context)
    if str(version) != text:
        raise ManifestError(f"{quote(text)} is not written canonically", context=context)
    return version


def _version(d: Mapping[str, Any], key: str, context: str) -> Version:
    return _canonical_version(get_str(d, key, context), join(context, key))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(_TIME_FORMAT)


# --- on-disk formats -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreMarker:
    """``store.json``: its presence makes a directory a store; its format gates everything."""

    format: str = STORE_FORMAT

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> StoreMarker:
        fmt = get_str(d, "format", context)
        if fmt != STORE_FORMAT:
            raise ManifestError(
                f"unsupported store format {quote(fmt)} (this runtime reads {STORE_FORMAT!r})",
                context=join(context, "format"),
            )
        reject_unknown(d, ("format",), context)
        return cls(format=fmt)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format}


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
    only when there is no previous version to fall back to, since scoring must go on.
    """

    active: Version | None
    previous: Version | None
    highest_seen: Version
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
        for text in self.installed:
            if Version.parse(text) > self.highest_seen:
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
                highest_seen=_version(d, "highest_seen", context),
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
            "highest_seen": str(self.highest_seen),
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


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """One line of ``audit.log``. ``model``/``version`` are null when a bundle was refused
    before its manifest could be trusted; ``origin`` is where an install came from."""

    time: str
    event: str
    model: str | None
    version: str | None
    sha256: str | None
    origin: str | None
    reason: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> AuditEvent:
        keys = ("time", "event", "model", "version", "sha256", "origin", "reason")
        reject_unknown(d, keys, context)
        event = get_str(d, "event", context)
        if event not in AUDIT_EVENTS:
            raise ManifestError(f"unknown event {quote(event)}", context=join(context, "event"))
        return cls(
            time=get_timestamp(d, "time", context),
            event=event,
            model=get_optional(d, "model", context, get_str),
            version=get_optional(d, "version", context, get_str),
            sha256=get_optional(d, "sha256", context, get_sha256),
            origin=get_optional(d, "origin", context, get_str),
            reason=get_str(d, "reason", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "event": self.event,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "origin": self.origin,
            "reason": self.reason,
        }

    def to_line(self) -> bytes:
        # Compact JSON escapes every newline inside values: one event is always one line.
        return dumps_canonical(self.to_dict(), compact=True)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OtaState:
    """``ota.json``: the highest channel index serial accepted, so no older one is replayed."""

    last_serial: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> OtaState:
        fmt = get_str(d, "format", context)
        legacy = fmt == _LEGACY_OTA_FORMAT
        if fmt != OTA_FORMAT and not legacy:
            raise ManifestError(f"unsupported format (expected {OTA_FORMAT!r})", context)
        reject_unknown(d, ("format", "last_serial", *(("key_version",) if legacy else ())), context)
        return cls(last_serial=get_count(d, "last_serial", context))

    def to_dict(self) -> dict[str, Any]:
        return {"format": OTA_FORMAT, "last_serial": self.last_serial}


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallResult:
    name: str
    version: Version
    previous: Version | None  # active before this install (unchanged by a no-op); None at first
    sha256: str
    selftest: SelftestSummary
    already_installed: bool  # the same bytes were already active: nothing changed


@dataclass(frozen=True, kw_only=True, slots=True)
class RollbackResult:
    name: str
    active: Version  # the version now active (the former previous)
    previous: Version  # the former active version, now the one a second rollback restores


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedModel:
    name: str
    version: Version
    sha256: str
    manifest: Manifest
    scorer: Scorer
    baseline: Baseline | None  # stats.json: what drift monitoring compares live rows with


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Store:
    """An opened store. Writers serialise on ``lock``; readers may run beside them."""

    root: Path
    limits: Limits = DEFAULT_LIMITS
    lock_timeout: float = LOCK_TIMEOUT

    @classmethod
    def init(
        cls,
        root: Path,
        trusted: Sequence[Path],
        *,
        limits: Limits = DEFAULT_LIMITS,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> Store:
        """Create a store trusting ``trusted`` in a new or empty directory: PEM public keys,
        or one key statement from a channel (``runtime.ota.keychain.load_trust``).

        ``store.json`` is written last, so an interrupted init leaves a directory that is not a
        store (and that init then refuses as not empty) rather than a store missing its keys.
        """
        from edgebundle.runtime.ota.keychain import TRUST_FORMAT, load_trust  # see trust

        root = root.absolute()
        trust = load_trust(trusted)
        _prepare_empty_dir(root)
        write_durably(root / TRUST_FILE, trust.to_bytes(TRUST_FORMAT))
        make_dir_durably(root / BUNDLES_DIR)
        write_durably(root / LOCK_FILE, b"")
        reason = f"trusted {trust.describe()}: " + ", ".join(trust.keyids())
        _append_audit(root, "init", reason=reason)
        write_durably(root / STORE_FILE, dumps_canonical(StoreMarker().to_dict()))
        return cls.open(root, limits=limits, lock_timeout=lock_timeout)

    @classmethod
    def open(
        cls, root: Path, *, limits: Limits = DEFAULT_LIMITS, lock_timeout: float = LOCK_TIMEOUT
    ) -> Store:
        root = root.absolute()
        data = _read_small(root / STORE_FILE, _MAX_MARKER_BYTES)
        if data is None:
            raise StoreError(f"{root} is not an edgebundle store (run bundle-runtime init)")
        try:
            StoreMarker.from_dict(loads_strict(data, STORE_FILE))
        except ManifestError as e:
            raise StoreError(f"{root / STORE_FILE}: {e}") from None
        return cls(root=root, limits=limits, lock_timeout=lock_timeout)

    def trust(self) -> KeySet:
        """The trusted key set: ``trust.json``, or a store's older ``keys/*.pub`` (provisioned
        keys, any one of which signs).

        Read on demand, and cryptography imported only here and by the other key operations:
        serving and loading installed bundles never need it.
        """
        from edgebundle.runtime.ota.keychain import TRUST_FORMAT, KeySet, parse_key_set
        from edgebundle.runtime.signing import load_key_dir

        data = _read_small(self.root / TRUST_FILE, _MAX_TRUST_BYTES)
        if data is not None:
            try:
                return parse_key_set(data, TRUST_FILE, TRUST_FORMAT)
            except BundleError as e:
                raise StoreError(f"{self.root / TRUST_FILE} is corrupt: {e}") from None
        keys = load_key_dir(self.root / KEYS_DIR)
        if not keys:
            raise StoreError(f"{self.root} holds no trusted keys ({TRUST_FILE})")
        return KeySet(version=0, threshold=1, keys=tuple(keys), expires=None)

    def trusted_keys(self) -> TrustedKeys:
        """The keys (and how many of them) a new install must be signed by."""
        return self.trust().trusted()

    def state(self) -> StoreState:
        """The parsed ``state.json``; an empty state before the first install."""
        path = self.root / STATE_FILE
        data = _read_small(path, _MAX_STATE_BYTES)
        if data is None:
            return StoreState()
        try:
            return StoreState.from_dict(loads_strict(data, STATE_FILE))
        except ManifestError as e:
            raise StoreError(f"{path} is corrupt: {e}") from None

    def state_token(self) -> tuple[int, int, int]:
        """Changes whenever ``state.json`` is replaced (a new inode each time): poll it cheaply
        to know when to reload. ``(0, 0, 0)`` before the first install."""
        try:
            info = os.stat(self.root / STATE_FILE)
        except FileNotFoundError:
            return (0, 0, 0)
        except OSError as e:
            raise StoreError(f"cannot stat {self.root / STATE_FILE}: {e.strerror}") from None
        return (info.st_dev, info.st_ino, info.st_mtime_ns)

    def install(self, data: bytes, *, origin: str) -> InstallResult:
        """Verify, admit (anti-rollback), store, selftest, then switch to the bundle ``data``.

        Any refusal is audited and raised (``BundleError`` subclasses: ``RollbackError`` for
        anti-rollback, ``SelftestError`` for a failed selftest, the verifier's own errors for a
        bad bundle), and leaves the active version and ``state.json`` untouched.
        """
        sha256 = hashlib.sha256(data).hexdigest()
        with self._locked(fcntl.LOCK_EX):
            try:
                bundle = open_bundle(data, self.trusted_keys(), self.limits)
            except BundleError as e:
                self._refuse(e, origin=origin, sha256=sha256)
            manifest = bundle.manifest
            state = self.state()
            model = state.models.get(manifest.name)
            try:
                already = _admit(manifest, model, sha256)
            except RollbackError as e:
                self._refuse(e, origin=origin, sha256=sha256, manifest=manifest)
            if already is not None:
                self._sweep(state)
                return InstallResult(
                    name=manifest.name,
                    version=manifest.version,
                    previous=None if model is None else model.previous,
                    sha256=sha256,
                    selftest=already.selftest,
                    already_installed=True,
                )
            return self._install_new(bundle, data, sha256, state, origin)

    def rollback(self, name: str) -> RollbackResult:
        """Make the previous version active again; the active one becomes previous."""
        with self._locked(fcntl.LOCK_EX):
            state = self.state()
            model = _model(state, name)
            if model.active is None or model.previous is None:
                raise StoreError(f"{name} has no previous version to roll back to")
            active, previous = model.active, model.previous
            # Never switch to a file that changed on disk since it was installed.
            self._read_installed(name, previous, _record(model, previous).sha256)
            self._switch(state, name, replace(model, active=previous, previous=active))
            self._audit("rollback", name, previous, reason=f"rolled back from {active}")
            return RollbackResult(name=name, active=previous, previous=active)

    def mark_bad(self, name: str, version: Version, reason: str) -> None:
        """Record ``version`` of ``name`` as bad so it is never installed again.

        If it is active and a previous version exists, the previous one becomes active (and
        nothing is left to roll back to). With no previous version it stays active: a device
        scoring with a version its selftest passed beats a device that cannot score at all.
        """
        with self._locked(fcntl.LOCK_EX):
            state = self.state()
            model = _model(state, name)
            if model.is_bad(version):
                return
            updated, note = _marked_bad(model, version)
            self._switch(state, name, updated)
            self._audit("marked-bad", name, version, reason=reason + note)

    def load_active(self, name: str, threads: int = DEFAULT_THREADS) -> LoadedModel:
        """The active version of ``name``, checked against the sha256 recorded at install."""
        # Shared: an installer cannot delete the file between reading the state and the file.
        with self._locked(fcntl.LOCK_SH):
            model = _model(self.state(), name)
            if model.active is None:
                raise StoreError(f"{name} has no active version")
            record = _record(model, model.active)
            data = self._read_installed(name, model.active, record.sha256)
        bundle = open_installed(data, record.sha256, record.keyid, self.limits)
        return LoadedModel(
            name=name,
            version=model.active,
            sha256=record.sha256,
            manifest=bundle.manifest,
            scorer=Scorer.from_bundle(bundle, threads),
            baseline=baseline_of(bundle),
        )

    def ota_state(self) -> OtaState:
        data = _read_small(self.root / OTA_FILE, _MAX_MARKER_BYTES)
        if data is None:
            return OtaState()
        try:
            return OtaState.from_dict(loads_strict(data, OTA_FILE))
        except ManifestError as e:
            raise StoreError(f"{self.root / OTA_FILE} is corrupt: {e}") from None

    def record_serial(self, serial: int) -> None:
        """Remember an accepted channel index serial; a lower one is a replay."""
        with self._locked(fcntl.LOCK_EX):
            ota = self.ota_state()
            if serial < ota.last_serial:
                raise RollbackError(
                    f"channel index serial {serial} is older than {ota.last_serial} already "
                    "seen (replayed index)"
                )
            if serial > ota.last_serial:
                self._write_ota(replace(ota, last_serial=serial))

    def adopt_trust(self, key_set: KeySet, *, origin: str) -> None:
        """Trust exactly ``key_set`` from now on: a statement of the channel's key chain that
        the caller verified step by step from the version trusted now.

        Keys rotated out sign no new install; what they signed before still loads by its
        sha256 pin. One rename switches the trust; older ``keys/*.pub`` go after it.
        """
        from edgebundle.runtime.ota.keychain import TRUST_FORMAT  # see trust

        with self._locked(fcntl.LOCK_EX):
            current = self.trust()
            if key_set.version <= current.version:
                raise RollbackError(
                    f"key set version {key_set.version} is not newer than {current.version} "
                    "(replayed key statement)"
                )
            write_durably(self.root / TRUST_FILE, key_set.to_bytes(TRUST_FORMAT))
            legacy = self.root / KEYS_DIR
            if legacy.is_dir():
                remove_durably(legacy, _list(legacy))
                _remove_dir(legacy)
            _append_audit(
                self.root,
                "keys-rotated",
                origin=origin,
                reason=f"{key_set.describe()}: " + ", ".join(key_set.keyids()),
            )

    def _write_ota(self, ota: OtaState) -> None:
        write_durably(self.root / OTA_FILE, dumps_canonical(ota.to_dict()))

    def default_model(self) -> str:
        """The one model with an active version, for callers that were not told which."""
        names = [name for name, model in self.state().models.items() if model.active is not None]
        if not names:
            raise StoreError(f"no model is installed in {self.root}")
        if len(names) > 1:
            raise StoreError(f"the store holds several models ({', '.join(names)}); name one")
        return names[0]

    # --- steps ---------------------------------------------------------------------------------

    def _install_new(
        self, bundle: VerifiedBundle, data: bytes, sha256: str, state: StoreState, origin: str
    ) -> InstallResult:
        manifest = bundle.manifest
        name, version = manifest.name, manifest.version
        model = state.models.get(name)
        # Reinstalling the kept previous version (after a rollback) rewrites a file the state
        # names with the identical bytes it recorded: harmless, and it repairs a damaged copy.
        kept = model is not None and model.record(version) is not None
        make_dir_durably(self.root / BUNDLES_DIR)
        make_dir_durably(self.root / BUNDLES_DIR / name)
        write_durably(self._bundle_path(name, version), data)
        try:
            summary = self._selftest(name, version, sha256, bundle.keyid)
            record = InstalledVersion(
                sha256=sha256,
                size=len(data),
                precision=manifest.precision,
                keyid=bundle.keyid,
                installed_at=_now(),
                selftest=summary,
            )
            self._switch(state, name, _installed(model, version, record))
        except BundleError as e:
            if not kept:
                self._forget(name, version)
            if isinstance(e, SelftestError):
                self._refuse(e, origin=origin, sha256=sha256, manifest=manifest)
            raise
        previous = None if model is None else model.active
        reason = f"previous: {previous or 'none'}; selftest: {summary.detail}"
        try:
            self._audit("installed", name, version, sha256=sha256, origin=origin, reason=reason)
        except StoreError as e:
            raise StoreError(f"installed {name} {version}, but could not record it: {e}") from None
        return InstallResult(
            name=name,
            version=version,
            previous=previous,
            sha256=sha256,
            selftest=summary,
            already_installed=False,
        )

    def _selftest(self, name: str, version: Version, sha256: str, keyid: str) -> SelftestSummary:
        """Run the bundle's selftest on the stored file, loaded exactly as ``load_active`` will.

        A file that cannot be read back is the device's fault, not the bundle's: a
        ``StoreError``, which marks no version bad.
        """
        try:
            data = self._read_installed(name, version, sha256)
        except BundleError as e:
            raise StoreError(f"cannot read back {name} {version} after writing it: {e}") from None
        try:
            bundle = open_installed(data, sha256, keyid, self.limits)
            scorer = Scorer.from_bundle(bundle)
            result = run_selftest(scorer, parse_selftest(bundle.files["selftest.json"]))
            baseline_of(bundle)  # a server would refuse to load it: refuse to install it
        except BundleError as e:
            raise SelftestError(f"selftest failed for {name} {version}: {e}") from None
        if not result.passed:
            raise SelftestError(f"selftest failed for {name} {version}: {result.detail}")
        return SelftestSummary.from_result(result)

    def _switch(self, state: StoreState, name: str, model: ModelState) -> None:
        """Write the state with ``name`` updated (this one rename is the atomic switch), then
        delete what it no longer names."""
        new_state = state.with_model(name, model)
        write_durably(self.root / STATE_FILE, new_state.to_bytes())
        self._sweep(new_state)

    def _sweep(self, state: StoreState) -> None:
        """Delete bundle and temp files ``state`` does not name: crash leftovers, old versions.

        Called only after ``state`` is durable, so nothing a reader could be sent to goes.
        """
        bundles = self.root / BUNDLES_DIR
        remove_durably(self.root, [n for n in _list(self.root) if is_temp_name(n)])
        for entry in _list(bundles):
            directory = bundles / entry
            if not directory.is_dir() or directory.is_symlink():
                remove_durably(bundles, [entry])
                continue
            model = state.models.get(entry)
            keep = set() if model is None else {f"{v}{BUNDLE_SUFFIX}" for v in model.installed}
            remove_durably(directory, [n for n in _list(directory) if n not in keep])
            if not keep:
                _remove_dir(directory)

    def _forget(self, name: str, version: Version) -> None:
        """Undo the file write of an install that did not switch, unless the state names the
        version after all (a failure after the switch's rename). Best effort: the next write's
        sweep removes what is left."""
        with contextlib.suppress(BundleError):
            model = self.state().models.get(name)
            if model is None or model.record(version) is None:
                self._discard(name, version)

    def _discard(self, name: str, version: Version) -> None:
        """Undo the file write of an install that is being refused."""
        directory = self.root / BUNDLES_DIR / name
        remove_durably(directory, [f"{version}{BUNDLE_SUFFIX}"])
        if not _list(directory):
            _remove_dir(directory)

    def _read_installed(self, name: str, version: Version, expected: str) -> bytes:
        """The kept bundle file's bytes, refused unless they hash to the recorded sha256."""
        path = self._bundle_path(name, version)
        data = read_bundle_file(path, self.limits)
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"{path} changed on disk: its sha256 is {actual}, the store recorded {expected}"
            )
        return data

    def _bundle_path(self, name: str, version: Version) -> Path:
        return self.root / BUNDLES_DIR / name / f"{version}{BUNDLE_SUFFIX}"

    def _refuse(
        self,
        error: BundleError,
        *,
        origin: str,
        sha256: str,
        manifest: Manifest | None = None,
    ) -> NoReturn:
        name = None if manifest is None else manifest.name
        version = None if manifest is None else manifest.version
        self._audit("refused", name, version, sha256=sha256, origin=origin, reason=str(error))
        raise error

    def _audit(
        self,
        event: str,
        name: str | None,
        version: Version | None,
        *,
        reason: str,
        sha256: str | None = None,
        origin: str | None = None,
    ) -> None:
        _append_audit(
            self.root,
            event,
            name=name,
            version=None if version is None else str(version),
            sha256=sha256,
            origin=origin,
            reason=reason,
        )

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        path = self.root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open {path}: {e.strerror}") from None
        try:  # closing the descriptor releases the lock, also when the process dies
            _acquire(fd, operation, self.lock_timeout, path)
            yield
        finally:
            os.close(fd)


# --- pure decisions ------------------------------------------------------------------------


def _admit(manifest: Manifest, model: ModelState | None, sha256: str) -> InstalledVersion | None:
    """Apply anti-rollback. The kept record if these exact bytes are already active (a no-op),
    else None to go ahead; raises ``RollbackError`` to refuse."""
    if model is None:
        return None
    name, version = manifest.name, manifest.version
    record = model.record(version)
    if record is not None and record.sha256 != sha256:
        raise RollbackError(
            f"refusing {name} {version}: version {version} is already installed with other "
            f"content (sha256 {record.sha256[:16]}…, this bundle {sha256[:16]}…); same version, "
            "other content: publish it as a new version"
        )
    if record is not None and model.active == version:
        return record
    if model.is_bad(version):
        raise RollbackError(f"refusing {name} {version}: it was marked bad on this device")
    if version < model.highest_seen or (version == model.highest_seen and record is None):
        raise RollbackError(
            f"refusing {name} {version}: version {model.highest_seen} was already installed "
            "(anti-rollback)"
        )
    return None


def _installed(model: ModelState | None, version: Version, record: InstalledVersion) -> ModelState:
    """``model`` after ``version`` becomes active; the old active one becomes previous unless
    it is marked bad (then its file goes: a bad version is never rolled back to)."""
    if model is None:
        return ModelState(
            active=version,
            previous=None,
            highest_seen=version,
            bad=(),
            installed={str(version): record},
        )
    previous = model.active
    if previous is not None and model.is_bad(previous):
        previous = None
    kept = {str(version): record}
    if previous is not None:
        kept[str(previous)] = _record(model, previous)
    return ModelState(
        active=version,
        previous=previous,
        highest_seen=max(model.highest_seen, version),
        bad=model.bad,
        installed=kept,
    )


def _marked_bad(model: ModelState, version: Version) -> tuple[ModelState, str]:
    """``model`` with ``version`` marked bad, and a note on what that changed."""
    bad = (*model.bad, version)
    if model.active == version and model.previous is not None:
        previous = model.previous
        installed = {str(previous): _record(model, previous)}
        updated = replace(model, active=previous, previous=None, bad=bad, installed=installed)
        return updated, f"; rolled back to {previous}"
    if model.previous == version:
        assert model.active is not None  # a previous implies an active version
        installed = {str(model.active): _record(model, model.active)}
        return replace(model, previous=None, bad=bad, installed=installed), ""
    if model.active == version:
        return replace(model, bad=bad), "; stays active: no previous version to roll back to"
    return replace(model, bad=bad), ""


def _model(state: StoreState, name: str) -> ModelState:
    model = state.models.get(name)
    if model is None:
        known = ", ".join(state.models) or "none"
        raise StoreError(f"no model named {name!r} in the store (installed: {known})")
    return model


def _record(model: ModelState, version: Version) -> InstalledVersion:
    record = model.record(version)
    # ModelState's own check guarantees active and previous have records.
    assert record is not None, version
    return record


# --- file system helpers -------------------------------------------------------------------


def _prepare_empty_dir(root: Path) -> None:
    if (root / STORE_FILE).exists():
        raise StoreError(f"{root} is already an edgebundle store")
    try:
        root.mkdir(parents=True, exist_ok=True)
        occupied = any(root.iterdir())
    except FileExistsError:
        raise StoreError(f"{root} exists and is not a directory") from None
    except OSError as e:
        raise StoreError(f"cannot create the store directory {root}: {e.strerror}") from None
    if occupied:
        raise StoreError(
            f"{root} is not empty and is not an edgebundle store; give a new or empty directory"
        )
    fsync_dir(root.parent)


def _read_small(path: Path, cap: int) -> bytes | None:
    """A small file's bytes, or None if it does not exist."""
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > cap:
        raise StoreError(f"{path} is over the {cap}-byte cap")
    return data


def _list(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"cannot list {directory}: {e.strerror}") from None


def _remove_dir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError as e:
        raise StoreError(f"cannot remove {directory}: {e.strerror}") from None
    fsync_dir(directory.parent)


def _acquire(fd: int, operation: int, timeout: float, path: Path) -> None:
    # flock has no timeout of its own; polling keeps this free of signals (alarm() would
    # disturb the HTTP server's threads).
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"store is locked by another process ({path}; waited {timeout:g} s)"
                ) from None
        time.sleep(_LOCK_POLL)


def _append_audit(
    root: Path,
    event: str,
    *,
    reason: str,
    name: str | None = None,
    version: str | None = None,
    sha256: str | None = None,
    origin: str | None = None,
) -> None:
    line = AuditEvent(
        time=_now(),
        event=event,
        model=name,
        version=version,
        sha256=sha256,
        origin=origin,
        reason=reason,
    ).to_line()
    append_durably(root / AUDIT_FILE, line)
