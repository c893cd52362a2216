"""What a device does with a channel's staged releases and revocations (``rollout.json``):
which entries it may install, and leaving a revoked version.

A revoked version is marked bad in the store, as a failed selftest marks it: if it is active
the store switches back to the version it ran before (a local rollback to a version it already
holds, so anti-rollback still holds: nothing lower is ever fetched), and no pass fetches it
again.
"""

from __future__ import annotations

from edgebundle.runtime.ota.channel import ChannelEntry, ChannelIndex
from edgebundle.runtime.ota.rollout import Rollout, selected
from edgebundle.runtime.store import Store


def candidates(
    index: ChannelIndex, rollout: Rollout | None, device: str | None
) -> list[ChannelEntry]:
    """The released entries plus the staged ones this device takes part in, less the
    revoked versions."""
    if rollout is None:
        return list(index.bundles)
    entries = [*index.bundles, *(s.entry for s in rollout.staged if selected(device, s))]
    return [e for e in entries if not rollout.is_revoked(e.name, e.version)]


def apply_revocations(store: Store, rollout: Rollout) -> list[str]:
    """Mark the revoked versions of this device's models bad; a line per version left."""
    lines = []
    for revoked in rollout.revoked:
        model = store.state().models.get(revoked.name)
        if model is None or model.is_bad(revoked.version):
            continue
        was_active = model.active == revoked.version
        store.mark_bad(revoked.name, revoked.version, f"revoked by the channel: {revoked.reason}")
        if not was_active:
            continue
        now = store.state().models[revoked.name].active
        outcome = (
            f"rolled back to {now}"
            if now != revoked.version
            else "no earlier version here: it stays active"
        )
        lines.append(f"{revoked.name} {revoked.version}: revoked ({revoked.reason}); {outcome}")
    return lines
