"""Over-the-air updates from a static channel (python-tuf's ngclient order, RAUC's rollback).

One pass, ``update_once``:

1. ``keys.json`` (optional): a rotation statement is accepted only when signed by a key the
   store trusts now and newer than the key set it has; the store then trusts the new set.
2. ``index.json``: fetched with a size cap and timeouts, its signature verified by a trusted
   key, refused if its serial is lower than the last one accepted (replay) or it has expired
   (freeze); the serial is then recorded.
3. Per model name the channel lists, the newest version above the device's active one (or
   any, for a model not installed yet) that is not marked bad — only the newest, so a device
   offline for months skips the ones in between.
4. The bundle is downloaded with the index's size as the cap, hashed as it streams and
   compared with the index's sha256; its signed manifest must name the same model and
   version as the index entry (no mix-and-match); then the store's own install runs
   (verification, anti-rollback, selftest, atomic switch). A version whose selftest fails is
   marked bad so it is never fetched again.

A running server notices the store's switch and hot-swaps (``runtime.server``); a version that
then fails to load there is marked bad, which rolls the store back.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from runtime.bundle import open_bundle
from runtime.channel import (
    INDEX_NAME,
    KEYS_NAME,
    ChannelEntry,
    ChannelIndex,
    read_index,
    read_key_set,
)
from runtime.errors import BundleError, ChannelError, SelftestError
from runtime.fetch import FetchLimits, check_url, fetch, fetch_exact, fetch_optional, join_url
from runtime.store import Store

Clock = Callable[[], datetime]
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

    @property
    def failed(self) -> bool:
        return any(not o.installed for o in self.outcomes)

    def lines(self) -> list[str]:
        head = f"channel index serial {self.serial}"
        if self.key_rotation is not None:
            head += f"; now trusting key set version {self.key_rotation}"
        body = [f"{o.name} {o.version}: {o.detail}" for o in self.outcomes]
        return [head, *(body or ["everything is up to date"])]


def update_once(
    store: Store, channel: str, *, limits: FetchLimits = DEFAULT_FETCH_LIMITS, now: Clock = utc_now
) -> UpdateReport:
    """One pass over the channel. Raises a BundleError when the channel itself is refused;
    a refused bundle is reported (and audited by the store), the pass goes on."""
    check_url(channel)
    store, rotated = _rotate_keys(store, channel, limits)
    index = _fetch_index(store, channel, limits, now())
    outcomes = [_update_model(store, channel, entry, limits) for entry in _wanted(store, index)]
    return UpdateReport(serial=index.serial, key_rotation=rotated, outcomes=tuple(outcomes))


def _rotate_keys(store: Store, channel: str, limits: FetchLimits) -> tuple[Store, int | None]:
    url = join_url(channel, KEYS_NAME)
    data = fetch_optional(url, limits.max_keys_bytes, limits)
    if data is None:
        return store, None
    key_set = read_key_set(
        data, store.trusted_keys(), current_version=store.ota_state().key_version
    )
    if key_set is None:
        return store, None
    return store.rotate_keys(key_set.keys, key_set.version, origin=url), key_set.version


def _fetch_index(store: Store, channel: str, limits: FetchLimits, now: datetime) -> ChannelIndex:
    data = fetch(join_url(channel, INDEX_NAME), limits.max_index_bytes, limits)
    index = read_index(
        data, store.trusted_keys(), last_serial=store.ota_state().last_serial, now=now
    )
    store.record_serial(index.serial)
    return index


def _wanted(store: Store, index: ChannelIndex) -> list[ChannelEntry]:
    """Per model the channel lists, the newest version above the active one (any, for a
    model not installed yet: a device follows its channel) that is not marked bad."""
    models = store.state().models
    wanted = []
    for name in sorted({e.name for e in index.bundles}):
        model = models.get(name)
        newer = [
            e
            for e in index.bundles
            if e.name == name
            and (model is None or model.active is None or e.version > model.active)
            and (model is None or not model.is_bad(e.version))
        ]
        if newer:
            wanted.append(max(newer, key=lambda e: e.version))
    return wanted


def _update_model(store: Store, channel: str, entry: ChannelEntry, limits: FetchLimits) -> Outcome:
    url = join_url(channel, entry.file)
    version = str(entry.version)
    try:
        data = fetch_exact(url, entry.size, entry.sha256, limits)
        manifest = open_bundle(data, store.trusted_keys(), store.limits).manifest
        if manifest.name != entry.name or str(manifest.version) != version:
            raise ChannelError(
                f"{url} holds {manifest.name} {manifest.version}, but the index lists "
                f"{entry.name} {version} (mix-and-match)"
            )
        result = store.install(data, origin=url)
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
        detail=f"installed (previous: {result.previous}), selftest passed",
    )


@dataclass
class Poller:
    """Runs ``update_once`` in a background thread: a jittered interval so a fleet does not
    hit the channel in lockstep, and exponential backoff (up to ``max_backoff``) on errors."""

    store_root: Path
    channel: str
    interval: float
    max_backoff: float = 3600.0
    limits: FetchLimits = field(default_factory=FetchLimits)
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ota-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                report = update_once(Store.open(self.store_root), self.channel, limits=self.limits)
                for line in report.lines():
                    self.log(f"update: {line}")
                failures = 0
            except BundleError as e:
                failures += 1
                self.log(f"update failed: {e}")
            self._stop.wait(self.next_delay(failures))

    def next_delay(self, failures: int) -> float:
        base = (
            self.interval if failures == 0 else min(self.max_backoff, self.interval * 2.0**failures)
        )
        return base * random.uniform(0.9, 1.1)
