"""Ed25519 signatures over domain-separated messages, and the keys that make them.

A signature covers ``context + message``, where ``context`` names what is signed (a manifest,
later an OTA channel index) and ends in a NUL byte, so a signature made for one kind of document
can never be replayed as another. ``manifest.sig`` holds one entry per signing key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import (
    Document,
    Rule,
    array,
    check_fields,
    matching,
    nested,
    read_string,
)
from edgebundle.runtime.errors import KeyFileError, ManifestError, SignatureError

MANIFEST_CONTEXT = b"edgebundle/manifest/v1\x00"
MAX_SIGNATURES = 16

_KEYID = re.compile(r"[0-9a-f]{64}")
_SIGNATURE_BYTES = 64


def keyid(public_key: Ed25519PublicKey) -> str:
    """Lowercase hex sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{kind} key file not found: {path}") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {kind} key file {path}: {e.strerror}") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM SubjectPublicKeyInfo file."""
    data = _read_key_file(path, "public")
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{path} holds a private key; give the public key (.pub) instead")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key (found {type(key).__name__})")
    return key


def load_private_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS8 PEM; give a passphrase exactly when it is encrypted."""
    data = _read_key_file(path, "private")
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if not encrypted and b"-----BEGIN PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path} is not a PKCS8 PEM private key")
    if encrypted and passphrase is None:
        raise KeyFileError(f"{path} is encrypted; a passphrase is required")
    if not encrypted and passphrase is not None:
        raise KeyFileError(f"{path} is not encrypted, but a passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except ValueError:
        if encrypted:
            raise KeyFileError(f"wrong passphrase for {path}") from None
        raise KeyFileError(f"{path} is not a valid PKCS8 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key (found {type(key).__name__})")
    return key


class TrustedKeys(Mapping[str, Ed25519PublicKey]):
    """The public keys a verifier trusts, by keyid, and how many of them must sign (k of n).

    Never empty: an empty set trusts nothing.
    """

    __slots__ = ("_keys", "threshold")

    def __init__(self, keys: Iterable[Ed25519PublicKey], threshold: int = 1) -> None:
        by_id = {keyid(key): key for key in keys}
        if not by_id:
            raise KeyFileError("no trusted public keys given")
        if isinstance(threshold, bool) or not 1 <= threshold <= len(by_id):
            raise KeyFileError(
                f"a threshold of {threshold!r} is not between 1 and the {len(by_id)} key(s)"
            )
        self._keys: Mapping[str, Ed25519PublicKey] = MappingProxyType(by_id)
        self.threshold = threshold

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustedKeys:
        return cls(load_public_key(path) for path in paths)

    def __getitem__(self, key: str) -> Ed25519PublicKey:
        return self._keys[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({sorted(self._keys)}, threshold={self.threshold})"


def _read_signature(value: object, path: str) -> str:
    """Standard base64 (with padding) of a 64-byte Ed25519 signature, in its one canonical
    spelling."""
    text = read_string(value, path)
    _decode_signature(text, path)
    return text


def _decode_signature(text: str, path: str = "") -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError("signature is not standard base64", path) from None
    # Exactly one text per signature: refuse non-canonical padding bits and lengths.
    if len(raw) != _SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != text:
        raise ManifestError(
            f"signature is not a canonical base64 {_SIGNATURE_BYTES}-byte value", path
        )
    return raw


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureEntry(Document):
    keyid: Annotated[str, matching(_KEYID, "a keyid (64 lowercase hex digits)")]
    sig: Annotated[str, Rule(_read_signature)]

    def __post_init__(self) -> None:
        check_fields(self)  # sign() builds entries: they obey the rules of read ones

    @property
    def signature(self) -> bytes:
        return _decode_signature(self.sig)


def _read_signatures(value: object, path: str) -> tuple[SignatureEntry, ...]:
    entries = array(nested(SignatureEntry)).read(value, path)
    _check_signatures(entries, path)
    return entries


def _check_signatures(entries: Sequence[SignatureEntry], path: str) -> None:
    if not 1 <= len(entries) <= MAX_SIGNATURES:
        raise ManifestError(f"must hold 1 to {MAX_SIGNATURES} signatures, got {len(entries)}", path)
    keyids = [entry.keyid for entry in entries]
    if len(set(keyids)) != len(keyids):
        raise ManifestError("holds two signatures by the same key", path)


# A signature list: in manifest.sig, and in every envelope of an OTA channel.
SIGNATURES: Rule[tuple[SignatureEntry, ...]] = Rule(
    _read_signatures, lambda entries: [entry.to_dict() for entry in entries]
)


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureFile(Document):
    signatures: Annotated[tuple[SignatureEntry, ...], SIGNATURES]

    def __post_init__(self) -> None:
        _check_signatures(self.signatures, "signatures")

    def to_bytes(self) -> bytes:
        """Canonical JSON, formatted like ``manifest.json``."""
        return dumps_canonical(self.to_dict())


def parse_signature_file(data: bytes, what: str = "manifest.sig") -> SignatureFile:
    """Strictly parse a signature file; any defect is a ``SignatureError`` naming ``what``."""
    try:
        return SignatureFile.from_dict(loads_strict(data, what))
    except ManifestError as e:
        raise SignatureError(f"malformed {what}: {e}") from None


def _check_context(context: bytes) -> None:
    # One trailing NUL and no other: no context can then be a prefix of another.
    if not context.endswith(b"\x00") or context.count(b"\x00") != 1:
        raise ValueError("a signing context must end in a single NUL byte")


def sign(private_key: Ed25519PrivateKey, context: bytes, message: bytes) -> SignatureEntry:
    """Sign ``context + message``."""
    _check_context(context)
    signature = private_key.sign(context + message)
    return SignatureEntry(
        keyid=keyid(private_key.public_key()),
        sig=base64.b64encode(signature).decode("ascii"),
    )


def sign_all(keys: Sequence[Ed25519PrivateKey], context: bytes, message: bytes) -> SignatureFile:
    """One signature per distinct key (a key named twice signs once)."""
    distinct = {keyid(key.public_key()): key for key in keys}
    return SignatureFile(signatures=tuple(sign(key, context, message) for key in distinct.values()))


def verify(
    signatures: Sequence[SignatureEntry],
    trusted: TrustedKeys,
    context: bytes,
    message: bytes,
) -> str:
    """Return the keyid of the first trusted key whose signature over ``context + message``
    holds, once a threshold of distinct trusted keys (``trusted.threshold``) signed it.

    Signatures by keys that are not trusted are ignored. A failing signature by a trusted key
    matters only when the threshold is not met, and is then named in the error.
    """
    _check_context(context)
    signed = context + message
    valid: list[str] = []
    invalid: list[str] = []
    for entry in signatures:
        key = trusted.get(entry.keyid)
        if key is None or entry.keyid in valid:
            continue
        try:
            key.verify(entry.signature, signed)
        except InvalidSignature:
            invalid.append(entry.keyid)
            continue
        valid.append(entry.keyid)
        if len(valid) >= trusted.threshold:
            return valid[0]
    signers = ", ".join(entry.keyid for entry in signatures) or "nobody"
    detail = f"; invalid signature by trusted key {', '.join(invalid)}" if invalid else ""
    if not valid:
        raise SignatureError(f"no valid signature by a trusted key (signed by: {signers}{detail})")
    raise SignatureError(
        f"signed by {len(valid)} of the {trusted.threshold} trusted keys required "
        f"(valid: {', '.join(valid)}{detail})"
    )


def load_key_dir(directory: Path) -> list[Ed25519PublicKey]:
    """Every ``<keyid>.pub`` in ``directory``; a file holding another key than its name says
    is refused (a store names its key files by keyid)."""
    keys = []
    for path in sorted(directory.glob("*.pub")):
        key = load_public_key(path)
        if keyid(key) != path.stem:
            raise KeyFileError(f"{path} holds key {keyid(key)}, not the key its name says")
        keys.append(key)
    return keys


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
