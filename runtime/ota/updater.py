"""Over-the-air updates from a static channel (python-tuf's ngclient order, RAUC's rollback).

One pass, ``update_once``:

1. The key chain (``runtime.ota.keychain``): ``keys/N.json`` for every N after the version the
   store trusts, each verified by the one before and by its own keys, until there is none;
   the store then trusts the newest, which must not have expired.
2. ``index.json``: fetched with a size cap and timeouts, its signatures verified by a
   threshold of the newest key set, refused if its serial is lower than the last one accepted
   (replay) or it has expired (freeze); the serial is then recorded.
3. Per model name the channel lists, the newest version above the device's active one (or
   any, for a model not installed yet) that is not marked bad — only the newest, so a device
   offline for months skips the ones in between.
4. The bundle is downloaded with the index's size as the cap, hashed as it streams and
   compared with the index's sha256; its signed manifest must name the same model and
   version as the index entry (no mix-and-match); then the store's own install runs
   (verification, anti-rollback, selftest, atomic switch). A version whose selftest fails is
   marked bad so it is never fetched again.

A running server notices the store's switch and hot-swaps (``runtime.serve.server``); a version that
then fails to load there is marked bad, which rolls the store back.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgebundle.runtime.bundle import open_bundle
from edgebundle.runtime.errors import (
    BundleError,
    ChannelError,
    ChannelUnreachableError,
    SelftestError,
    StoreError,
)
from edgebundle.runtime.ota.channel import INDEX_NAME, ChannelEntry, ChannelIndex, read_index
from edgebundle.runtime.ota.fetch import (
    FetchLimits,
    channel_url,
    fetch,
    fetch_exact,
    fetch_optional,
    join_url,
)
from edgebundle.runtime.ota.keychain import KeySet, check_fresh, statement_file, walk_chain
from edgebundle.runtime.ota.revocation import apply_revocations, candidates
from edgebundle.runtime.ota.rollout import ROLLOUT_NAME, Rollout, read_rollout
from edgebundle.runtime.progress import MeterFactory
from edgebundle.runtime.store import Store

Clock = Callable[[], datetime]
# Full jitter may draw ~0: a floor keeps a failing channel from being hammered.
_MIN_RETRY_SECONDS = 1.0
DEFAULT_FETCH_LIMITS = FetchLimits()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    name: str
    version: str
    installed: bool
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class UpdateReport:
    serial: int
    key_rotation: int | None  # the key set version adopted in this pass
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)
    revoked: tuple[str, ...] = ()  # what the channel's revocations did, one line each

    @property
    def failed(self) -> bool:
        return any(not o.installed for o in self.outcomes)

    def lines(self) -> list[str]:
        head = f"channel index serial {self.serial}"
        if self.key_rotation is not None:
            head += f"; now trusting key set version {self.key_rotation}"
        body = [f"{o.name} {o.version}: {o.detail}" for o in self.outcomes]
        return [head, *self.revoked, *(body or ["everything is up to date"])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "key_set_adopted": self.key_rotation,
            "outcomes": [
                {
                    "model": o.name,
                    "version": o.version,
                    "installed": o.installed,
                    "detail": o.detail,
                }
                for o in self.outcomes
            ],
            "revoked": list(self.revoked),
        }


def update_once(
    store: Store,
    channel: str,
    *,
    limits: FetchLimits = DEFAULT_FETCH_LIMITS,
    now: Clock = utc_now,
    device: str | None = None,
    meters: MeterFactory | None = None,
) -> UpdateReport:
    """One pass over the channel (a URL or a directory). Raises ``ChannelUnreachableError``
    when the channel cannot be read (retry later), another ``BundleError`` when it is refused
    (forged, expired, replayed, a broken key chain); a refused bundle is reported (and audited
    by the store), the pass goes on. ``device``: this device's id, which decides whether it
    takes part in a staged rollout (``runtime.ota.rollout``); without one it takes none.
    ``meters``: one download meter per bundle (``runtime.progress``), for a person watching."""
    channel = channel_url(channel)
    trust, rotated = _follow_key_chain(store, channel, limits, now())
    index = _fetch_index(store, trust, channel, limits, now())
    rollout = _fetch_rollout(trust, channel, limits, index.serial)
    revoked = [] if rollout is None else apply_revocations(store, rollout)
    entries = candidates(index, rollout, device)
    outcomes = [
        _update_model(store, channel, entry, limits, meters) for entry in _wanted(store, entries)
    ]
    return UpdateReport(
        serial=index.serial,
        key_rotation=rotated,
        outcomes=tuple(outcomes),
        revoked=tuple(revoked),
    )


def _follow_key_chain(
    store: Store, channel: str, limits: FetchLimits, now: datetime
) -> tuple[KeySet, int | None]:
    """The newest key set the channel's chain leads to from the store's, adopted by the store;
    with the version adopted in this pass, if any."""
    current = store.trust()

    def read(version: int) -> bytes | None:
        url = join_url(channel, statement_file(version))
        return fetch_optional(url, limits.max_keys_bytes, limits)

    newest = walk_chain(current, read, limits.max_key_statements)
    # Before adopting: a refused pass leaves the store as it was.
    check_fresh(newest, now)
    if newest.version == current.version:
        return current, None
    store.adopt_trust(newest, origin=join_url(channel, statement_file(newest.version)))
    return newest, newest.version


def _fetch_index(
    store: Store, trust: KeySet, channel: str, limits: FetchLimits, now: datetime
) -> ChannelIndex:
    data = fetch(join_url(channel, INDEX_NAME), limits.max_index_bytes, limits)
    index = read_index(data, trust.trusted(), last_serial=store.ota_state().last_serial, now=now)
    store.record_serial(index.serial)
    return index


def _fetch_rollout(trust: KeySet, channel: str, limits: FetchLimits, serial: int) -> Rollout | None:
    """The channel's staged releases and revocations, if it has them for this index serial
    (another serial: a publish under way; the next pass finds them in step)."""
    data = fetch_optional(join_url(channel, ROLLOUT_NAME), limits.max_index_bytes, limits)
    if data is None:
        return None
    rollout = read_rollout(data, trust.trusted())
    return rollout if rollout.serial == serial else None


def _wanted(store: Store, entries: Sequence[ChannelEntry]) -> list[ChannelEntry]:
    """Per model the channel lists, the newest version above the active one (any, for a
    model not installed yet: a device follows its channel) that is not marked bad."""
    models = store.state().models
    wanted = []
    for name in sorted({e.name for e in entries}):
        model = models.get(name)
        newer = [
            e
            for e in entries
            if e.name == name
            and (model is None or model.active is None or e.version > model.active)
            and (model is None or not model.is_bad(e.version))
        ]
        if newer:
            wanted.append(max(newer, key=lambda e: e.version))
    return wanted


def _update_model(
    store: Store,
    channel: str,
    entry: ChannelEntry,
    limits: FetchLimits,
    meters: MeterFactory | None,
) -> Outcome:
    url = join_url(channel, entry.file)
    version = str(entry.version)
    try:
        data = _download(url, entry, limits, meters)
        manifest = open_bundle(data, store.trusted_keys(), store.limits).manifest
        if manifest.name != entry.name or str(manifest.version) != version:
            raise ChannelError(
                f"{url} holds {manifest.name} {manifest.version}, but the index lists "
                f"{entry.name} {version} (mix-and-match)"
            )
        result = store.install(data, origin=url)
    except StoreError:  # the device's own fault (a full disk): the pass stops, nothing is blamed
        raise
    except SelftestError as e:
        store.mark_bad(entry.name, entry.version, str(e))
        return Outcome(
            name=entry.name, version=version, installed=False, detail=f"refused and marked bad: {e}"
        )
    except BundleError as e:
        return Outcome(name=entry.name, version=version, installed=False, detail=f"refused: {e}")
    return Outcome(
        name=entry.name,
        version=version,
        installed=True,
        detail=f"installed (previous: {result.previous or 'none'}), selftest passed",
    )


def _download(
    url: str, entry: ChannelEntry, limits: FetchLimits, meters: MeterFactory | None
) -> bytes:
    if meters is None:
        return fetch_exact(url, entry.size, entry.sha256, limits)
    with meters(f"downloading {entry.name} {entry.version}", entry.size) as meter:
        return fetch_exact(url, entry.size, entry.sha256, limits, meter.update)


@dataclass
class Poller:
    """Runs ``update_once`` in a background thread. Every wait is random, so a fleet never
    polls in lockstep: after a pass that worked, the period times a factor in [0.5, 1.5);
    after failures, "full jitter" (a uniform draw up to ``interval`` doubled per failure and
    capped at ``max_backoff``), so an outage's end or a publish does not bring every device
    back in the same second."""

    store_root: Path
    channel: str
    interval: float
    max_backoff: float = 3600.0
    limits: FetchLimits = field(default_factory=FetchLimits)
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    rng: random.Random = field(default_factory=random.Random)
    device: str | None = None  # for staged rollouts (update_once's ``device``)
    # Told every pass's outcome: its report, or the error that refused or missed the channel.
    observer: Callable[[UpdateReport | BundleError], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ota-poller", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next pass now rather than at the end of the current wait."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            # Cleared before the pass: a wake during it (a newer notice) runs one more.
            self._wake.clear()
            outcome: UpdateReport | BundleError
            try:
                outcome = update_once(
                    Store.open(self.store_root),
                    self.channel,
                    limits=self.limits,
                    device=self.device,
                )
                for line in outcome.lines():
                    self.log(f"update: {line}")
                failures = 0
            except ChannelUnreachableError as e:
                failures += 1
                self.log(f"update: channel unreachable: {e}")
                outcome = e
            except BundleError as e:
                failures += 1
                self.log(f"update: channel rejected: {e}")
                outcome = e
            if self.observer is not None:
                self.observer(outcome)
            self._wake.wait(self.next_delay(failures))

    def next_delay(self, failures: int) -> float:
        if failures == 0:
            return self.interval * self.rng.uniform(0.5, 1.5)
        ceiling = min(self.max_backoff, self.interval * 2.0 ** min(failures, 32))
        return self.rng.uniform(_MIN_RETRY_SECONDS, max(_MIN_RETRY_SECONDS, ceiling))
