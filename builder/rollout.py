"""``bundle rollout``: grow, halt or finish a staged release, revoke a version, and halt a
rollout by itself when too many devices fail it (``runtime.ota.rollout`` says how devices read
the result).

Every change re-signs the index with serial + 1 and ``rollout.json`` with the same serial, as
``publish`` does, under the channel's lock.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.publish import resign
from edgebundle.builder.staging import add_revoked, without_release
from edgebundle.runtime.errors import ChannelError
from edgebundle.runtime.fleet.documents import DeviceStatus
from edgebundle.runtime.ota.channel import ChannelEntry, ChannelIndex
from edgebundle.runtime.ota.rollout import SHARE_SCALE, Revoked, Rollout, Staged
from edgebundle.runtime.semver import Version


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """What a rollout command asks: a new share, a halt, or a revocation (with its reason)."""

    share: int | None = None
    halt: bool = False
    revoke: str | None = None


def percent(share: int) -> str:
    return f"{share * 100 / SHARE_SCALE:g}%"


def change_rollout(
    channel: Path,
    keys: Sequence[Ed25519PrivateKey],
    name: str,
    version: Version,
    change: Change,
    expires_in: timedelta,
    now: datetime,
) -> tuple[ChannelIndex, str]:
    """Apply ``change`` to ``name`` ``version``; the new index and a line saying what changed."""
    said: list[str] = []

    def changed(
        index: ChannelIndex, rollout: Rollout | None
    ) -> tuple[tuple[ChannelEntry, ...], Rollout | None]:
        bundles, rollout, line = _changed(index, rollout, name, version, change)
        said.append(line)
        return bundles, rollout

    return resign(channel, keys, expires_in, now, changed), said[0]


def _changed(
    index: ChannelIndex, rollout: Rollout | None, name: str, version: Version, change: Change
) -> tuple[tuple[ChannelEntry, ...], Rollout | None, str]:
    released = [e for e in index.bundles if (e.name, e.version) == (name, version)]
    staged = [
        s
        for s in (rollout.staged if rollout else ())
        if (s.entry.name, s.entry.version) == (name, version)
    ]
    others = tuple(e for e in index.bundles if (e.name, e.version) != (name, version))
    release = f"{name} {version}"
    if change.revoke is not None:
        if not released and not staged:
            raise ChannelError(f"{release} is not published on this channel")
        revoked = Revoked(name=name, version=version, reason=change.revoke)
        return others, add_revoked(rollout, revoked), f"{release}: revoked ({change.revoke})"
    if not staged:
        where = "released to 100% already" if released else "not being rolled out"
        raise ChannelError(f"{release} is {where}")
    current = staged[0]
    if change.halt:
        updated = dataclasses.replace(current, halted=True)
        return (
            index.bundles,
            _replace(rollout, updated),
            f"{release}: halted at {percent(current.share)}",
        )
    assert change.share is not None
    if change.share < current.share:
        raise ChannelError(
            f"{release} is at {percent(current.share)}: a share only grows (devices that "
            "installed it keep it); --halt stops it, --revoke takes it back"
        )
    if change.share >= SHARE_SCALE:
        bundles = tuple(sorted([*others, current.entry], key=lambda e: (e.name, e.version)))
        return bundles, without_release(rollout, name, version), f"{release}: released to 100%"
    updated = Staged(entry=current.entry, share=change.share, halted=False)
    return index.bundles, _replace(rollout, updated), f"{release}: {percent(change.share)}"


def _replace(rollout: Rollout | None, staged: Staged) -> Rollout:
    assert rollout is not None
    items = tuple(
        staged
        if (s.entry.name, s.entry.version) == (staged.entry.name, staged.entry.version)
        else s
        for s in rollout.staged
    )
    return dataclasses.replace(rollout, staged=items)


# --- halting by itself ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Tally:
    """Devices that tried a version: those that run it and those whose last pass failed it."""

    running: int
    failed: int

    @property
    def tried(self) -> int:
        return self.running + self.failed

    @property
    def failure_share(self) -> float:
        return self.failed / self.tried if self.tried else 0.0


def tally(statuses: Mapping[str, DeviceStatus], name: str, version: Version) -> Tally:
    running = failed = 0
    for status in statuses.values():
        if any(m.name == name and m.version == str(version) for m in status.models):
            running += 1
        elif status.last_update is not None and any(
            f.name == name and f.version == str(version) for f in status.last_update.failures
        ):
            failed += 1
    return Tally(running=running, failed=failed)


def watch(
    statuses: Callable[[], Mapping[str, DeviceStatus]],
    name: str,
    version: Version,
    threshold: float,
    seconds: float,
    halt: Callable[[], None],
    say: Callable[[str], None],
    interval: float = 5.0,
) -> bool:
    """Read the fleet's statuses every ``interval`` for ``seconds``; ``halt`` once the share
    of devices that tried the version and failed it passes ``threshold``. True if halted."""
    deadline = time.monotonic() + seconds
    while True:
        counted = tally(statuses(), name, version)
        if counted.tried and counted.failure_share > threshold:
            say(
                f"{name} {version}: {counted.failed} of {counted.tried} devices failed it "
                f"({counted.failure_share:.1%} > {threshold:.1%}): halting"
            )
            halt()
            return True
        say(f"{name} {version}: {counted.running} running it, {counted.failed} failed")
        if time.monotonic() + interval > deadline:
            return False
        time.sleep(interval)
