"""``bundle publish`` / ``bundle rotate-keys``: maintain a static OTA channel directory.

Writes go bundle file first, index last (each temp + fsync + rename), so a device never sees
an index that lists a file not fully there; a lock keeps two publishers apart. Nothing is
written that devices would refuse: every index and key statement is verified, as a device
verifies it, against the channel's own key chain before it lands.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgebundle.builder.files import write_atomic
from edgebundle.builder.keys import create_new
from edgebundle.builder.staging import (
    add_staged,
    current_rollout,
    signed_for_devices,
    signed_rollout,
    without_release,
    write_index,
)
from edgebundle.runtime.bundle import open_bundle, read_bundle_file, read_members_unverified
from edgebundle.runtime.container import MANIFEST_NAME, SIGNATURE_NAME, write_bundle
from edgebundle.runtime.errors import BundleError, ChannelError
from edgebundle.runtime.ota.channel import (
    INDEX_CONTEXT,
    INDEX_NAME,
    TIME_FORMAT,
    ChannelEntry,
    ChannelIndex,
    Envelope,
    parse_index_payload,
)
from edgebundle.runtime.ota.keychain import (
    KEYS_CONTEXT,
    LEGACY_KEYS_NAME,
    STATEMENT_FORMAT,
    KeySet,
    statement_file,
    verify_own_signatures,
    verify_statement,
)
from edgebundle.runtime.ota.rollout import SHARE_SCALE, Rollout, Staged
from edgebundle.runtime.signing import MANIFEST_CONTEXT, TrustedKeys, keyid, sign_all

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise BundleError(f"not a duration like 30d, 12h, 90m or 3600s: {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@contextmanager
def locked(channel: Path) -> Iterator[None]:
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


def channel_trust(channel: Path) -> KeySet | None:
    """The newest key set of the channel's chain, every step verified as a device verifies it
    (statement 1 against its own keys only: the keys devices were provisioned with are theirs
    to check); None for a channel that has never rotated."""
    newest: KeySet | None = None
    for version in range(1, _count_statements(channel) + 1):
        path = channel / statement_file(version)
        try:
            data = path.read_bytes()
            if newest is None:
                newest = verify_own_signatures(data, str(path))
            else:
                newest = verify_statement(data, newest, version)
        except (OSError, BundleError) as e:
            detail = e.strerror if isinstance(e, OSError) else str(e)
            raise ChannelError(f"the channel's key chain is broken at {path}: {detail}") from None
    return newest


def _count_statements(channel: Path) -> int:
    """How many statements the chain holds: keys/1.json … keys/N.json with no gap."""
    count = 0
    while (channel / statement_file(count + 1)).exists():
        count += 1
    return count


def publish(
    bundle: Path,
    channel: Path,
    keys: Sequence[Ed25519PrivateKey],
    expires_in: timedelta,
    now: datetime,
    trust: TrustedKeys | None = None,
    share: int = SHARE_SCALE,
) -> ChannelIndex:
    """Add a verified bundle to the channel and re-sign the index with serial + 1.

    The bundle must verify with ``trust``, by default the channel's newest key set (the
    signing keys themselves on a channel that has never rotated). Below a ``share`` of
    ``SHARE_SCALE`` (100%) the release is staged: listed in ``rollout.json`` for that share
    of devices, not in the index (``runtime.ota.rollout``).
    """
    data = read_bundle_file(bundle)
    with locked(channel):
        chain = channel_trust(channel)
        default = chain.trusted() if chain else TrustedKeys(k.public_key() for k in keys)
        verified = open_bundle(data, trust or default)
        entry = ChannelEntry.of(verified.manifest.name, verified.manifest.version, data)
        old = current_index(channel)
        others = [e for e in (old.bundles if old else ()) if not _same_release(e, entry)]
        clash = [e for e in (old.bundles if old else ()) if _same_release(e, entry)]
        if clash and clash[0].sha256 != entry.sha256:
            raise ChannelError(
                f"{entry.name} {entry.version} is already published with other content; "
                "devices refuse the same version with other content: bump the version"
            )
        check_signers(channel, chain, keys)
        rollout = without_release(current_rollout(channel), entry.name, entry.version)
        if share < SHARE_SCALE:
            rollout = add_staged(rollout, Staged(entry=entry, share=share, halted=False))
            listed = others
        else:
            listed = [*others, entry]
        bundles = tuple(sorted(listed, key=lambda e: (e.name, e.version)))
        expires = (now + expires_in).strftime(TIME_FORMAT)
        index, envelope = next_index(keys, old, bundles, expires, verifiers_of(chain))
        companion = signed_rollout(keys, rollout, index.serial, verifiers_of(chain))
        write_atomic(channel / entry.file, data, force=True)
        write_index(channel, envelope, companion)
        return index


def refresh(
    channel: Path, keys: Sequence[Ed25519PrivateKey], expires_in: timedelta, now: datetime
) -> ChannelIndex:
    """Re-sign the same bundle list with a new expiry (and serial + 1)."""
    return resign(channel, keys, expires_in, now, lambda index, rollout: (index.bundles, rollout))


# What a re-signing makes of the channel's bundle list and rollout.
ChannelChange = Callable[
    [ChannelIndex, Rollout | None], tuple[tuple[ChannelEntry, ...], Rollout | None]
]


def resign(
    channel: Path,
    keys: Sequence[Ed25519PrivateKey],
    expires_in: timedelta,
    now: datetime,
    change: ChannelChange,
) -> ChannelIndex:
    """The published index re-signed (serial + 1, a new expiry) with the bundle list and the
    rollout ``change`` makes of the current ones."""
    with locked(channel):
        old = current_index(channel)
        if old is None:
            raise ChannelError(f"{channel} has no {INDEX_NAME} yet: publish a bundle first")
        chain = channel_trust(channel)
        check_signers(channel, chain, keys)
        bundles, rollout = change(old, current_rollout(channel))
        expires = (now + expires_in).strftime(TIME_FORMAT)
        index, envelope = next_index(keys, old, bundles, expires, verifiers_of(chain))
        companion = signed_rollout(keys, rollout, index.serial, verifiers_of(chain))
        write_index(channel, envelope, companion)
        return index


def _same_release(a: ChannelEntry, b: ChannelEntry) -> bool:
    return a.name == b.name and str(a.version) == str(b.version)


def verifiers_of(chain: KeySet | None) -> tuple[TrustedKeys, ...]:
    return () if chain is None else (chain.trusted(),)


def check_signers(channel: Path, chain: KeySet | None, keys: Sequence[Ed25519PrivateKey]) -> None:
    """On a channel that has never rotated, devices trust the keys they were provisioned
    with, which signed the index so far: a new signer would lock every device out."""
    path = channel / INDEX_NAME
    if chain is not None or not path.exists():
        return
    envelope = Envelope.from_bytes(path.read_bytes(), INDEX_NAME)
    try:
        envelope.verified_payload(TrustedKeys(k.public_key() for k in keys), INDEX_CONTEXT)
    except BundleError:
        signers = ", ".join(s.keyid for s in envelope.signatures.signatures)
        raise ChannelError(
            f"{path} is signed by {signers}, the key devices trust now; sign with it, or "
            "change keys with `bundle rotate-keys` so devices can follow"
        ) from None


def next_index(
    keys: Sequence[Ed25519PrivateKey],
    old: ChannelIndex | None,
    bundles: tuple[ChannelEntry, ...],
    expires: str,
    verifiers: Sequence[TrustedKeys],
) -> tuple[ChannelIndex, Envelope]:
    """The next index, signed, once it verifies with every key set in ``verifiers``."""
    index = ChannelIndex(serial=(old.serial if old else 0) + 1, expires=expires, bundles=bundles)
    return index, signed_for_devices(index.to_bytes(), keys, INDEX_CONTEXT, INDEX_NAME, verifiers)


def rotate_keys(
    channel: Path,
    current: Sequence[Ed25519PrivateKey],
    new: Sequence[Ed25519PrivateKey | Ed25519PublicKey],
    threshold: int,
    expires_in: timedelta,
    now: datetime,
) -> KeySet:
    """Publish the next key statement of the chain, ``keys/N.json``, and move the channel to it.

    ``current`` signs for the key set devices trust now (the newest statement, or, before the
    first rotation, the keys that sign the index); the private keys among ``new`` sign for the
    new set (a threshold of them is needed). Nothing is written unless the statement verifies
    as a device will verify it. Then, in an order where a device reading the channel at any
    moment finds it consistent: the listed bundles re-signed by the new keys (devices install
    only what their newest key set signed), an index signed by the old and the new keys (valid
    before and after a device adopts the statement), and last the statement itself. A legacy
    ``keys.json`` goes once the chain replaces it.
    """
    with locked(channel):
        chain = channel_trust(channel)
        old = current_index(channel)
        previous = chain or _provisioned(channel, current)
        version = previous.version + 1
        public = tuple(k.public_key() if isinstance(k, Ed25519PrivateKey) else k for k in new)
        statement = KeySet(
            version=version,
            threshold=threshold,
            keys=public,
            expires=(now + expires_in).strftime(TIME_FORMAT),
        )
        new_private = [k for k in new if isinstance(k, Ed25519PrivateKey)]
        signers = [*current, *new_private]
        envelope = Envelope.signed(statement.to_bytes(STATEMENT_FORMAT), signers, KEYS_CONTEXT)
        try:
            verify_statement(envelope.to_bytes(), previous, version)
        except BundleError as e:
            raise ChannelError(
                f"refusing to write {statement_file(version)}: devices would refuse it: {e}"
            ) from None
        rollout = current_rollout(channel)
        if rollout is not None and rollout.staged:
            raise ChannelError(
                "finish (--to 100%) or revoke the staged releases before rotating keys: "
                "their bundles are signed by the keys being replaced"
            )
        if old is not None:
            _move_index(channel, old, signers, new_private, (previous, statement), rollout)
        path = channel / statement_file(version)
        path.parent.mkdir(exist_ok=True)
        create_new(path, envelope.to_bytes(), 0o644)
        (channel / LEGACY_KEYS_NAME).unlink(missing_ok=True)
        return statement


def _provisioned(channel: Path, current: Sequence[Ed25519PrivateKey]) -> KeySet:
    """Before the first statement, devices trust what they were provisioned with: the keys
    that sign the channel's index. ``current`` must include one of them."""
    check_signers(channel, None, current)
    keys = tuple({keyid(k.public_key()): k.public_key() for k in current}.values())
    return KeySet(version=0, threshold=1, keys=keys, expires=None)


