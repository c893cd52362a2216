"""The publisher's side of ``rollout.json`` (``runtime.ota.rollout``): reading the channel's
own, changing it, signing it with the index's serial, and writing the pair in the order that
keeps a device's view consistent."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.files import write_atomic
from edgebundle.runtime.errors import BundleError, ChannelError
from edgebundle.runtime.ota.channel import INDEX_NAME, Envelope
from edgebundle.runtime.ota.rollout import (
    ROLLOUT_CONTEXT,
    ROLLOUT_FORMAT,
    ROLLOUT_NAME,
    Revoked,
    Rollout,
    Staged,
    parse_rollout,
)
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys


def current_rollout(channel: Path) -> Rollout | None:
    """The channel's rollout as published (parsed, not verified, like ``current_index``)."""
    path = channel / ROLLOUT_NAME
    if not path.exists():
        return None
    return parse_rollout(Envelope.from_bytes(path.read_bytes(), ROLLOUT_NAME).payload)


def without_release(rollout: Rollout | None, name: str, version: Version) -> Rollout | None:
    """``rollout`` with no staged entry for ``name`` ``version``."""
    if rollout is None:
        return None
    staged = tuple(
        s for s in rollout.staged if (s.entry.name, s.entry.version) != (name, version)
    )
    return dataclasses.replace(rollout, staged=staged)


def add_staged(rollout: Rollout | None, staged: Staged) -> Rollout:
    base = rollout or Rollout(format=ROLLOUT_FORMAT, serial=1, staged=(), revoked=())
    if base.is_revoked(staged.entry.name, staged.entry.version):
        raise ChannelError(
            f"{staged.entry.name} {staged.entry.version} is revoked: publish another version"
        )
    items = sorted([*base.staged, staged], key=lambda s: (s.entry.name, s.entry.version))
    return dataclasses.replace(base, staged=tuple(items))


def add_revoked(rollout: Rollout | None, revoked: Revoked) -> Rollout:
    base = without_release(rollout, revoked.name, revoked.version) or Rollout(
        format=ROLLOUT_FORMAT, serial=1, staged=(), revoked=()
    )
    if base.is_revoked(revoked.name, revoked.version):
        return base
    items = sorted([*base.revoked, revoked], key=lambda r: (r.name, r.version))
    return dataclasses.replace(base, revoked=tuple(items))


def signed_rollout(
    keys: Sequence[Ed25519PrivateKey],
    rollout: Rollout | None,
    serial: int,
    verifiers: Sequence[TrustedKeys],
) -> Envelope | None:
    """``rollout`` for index ``serial``, signed, once every key set in ``verifiers`` accepts
    it; None for a channel with nothing staged or revoked."""
    if rollout is None or not (rollout.staged or rollout.revoked):
        return None
    payload = dataclasses.replace(rollout, serial=serial).to_bytes()
    return signed_for_devices(payload, keys, ROLLOUT_CONTEXT, ROLLOUT_NAME, verifiers)


def signed_for_devices(
    payload: bytes,
    keys: Sequence[Ed25519PrivateKey],
    context: bytes,
    name: str,
    verifiers: Sequence[TrustedKeys],
) -> Envelope:
    """``payload`` signed, once every key set in ``verifiers`` accepts it: the channel never
    gets a file ``name`` its devices would refuse."""
    envelope = Envelope.signed(payload, keys, context)
    for trusted in verifiers:
        try:
            envelope.verified_payload(trusted, context)
        except BundleError as e:
            message = f"refusing to write {name}: devices would refuse it: {e}"
            raise ChannelError(message) from None
    return envelope


def write_index(channel: Path, index: Envelope, rollout: Envelope | None) -> None:
    """The rollout first, the index last: a device reading in between finds the two serials
    apart and leaves staging for its next pass."""
    if rollout is not None:
        write_atomic(channel / ROLLOUT_NAME, rollout.to_bytes(), force=True)
    else:
        (channel / ROLLOUT_NAME).unlink(missing_ok=True)
    write_atomic(channel / INDEX_NAME, index.to_bytes(), force=True)
