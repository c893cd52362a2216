"""Staged rollouts and revocations: ``rollout.json``, the signed companion of ``index.json``.

Why a document of its own: devices of the previous release read ``index.json`` strictly, and
an unknown key anywhere refuses the whole index (``runtime._json.reject_unknown``), so a field
added to it would cut every older device off its channel. So ``index.json`` keeps its format
and lists only what every device may install (released versions, never a revoked one), and
``rollout.json`` (an envelope signed by the same keys under its own context, carrying the
index's serial) lists the versions being rolled out, each with its share of devices, and the
revoked versions. A device of this release reads both and uses ``rollout.json`` only when its
serial is the index's (a publisher writes it first, the index last); one of the previous
release reads the index alone: it gets a staged version only once it reaches 100%, never fetches
a revoked one (no longer listed), but does not leave a revoked version it already runs.

A device is in a rollout by a stable hash of (device id, model, version) against the share,
so growing the share only adds devices, and each version draws a different sample.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from edgebundle.runtime._json import dumps_canonical, json_type, loads_strict
from edgebundle.runtime.document import (
    BOOLEAN,
    TEXT,
    VERSION,
    Rule,
    array,
    constant,
    count,
    dump,
    load,
    nested,
)
from edgebundle.runtime.errors import ChannelError, ManifestError
from edgebundle.runtime.ota.channel import ChannelEntry
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys

ROLLOUT_NAME = "rollout.json"
ROLLOUT_CONTEXT = b"edgebundle/channel-rollout/v1\x00"
ROLLOUT_FORMAT = "edgebundle.rollout/1"
SHARE_SCALE = 10_000  # shares are in basis points: 1000 is 10%


def _read_entry(value: Any, path: str) -> ChannelEntry:
    if not isinstance(value, dict):
        raise ManifestError(f"expected an object, got {json_type(value)}", context=path)
    return ChannelEntry.from_dict(value, path)


ENTRY: Rule[ChannelEntry] = Rule(_read_entry, lambda entry: entry.to_dict())


def _read_share(value: Any, path: str) -> int:
    share = count(1).read(value, path)
    if share >= SHARE_SCALE:
        raise ManifestError(
            f"must be below {SHARE_SCALE} (a release at 100% goes in the index)", path
        )
    return share


@dataclass(frozen=True, kw_only=True, slots=True)
class Staged:
    """A version on its way out: the devices whose hash falls below ``share`` install it,
    unless the rollout is halted (then no further device starts it)."""

    entry: Annotated[ChannelEntry, ENTRY]
    share: Annotated[int, Rule(_read_share)]  # basis points, 1..9999
    halted: Annotated[bool, BOOLEAN]


@dataclass(frozen=True, kw_only=True, slots=True)
class Revoked:
    """A version devices must leave (back to the version they ran before) and never fetch."""

    name: Annotated[str, TEXT]
    version: Annotated[Version, VERSION]
    reason: Annotated[str, TEXT]


@dataclass(frozen=True, kw_only=True, slots=True)
class Rollout:
    format: Annotated[str, constant(ROLLOUT_FORMAT, "rollout")]
    serial: Annotated[int, count(1)]  # the index's: a rollout of another serial is not used
    staged: Annotated[tuple[Staged, ...], array(nested(Staged))]
    revoked: Annotated[tuple[Revoked, ...], array(nested(Revoked))]

    def check(self, context: str = "") -> None:
        releases = [(s.entry.name, str(s.entry.version)) for s in self.staged]
        revoked = {(r.name, str(r.version)) for r in self.revoked}
        if len(set(releases)) != len(releases) or revoked & set(releases):
            raise ManifestError("a version is staged twice, or staged and revoked", context)

    def to_bytes(self) -> bytes:
        data = dump(self)
        load(Rollout, data)
        return dumps_canonical(data)

    def is_revoked(self, name: str, version: Version) -> bool:
        return any(r.name == name and r.version == version for r in self.revoked)


def parse_rollout(payload: bytes) -> Rollout:
    try:
        return load(Rollout, loads_strict(payload, ROLLOUT_NAME))
    except ManifestError as e:
        raise ChannelError(f"invalid {ROLLOUT_NAME}: {e}") from None


def read_rollout(data: bytes, trusted: TrustedKeys) -> Rollout:
    """The device's check: envelope → signature by a threshold of the trusted keys → parse."""
    from edgebundle.runtime.ota.channel import Envelope

    payload = Envelope.from_bytes(data, ROLLOUT_NAME).verified_payload(trusted, ROLLOUT_CONTEXT)
    return parse_rollout(payload)


def bucket(device: str, name: str, version: Version) -> int:
    """Where ``device`` falls for this release, 0..9999, the same on every pass."""
    digest = hashlib.sha256(f"{device}\x00{name}\x00{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SHARE_SCALE


def selected(device: str | None, staged: Staged) -> bool:
    """Whether ``device`` takes part in this staged release now (a device with no id takes
    part in none: it waits for the release to reach 100%)."""
    if device is None or staged.halted:
        return False
    return bucket(device, staged.entry.name, staged.entry.version) < staged.share


def parse_share(text: str) -> int:
    """``10%``, ``2.5%`` or ``100%`` in basis points."""
    stripped = text.strip()
    if not stripped.endswith("%"):
        raise ValueError(f"a share is a percentage like 10%, not {text!r}")
    try:
        percent = float(stripped[:-1])
    except ValueError:
        raise ValueError(f"a share is a percentage like 10%, not {text!r}") from None
    if not 0 < percent <= 100:
        raise ValueError(f"a share must be above 0% and at most 100%, not {text!r}")
    return round(percent * SHARE_SCALE / 100)
