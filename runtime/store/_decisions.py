"""What a change does to one model's pointers, decided without touching the disk.

``Store`` and ``_install`` sequence lock → read → decide → write → audit; these functions only
decide: whether a bundle may be installed (anti-rollback, whose refusal the install audits) and
what a model's pointers become after an install or a mark-bad.
"""

from __future__ import annotations

from dataclasses import replace

from edgebundle.runtime.errors import RollbackError, StoreError
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store._state import InstalledVersion, ModelState, StoreState


def admit(
    name: str, version: Version, model: ModelState | None, sha256: str
) -> InstalledVersion | None:
    """Apply anti-rollback to ``version`` of ``name``, a bundle whose bytes hash to ``sha256``.
    The kept record if these exact bytes are already active (a no-op), else None to go ahead;
    raises ``RollbackError`` to refuse."""
    if model is None:
        return None
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
    highest = model.highest_seen
    if highest is not None and (version < highest or (version == highest and record is None)):
        raise RollbackError(
            f"refusing {name} {version}: version {model.highest_seen} was already installed "
            "(anti-rollback)"
        )
    return None


def installed(model: ModelState | None, version: Version, record: InstalledVersion) -> ModelState:
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
        kept[str(previous)] = kept_record(model, previous)
    return ModelState(
        active=version,
        previous=previous,
        highest_seen=version if model.highest_seen is None else max(model.highest_seen, version),
        bad=model.bad,
        installed=kept,
    )


def first_bad(version: Version) -> ModelState:
    """A model no version of which was installed, with ``version`` marked bad: its selftest
    failed on the first install, and no later update pass must fetch it again."""
    return ModelState(active=None, previous=None, highest_seen=None, bad=(version,), installed={})


def marked_bad(model: ModelState, version: Version) -> tuple[ModelState, str]:
    """``model`` with ``version`` marked bad, and a note on what that changed."""
    bad = (*model.bad, version)
    if model.active == version and model.previous is not None:
        previous = model.previous
        kept = {str(previous): kept_record(model, previous)}
        updated = replace(model, active=previous, previous=None, bad=bad, installed=kept)
        return updated, f"; rolled back to {previous}"
    if model.previous == version:
        assert model.active is not None  # a previous implies an active version
        kept = {str(model.active): kept_record(model, model.active)}
        return replace(model, previous=None, bad=bad, installed=kept), ""
    if model.active == version:
        return replace(model, bad=bad), "; stays active: no previous version to roll back to"
    return replace(model, bad=bad), ""


def removed(model: ModelState) -> ModelState:
    """``model`` with no version kept. What anti-rollback knows stays: the highest version seen
    and the bad ones, so removing a model cannot be used to install an older one afterwards."""
    return replace(model, active=None, previous=None, installed={})


def model_named(state: StoreState, name: str) -> ModelState:
    model = state.models.get(name)
    if model is None:
        known = ", ".join(state.models) or "none"
        raise StoreError(f"no model named {name!r} in the store (installed: {known})")
    return model


def kept_record(model: ModelState, version: Version) -> InstalledVersion:
    record = model.record(version)
    # ModelState's own check guarantees active and previous have records.
    assert record is not None, version
    return record
