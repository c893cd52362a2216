"""One install, in the order that keeps a crash at any instant safe: verify → admit → write the
bundle file → selftest it as stored → switch ``state.json`` → audit. Every refusal is audited."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from edgebundle.runtime.bundle import Limits, VerifiedBundle, open_bundle, open_installed
from edgebundle.runtime.errors import BundleError, RollbackError, SelftestError, StoreError
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.selftest import parse_selftest, run_selftest
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import baseline_of
from edgebundle.runtime.store import _audit
from edgebundle.runtime.store._bundles import discard, read_kept, sweep, write_bundle
from edgebundle.runtime.store._clock import now
from edgebundle.runtime.store._decisions import admit, installed
from edgebundle.runtime.store._state import InstalledVersion, SelftestSummary, StoreState
from edgebundle.runtime.store._switch import read_state, switch
from edgebundle.runtime.store._trust import read_trust


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallResult:
    name: str
    version: Version
    previous: Version | None  # active before this install (unchanged by a no-op); None at first
    sha256: str
    selftest: SelftestSummary
    already_installed: bool  # the same bytes were already active: nothing changed


def install(root: Path, limits: Limits, data: bytes, *, origin: str) -> InstallResult:
    """Install the bundle ``data`` into the store at ``root``, whose exclusive lock the caller
    holds; raises the audited refusal."""
    return _Install(
        root=root,
        limits=limits,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        origin=origin,
    ).run()


@dataclass(frozen=True, kw_only=True, slots=True)
class _Install:
    root: Path
    limits: Limits
    data: bytes
    sha256: str  # of ``data``, as every audit line and the state record name it
    origin: str

    def run(self) -> InstallResult:
        try:
            bundle = open_bundle(self.data, read_trust(self.root).trusted(), self.limits)
        except BundleError as e:
            self._refuse(e)
        manifest = bundle.manifest
        state = read_state(self.root)
        model = state.models.get(manifest.name)
        try:
            already = admit(manifest.name, manifest.version, model, self.sha256)
        except RollbackError as e:
            self._refuse(e, manifest)
        if already is not None:
            sweep(self.root, state)
            return InstallResult(
                name=manifest.name,
                version=manifest.version,
                previous=None if model is None else model.previous,
                sha256=self.sha256,
                selftest=already.selftest,
                already_installed=True,
            )
        return self._install_new(bundle, state)

    def _install_new(self, bundle: VerifiedBundle, state: StoreState) -> InstallResult:
        manifest = bundle.manifest
        name, version = manifest.name, manifest.version
        model = state.models.get(name)
        # Reinstalling the kept previous version (after a rollback) rewrites a file the state
        # names with the identical bytes it recorded: harmless, and it repairs a damaged copy.
        kept = model is not None and model.record(version) is not None
        write_bundle(self.root, name, version, self.data)
        try:
            summary = self._selftest(name, version, bundle.keyid)
            record = InstalledVersion(
                sha256=self.sha256,
                size=len(self.data),
                precision=manifest.precision,
                keyid=bundle.keyid,
                installed_at=now(),
                selftest=summary,
            )
            switch(self.root, state, name, installed(model, version, record))
        except BundleError as e:
            if not kept:
                self._forget(name, version)
            if isinstance(e, SelftestError):
                self._refuse(e, manifest)
            raise
        previous = None if model is None else model.active
        reason = f"previous: {previous or 'none'}; selftest: {summary.detail}"
        try:
            self._audit("installed", manifest, reason)
        except StoreError as e:
            raise StoreError(f"installed {name} {version}, but could not record it: {e}") from None
        return InstallResult(
            name=name,
            version=version,
            previous=previous,
            sha256=self.sha256,
            selftest=summary,
            already_installed=False,
        )

    def _selftest(self, name: str, version: Version, keyid: str) -> SelftestSummary:
        """Run the bundle's selftest on the stored file, loaded exactly as ``load_active`` will.

        A file that cannot be read back is the device's fault, not the bundle's: a
        ``StoreError``, which marks no version bad.
        """
        try:
            data = read_kept(self.root, name, version, self.sha256, self.limits)
        except BundleError as e:
            raise StoreError(f"cannot read back {name} {version} after writing it: {e}") from None
        try:
            bundle = open_installed(data, self.sha256, keyid, self.limits)
            scorer = Scorer.from_bundle(bundle)
            result = run_selftest(scorer, parse_selftest(bundle.files["selftest.json"]))
            baseline_of(bundle)  # a server would refuse to load it: refuse to install it
        except BundleError as e:
            raise SelftestError(f"selftest failed for {name} {version}: {e}") from None
        if not result.passed:
            raise SelftestError(f"selftest failed for {name} {version}: {result.detail}")
        return SelftestSummary.from_result(result)

    def _forget(self, name: str, version: Version) -> None:
        """Undo the file write of an install that did not switch, unless the state names the
        version after all (a failure after the switch's rename). Best effort: the next write's
        sweep removes what is left."""
        with contextlib.suppress(BundleError):
            model = read_state(self.root).models.get(name)
            if model is None or model.record(version) is None:
                discard(self.root, name, version)

    def _refuse(self, error: BundleError, manifest: Manifest | None = None) -> NoReturn:
        """Audit ``error`` as this install's refusal, then raise it."""
        self._audit("refused", manifest, str(error))
        raise error

    def _audit(self, event: str, manifest: Manifest | None, reason: str) -> None:
        # A bundle refused before its manifest could be trusted is audited without a name.
        _audit.append(
            self.root,
            event,
            model=None if manifest is None else manifest.name,
            version=None if manifest is None else manifest.version,
            sha256=self.sha256,
            origin=self.origin,
            reason=reason,
        )