def _move_index(
    channel: Path,
    old: ChannelIndex,
    signers: Sequence[Ed25519PrivateKey],
    new_keys: Sequence[Ed25519PrivateKey],
    sets: tuple[KeySet, KeySet],
    rollout: Rollout | None,
) -> None:
    """The listed bundles re-signed by ``new_keys``, and an index listing them signed by
    ``signers``, valid under the key set before the rotation and the one after; all checked
    before the first byte is written."""
    resigned = {
        e.file: resign_bundle((channel / e.file).read_bytes(), new_keys) for e in old.bundles
    }
    for data in resigned.values():
        open_bundle(data, sets[1].trusted())
    bundles = tuple(ChannelEntry.of(e.name, e.version, resigned[e.file]) for e in old.bundles)
    verifiers = tuple(key_set.trusted() for key_set in sets)
    index, envelope = next_index(signers, old, bundles, old.expires, verifiers)
    companion = signed_rollout(signers, rollout, index.serial, verifiers)
    for file, data in resigned.items():
        write_atomic(channel / file, data, force=True)
    write_index(channel, envelope, companion)


def resign_bundle(bundle: bytes, keys: Sequence[Ed25519PrivateKey]) -> bytes:
    """``bundle`` with its manifest signed by ``keys`` instead: the manifest's bytes, and so
    everything it pins, stay as they are."""
    members = read_members_unverified(bundle)
    manifest = members.pop(MANIFEST_NAME)
    members.pop(SIGNATURE_NAME)
    signatures = sign_all(keys, MANIFEST_CONTEXT, manifest).to_bytes()
    return write_bundle(manifest, signatures, members, mtime=0)
