"""Key rotation as a verified chain, the way TUF rotates its root role.

A channel keeps every key statement it ever published, ``keys/1.json``, ``keys/2.json``, …
Statement N+1 names the complete next key set, how many of those keys must sign (the
threshold) and until when the statement is valid. It counts only with signatures from a
threshold of statement N's keys (the old owners hand over) *and* a threshold of its own keys
(the new owners hold their private keys). A device walks from the version it trusts to the
newest, checking each step, before it reads anything else: a device offline across many
rotations catches up in one pass, and a key rotated out can neither sign an index nor write a
statement the device accepts.

Version 0 is what a device was provisioned with (``bundle-runtime init --trust signing.pub``):
keys with no place in a chain yet. Such a device anchors on the first statement its keys sign
and skips the ones before it, so a device provisioned with today's key on a channel that has
rotated three times joins at statement 3. Provisioned from a statement file
(``--trust keys/3.json``) it is anchored from the start.

Statements are envelopes (``runtime.ota.channel.Envelope``): the signed payload travels as bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgebundle.runtime._json import dumps_canonical, json_type, loads_strict
from edgebundle.runtime.document import (
    COUNT,
    TIMESTAMP,
    Document,
    Rule,
    array,
    constant,
    count,
    dump,
    optional,
)
from edgebundle.runtime.errors import ChannelError, KeyFileError, ManifestError, SignatureError
from edgebundle.runtime.ota.channel import TIME_FORMAT, Envelope, decode_base64
from edgebundle.runtime.signing import MAX_SIGNATURES, TrustedKeys, keyid, load_public_key

KEYS_CONTEXT = b"edgebundle/key-statement/v2\x00"
STATEMENT_FORMAT = "edgebundle.keys/2"
TRUST_FORMAT = "edgebundle.trust/1"
KEYS_DIR = "keys"
# What the first, single-file rotation scheme published; a channel migrates off it with its
# next ``bundle rotate-keys`` (see builder.publish.rotate_keys).
LEGACY_KEYS_NAME = "keys.json"

_RAW_KEY_BYTES = 32
_FORMATS = (STATEMENT_FORMAT, TRUST_FORMAT)


def statement_file(version: int) -> str:
    """Where statement ``version`` lives inside a channel."""
    return f"{KEYS_DIR}/{version}.json"


def raw_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_public_key(value: object, path: str) -> Ed25519PublicKey:
    if not isinstance(value, str):
        raise ManifestError(f"expected a base64 public key, got {json_type(value)}", path)
    raw = decode_base64(value, path)
    if len(raw) != _RAW_KEY_BYTES:
        raise ManifestError(f"expected a {_RAW_KEY_BYTES}-byte Ed25519 public key", path)
    return Ed25519PublicKey.from_public_bytes(raw)


_PUBLIC_KEY: Rule[Ed25519PublicKey] = Rule(
    _read_public_key, lambda key: base64.b64encode(raw_key(key)).decode("ascii")
)


@dataclass(frozen=True, kw_only=True, slots=True)
class KeySet(Document):
    """A set of keys, the threshold of them that must sign, and the statement that made it.

    Two documents carry it: a signed statement of a channel's chain (``edgebundle.keys/2``,
    version >= 1, always expiring) and a store's ``trust.json`` (``edgebundle.trust/1``, which
    also holds version 0, the provisioned keys, with no expiry). ``format`` says which one it
    was read from; it is not part of the key set's value, so it takes no part in comparisons.
    """

    format: Annotated[str, constant(_FORMATS, "key set")] = field(
        default=TRUST_FORMAT, compare=False
    )
    version: Annotated[int, COUNT]
    threshold: Annotated[int, count(minimum=1)]
    keys: Annotated[tuple[Ed25519PublicKey, ...], array(_PUBLIC_KEY)]
    expires: Annotated[str | None, optional(TIMESTAMP)]  # RFC 3339 UTC; None only for version 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.format == STATEMENT_FORMAT and self.version < 1:
            raise ManifestError(
                f"a signed statement starts at version 1, got {self.version}", "version"
            )
        if not 1 <= len(self.keys) <= MAX_SIGNATURES:
            raise ManifestError(f"must list 1 to {MAX_SIGNATURES} keys", "keys")
        if len({keyid(k) for k in self.keys}) != len(self.keys):
            raise ManifestError("lists a key twice", "keys")
        if not 1 <= self.threshold <= len(self.keys):
            raise ManifestError(
                f"must be between 1 and the {len(self.keys)} key(s), got {self.threshold}",
                "threshold",
            )
        if (self.version == 0) != (self.expires is None):
            raise ManifestError("is required from version 1 on, and only there", "expires")

    def to_dict(self, fmt: str | None = None) -> dict[str, Any]:
        """The document of format ``fmt`` (by default the one it was read from)."""
        return dump(self if fmt is None else replace(self, format=fmt))

    def to_bytes(self, fmt: str) -> bytes:
        """Canonical bytes of ``fmt``; refuses to write what it could not read back."""
        data = self.to_dict(fmt)
        KeySet.from_dict(data)
        return dumps_canonical(data)

    def trusted(self) -> TrustedKeys:
        return TrustedKeys(self.keys, self.threshold)

    def keyids(self) -> list[str]:
        return sorted(keyid(k) for k in self.keys)

    def expires_at(self) -> datetime | None:
        if self.expires is None:
            return None
        return datetime.strptime(self.expires, TIME_FORMAT).replace(tzinfo=timezone.utc)

    def describe(self) -> str:
        """One line for people: which version, k of n, until when."""
        where = "provisioned keys" if self.version == 0 else f"key set version {self.version}"
        until = "" if self.expires is None else f", expires {self.expires}"
        return f"{where}: {self.threshold} of {len(self.keys)} key(s) must sign{until}"


def parse_key_set(data: bytes, what: str, fmt: str) -> KeySet:
    """A statement payload or a ``trust.json`` that must be of format ``fmt``."""
    try:
        key_set = KeySet.from_dict(loads_strict(data, what))
    except ManifestError as e:
        raise ChannelError(f"invalid {what}: {e}") from None
    if key_set.format != fmt:
        raise ChannelError(f"invalid {what}: format must be {fmt!r}")
    return key_set


def verify_statement(data: bytes, current: KeySet, version: int) -> KeySet:
    """Statement ``version`` (the one after ``current``), in order: envelope → a threshold of
    ``current``'s keys signed it → parse → it states ``version`` → a threshold of its own keys
    signed it (proof of possession)."""
    what = statement_file(version)
    envelope = Envelope.from_bytes(data, what)
    payload = envelope.verified_payload(current.trusted(), KEYS_CONTEXT)
    statement = parse_key_set(payload, what, STATEMENT_FORMAT)
    if statement.version != version:
        raise ChannelError(f"{what} states version {statement.version} (a statement out of place)")
    try:
        envelope.verified_payload(statement.trusted(), KEYS_CONTEXT)
    except SignatureError as e:
        raise SignatureError(f"{what} is not signed by its own new keys: {e}") from None
    return statement


def verify_own_signatures(data: bytes, what: str) -> KeySet:
    """A statement checked only against its own keys: what a device provisioned *from* a
    statement file, or a publisher looking at the start of its chain, can check."""
    envelope = Envelope.from_bytes(data, what)
    statement = parse_key_set(envelope.payload, what, STATEMENT_FORMAT)
    envelope.verified_payload(statement.trusted(), KEYS_CONTEXT)
    return statement


def walk_chain(current: KeySet, read: Callable[[int], bytes | None], max_steps: int) -> KeySet:
    """The newest key set the chain after ``current`` leads to (``current`` if none is newer).

    ``read(n)`` returns statement n's bytes, or None past the end of the chain. Anchored
    (version >= 1), every step must verify. Provisioned (version 0), statements the device's
    keys did not sign are skipped until one is; if none is, the channel is refused.
    """
    trusted, skipped = current, 0
    for version in range(current.version + 1, current.version + 1 + max_steps):
        data = read(version)
        if data is None:
            break
        if trusted.version == 0 and not _signed_by(data, trusted, version):
            skipped += 1
            continue
        trusted = verify_statement(data, trusted, version)
    else:
        raise ChannelError(
            f"the key chain goes on past {max_steps} statements after version {current.version}"
        )
    if trusted.version == 0 and skipped:
        raise SignatureError(
            f"none of the channel's {skipped} key statement(s) is signed by this device's "
            "provisioned keys (re-provision it with the channel's newest keys/N.json)"
        )
    return trusted


def _signed_by(data: bytes, key_set: KeySet, version: int) -> bool:
    envelope = Envelope.from_bytes(data, statement_file(version))
    try:
        envelope.verified_payload(key_set.trusted(), KEYS_CONTEXT)
    except SignatureError:
        return False
    return True


def check_fresh(key_set: KeySet, now: datetime) -> None:
    """Refuse a newest statement past its expiry: a frozen chain is not trusted forever."""
    expires = key_set.expires_at()
    if expires is not None and expires <= now:
        raise ChannelError(
            f"key set version {key_set.version} expired at {key_set.expires}; the channel's "
            "owner must publish a new statement (bundle rotate-keys)"
        )


def load_trust(paths: Sequence[Path]) -> KeySet:
    """What ``--trust`` names: PEM public keys (version 0, any one of them signs), or one key
    statement file from a channel (``keys/N.json``: that version and its threshold)."""
    if not paths:
        raise KeyFileError("no trusted public keys given")
    statements = [path for path in paths if _looks_like_json(path)]
    if not statements:
        keys = TrustedKeys(load_public_key(path) for path in paths)
        return KeySet(version=0, threshold=1, keys=tuple(keys.values()), expires=None)
    if len(paths) != 1:
        raise KeyFileError("give either public keys (.pub) or one key statement (keys/N.json)")
    data = _read(paths[0])
    try:
        return verify_own_signatures(data, str(paths[0]))
    except (ChannelError, SignatureError) as e:
        raise KeyFileError(f"{paths[0]} is not a valid key statement: {e}") from None


def _looks_like_json(path: Path) -> bool:
    return _read(path)[:64].lstrip().startswith(b"{")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"trust file not found: {path}") from None
    except OSError as e:
        raise KeyFileError(f"cannot read trust file {path}: {e.strerror}") from None
