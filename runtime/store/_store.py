"""``Store``: the device's handle on a store directory, and the lock around every change.

The store only sequences: each public method takes the lock and calls the module that holds
that concern — ``_install`` (the install transaction), ``_decisions`` (anti-rollback, a model's
pointers after a change), ``_switch`` (``state.json``), ``_bundles`` (the kept files),
``_trust`` (the key set), ``_ota`` (the replay guard), ``_audit`` (the log).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgebundle.runtime.bundle import DEFAULT_LIMITS, Limits, open_installed
from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.fsio import make_dir_durably, write_durably
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.scoring import DEFAULT_THREADS, Scorer
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import Baseline, baseline_of
from edgebundle.runtime.store import _audit, _lock
from edgebundle.runtime.store._audit import AuditEvent
from edgebundle.runtime.store._bundles import BUNDLES_DIR, read_kept
from edgebundle.runtime.store._decisions import (
    first_bad,
    kept_record,
    marked_bad,
    model_named,
    removed,
)
from edgebundle.runtime.store._install import InstallResult, install
from edgebundle.runtime.store._marker import check_marker, prepare_empty_dir, write_marker
from edgebundle.runtime.store._ota import OtaState, read_ota, record_serial
from edgebundle.runtime.store._state import StoreState
from edgebundle.runtime.store._switch import read_state, state_token, switch
from edgebundle.runtime.store._trust import adopt_trust, read_trust, write_trust

if TYPE_CHECKING:
    from edgebundle.runtime.ota.keychain import KeySet
    from edgebundle.runtime.signing import TrustedKeys


@dataclass(frozen=True, kw_only=True, slots=True)
class RollbackResult:
    name: str
    active: Version  # the version now active (the former previous)
    previous: Version  # the former active version, now the one a second rollback restores

    @property
    def forward(self) -> bool:
        """A second rollback returns to the newer version: it undoes the first."""
        return self.active > self.previous


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoveResult:
    name: str
    removed: tuple[Version, ...]  # the versions whose files went: active, then previous
    highest_seen: Version | None  # anti-rollback's floor, which the removal keeps


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedModel:
    name: str
    version: Version
    sha256: str
    manifest: Manifest
    scorer: Scorer
    baseline: Baseline | None  # stats.json: what drift monitoring compares live rows with


@dataclass(frozen=True, kw_only=True, slots=True)
class Store:
    """An opened store. Writers serialise on ``lock``; readers may run beside them."""

    root: Path
    limits: Limits = DEFAULT_LIMITS
    lock_timeout: float = _lock.LOCK_TIMEOUT

    @classmethod
    def init(
        cls,
        root: Path,
        trusted: Sequence[Path],
        *,
        limits: Limits = DEFAULT_LIMITS,
        lock_timeout: float = _lock.LOCK_TIMEOUT,
    ) -> Store:
        """Create a store trusting ``trusted`` in a new or empty directory: PEM public keys,
        or one key statement from a channel (``runtime.ota.keychain.load_trust``).

        ``store.json`` is written last, so an interrupted init leaves a directory that is not a
        store (and that init then refuses as not empty) rather than a store missing its keys.
        """
        # Imported here: cryptography is for the key operations alone (see ``_trust``).
        from edgebundle.runtime.ota.keychain import load_trust

        root = root.absolute()
        trust = load_trust(trusted)
        prepare_empty_dir(root)
        write_trust(root, trust)
        make_dir_durably(root / BUNDLES_DIR)
        write_durably(root / _lock.LOCK_FILE, b"")
        reason = f"trusted {trust.describe()}: " + ", ".join(trust.keyids())
        _audit.append(root, "init", reason=reason)
        write_marker(root)
        return cls.open(root, limits=limits, lock_timeout=lock_timeout)

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        limits: Limits = DEFAULT_LIMITS,
        lock_timeout: float = _lock.LOCK_TIMEOUT,
    ) -> Store:
        root = root.absolute()
        check_marker(root)
        return cls(root=root, limits=limits, lock_timeout=lock_timeout)

    # --- reading -------------------------------------------------------------------------------

    def trust(self) -> KeySet:
        """The trusted key set: ``trust.json``, or a store's older ``keys/*.pub``."""
        return read_trust(self.root)

    def trusted_keys(self) -> TrustedKeys:
        """The keys (and how many of them) a new install must be signed by."""
        return self.trust().trusted()

    def state(self) -> StoreState:
        """The parsed ``state.json``; an empty state before the first install."""
        return read_state(self.root)

    def state_token(self) -> tuple[int, int, int]:
        """Changes whenever ``state.json`` is replaced: poll it cheaply to know when to reload.
        ``(0, 0, 0)`` before the first install."""
        return state_token(self.root)

    def ota_state(self) -> OtaState:
        return read_ota(self.root)

    def default_model(self) -> str:
        """The one model with an active version, for callers that were not told which."""
        names = [name for name, model in self.state().models.items() if model.active is not None]
        if not names:
            raise StoreError(f"no model is installed in {self.root}")
        if len(names) > 1:
            raise StoreError(f"the store holds several models ({', '.join(names)}); name one")
        return names[0]

    def load_active(self, name: str, threads: int = DEFAULT_THREADS) -> LoadedModel:
        """The active version of ``name``, checked against the sha256 recorded at install."""
        # Shared: an installer cannot delete the file between reading the state and the file.
        with _lock.shared(self.root, self.lock_timeout):
            model = model_named(self.state(), name)
            if model.active is None:
                raise StoreError(f"{name} has no active version")
            record = kept_record(model, model.active)
            data = read_kept(self.root, name, model.active, record.sha256, self.limits)
        bundle = open_installed(data, record.sha256, record.keyid, self.limits)
        return LoadedModel(
            name=name,
            version=model.active,
            sha256=record.sha256,
            manifest=bundle.manifest,
            scorer=Scorer.from_bundle(bundle, threads),
            baseline=baseline_of(bundle),
        )

    # --- changing ------------------------------------------------------------------------------

    def install(self, data: bytes, *, origin: str) -> InstallResult:
        """Verify, admit (anti-rollback), store, selftest, then switch to the bundle ``data``.

        Any refusal is audited and raised (``BundleError`` subclasses: ``RollbackError`` for
        anti-rollback, ``SelftestError`` for a failed selftest, the verifier's own errors for a
        bad bundle), and leaves the active version and ``state.json`` untouched.
        """
        with _lock.exclusive(self.root, self.lock_timeout):
            return install(self.root, self.limits, data, origin=origin)

    def rollback(self, name: str) -> RollbackResult:
        """Make the previous version active again; the active one becomes previous."""
        with _lock.exclusive(self.root, self.lock_timeout):
            state = self.state()
            model = model_named(state, name)
            if model.active is None or model.previous is None:
                raise StoreError(f"{name} has no previous version to roll back to")
            active, previous = model.active, model.previous
            # Never switch to a file that changed on disk since it was installed.
            read_kept(self.root, name, previous, kept_record(model, previous).sha256, self.limits)
            switch(self.root, state, name, replace(model, active=previous, previous=active))
            direction = "forward" if previous > active else "back"
            reason = f"rolled {direction} from {active}"
            _audit.append(self.root, "rollback", model=name, version=previous, reason=reason)
            return RollbackResult(name=name, active=previous, previous=active)

    def remove(self, name: str, *, force: bool = False) -> RemoveResult:
        """Delete ``name``'s bundle files; its anti-rollback floor and bad versions stay.

        Refused, unless ``force``, when ``name`` is the only model with an active version: a
        server on this store would be left with nothing to serve.
        """
        with _lock.exclusive(self.root, self.lock_timeout):
            state = self.state()
            model = model_named(state, name)
            if model.active is None:
                raise StoreError(f"{name} has no installed version to remove")
            others = [n for n, m in state.models.items() if n != name and m.active is not None]
            if not others and not force:
                raise StoreError(
                    f"{name} is the only model this store serves: a server on it would have "
                    "nothing left to serve (--force removes it anyway)"
                )
            gone = tuple(v for v in (model.active, model.previous) if v is not None)
            switch(self.root, state, name, removed(model))
            reason = "removed " + ", ".join(map(str, gone)) + "; anti-rollback floor kept"
            _audit.append(self.root, "removed", model=name, version=model.active, reason=reason)
            return RemoveResult(name=name, removed=gone, highest_seen=model.highest_seen)

    def audit(self) -> Iterator[AuditEvent | str]:
        """The audit log in order; an unreadable line comes as a description (see ``_audit``)."""
        return _audit.read(self.root)

    def mark_bad(self, name: str, version: Version, reason: str) -> None:
        """Record ``version`` of ``name`` as bad so it is never installed again.

        If it is active and a previous version exists, the previous one becomes active (and
        nothing is left to roll back to). With no previous version it stays active: a device
        scoring with a version its selftest passed beats a device that cannot score at all.
        """
        with _lock.exclusive(self.root, self.lock_timeout):
            state = self.state()
            if name in state.models:
                model = state.models[name]
                if model.is_bad(version):
                    return
                updated, note = marked_bad(model, version)
            else:
                updated, note = first_bad(version), "; no version of it is installed"
            switch(self.root, state, name, updated)
            _audit.append(
                self.root, "marked-bad", model=name, version=version, reason=reason + note
            )

    def record_serial(self, serial: int) -> None:
        """Remember an accepted channel index serial; a lower one is a replay."""
        with _lock.exclusive(self.root, self.lock_timeout):
            record_serial(self.root, serial)

    def adopt_trust(self, key_set: KeySet, *, origin: str) -> None:
        """Trust exactly ``key_set`` from now on: a statement of the channel's key chain that
        the caller verified step by step from the version trusted now.

        Keys rotated out sign no new install; what they signed before still loads by its
        sha256 pin.
        """
        with _lock.exclusive(self.root, self.lock_timeout):
            adopt_trust(self.root, key_set, origin=origin)
