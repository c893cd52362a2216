"""``bundle publish`` / ``bundle rotate-keys``: maintain a static OTA channel directory.

Writes go bundle file first, index last (each temp + fsync + rename), so a device never sees
an index that lists a file not fully there; a lock keeps two publishers apart.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from builder.build import write_atomic
from runtime.bundle import open_bundle, read_bundle_file
from runtime.channel import (
    INDEX_CONTEXT,
    INDEX_NAME,
    KEYS_CONTEXT,
    KEYS_NAME,
    TIME_FORMAT,
    ChannelEntry,
    ChannelIndex,
    Envelope,
    KeySet,
    bundle_file,
    parse_index_payload,
    parse_key_set_payload,
)
from runtime.errors import BundleError, ChannelError
from runtime.signing import TrustedKeys

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise BundleError(f"not a duration like 30d, 12h, 90m or 3600s: {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@contextmanager
def _locked(channel: Path) -> Iterator[None]:
    channel.mkdir(parents=True, exist_ok=True)
    with (channel / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def current_index(channel: Path) -> ChannelIndex | None:
    """The channel's index as published (the publisher's own file: parsed, not verified,
    since it may be signed by a key rotated out since)."""
    path = channel / INDEX_NAME
    if not path.exists():
        return None
    return parse_index_payload(Envelope.from_bytes(path.read_bytes(), INDEX_NAME).payload)


def publish(
    bundle: Path,
    channel: Path,
    key: Ed25519PrivateKey,
    expires_in: timedelta,
    now: datetime,
    trust: TrustedKeys | None = None,
) -> ChannelIndex:
    """Add a verified bundle to the channel and re-sign the index with serial + 1."""
    data = read_bundle_file(bundle)
    verified = open_bundle(data, trust or TrustedKeys([key.public_key()]))
    entry = ChannelEntry(
        name=verified.manifest.name,
        version=verified.manifest.version,
        file=bundle_file(verified.manifest.name, verified.manifest.version),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    with _locked(channel):
        old = current_index(channel)
        others = [e for e in (old.bundles if old else ()) if not _same_release(e, entry)]
        clash = [e for e in (old.bundles if old else ()) if _same_release(e, entry)]
        if clash and clash[0].sha256 != entry.sha256:
            raise ChannelError(
                f"{entry.name} {entry.version} is already published with other content; "
                "devices refuse the same version with other content: bump the version"
            )
        write_atomic(channel / entry.file, data, force=True)
        bundles = sorted([*others, entry], key=lambda e: (e.name, e.version))
        return _write_index(channel, key, old, tuple(bundles), expires_in, now)


def refresh(
    channel: Path, key: Ed25519PrivateKey, expires_in: timedelta, now: datetime
) -> ChannelIndex:
    """Re-sign the same bundle list with a new expiry (and serial + 1)."""
    with _locked(channel):
        old = current_index(channel)
        if old is None:
            raise ChannelError(f"{channel} has no {INDEX_NAME} yet: publish a bundle first")
        return _write_index(channel, key, old, old.bundles, expires_in, now)


def _same_release(a: ChannelEntry, b: ChannelEntry) -> bool:
    return a.name == b.name and str(a.version) == str(b.version)


def _write_index(
    channel: Path,
    key: Ed25519PrivateKey,
    old: ChannelIndex | None,
    bundles: tuple[ChannelEntry, ...],
    expires_in: timedelta,
    now: datetime,
) -> ChannelIndex:
    index = ChannelIndex(
        serial=(old.serial if old else 0) + 1,
        expires=(now + expires_in).strftime(TIME_FORMAT),
        bundles=bundles,
    )
    envelope = Envelope.signed(index.to_bytes(), [key], INDEX_CONTEXT)
    write_atomic(channel / INDEX_NAME, envelope.to_bytes(), force=True)
    return index


def rotate_keys(
    channel: Path,
    current: Sequence[Ed25519PrivateKey],
    new_keys: Sequence[Ed25519PublicKey],
) -> KeySet:
    """Publish the next trusted key set, signed by the current keys. Devices accept it only
    when one of those signatures is by a key they trust now; sign later indexes with a new key."""
    with _locked(channel):
        path = channel / KEYS_NAME
        version = 1
        if path.exists():
            payload = Envelope.from_bytes(path.read_bytes(), KEYS_NAME).payload
            version = parse_key_set_payload(payload).version + 1
        key_set = KeySet(version=version, keys=tuple(new_keys))
        envelope = Envelope.signed(key_set.to_bytes(), current, KEYS_CONTEXT)
        write_atomic(path, envelope.to_bytes(), force=True)
        return key_set
