"""The OTA channel format: a signed index of published bundles, and signed key rotations.

A channel is a static directory any HTTP server, object store or CDN can host:

    index.json                 signed envelope: which bundles exist (serial, expiry, sha256, size)
    keys/1.json, keys/2.json…  signed envelopes: the key chain (``runtime.ota.keychain``)
    bundles/NAME-VERSION.bundle

Both kinds of document are envelopes in the manner of DSSE (python-tuf ``api/dsse.py``): the signed
payload travels as base64 bytes next to its signatures, so a device verifies the exact bytes
and only then parses them; no canonical re-serialization is needed to check a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import (
    SHA256,
    STRING,
    TIMESTAMP,
    VERSION,
    Document,
    Rule,
    array,
    constant,
    count,
    dump,
    load,
    nested,
    read_string,
)
from edgebundle.runtime.errors import ChannelError, ManifestError, RollbackError, SignatureError
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import SIGNATURES, SignatureFile, TrustedKeys, sign_all, verify

INDEX_CONTEXT = b"edgebundle/channel-index/v1\x00"
INDEX_FORMAT = "edgebundle.channel/1"
INDEX_NAME = "index.json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_FILE = re.compile(r"bundles/[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.bundle")


def decode_base64(text: str, context: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError("is not standard base64", context=context) from None


_PAYLOAD: Rule[bytes] = Rule(
    lambda value, path: decode_base64(read_string(value, path), path),
    lambda payload: base64.b64encode(payload).decode("ascii"),
)
_SIGNATURE_FILE: Rule[SignatureFile] = Rule(
    lambda value, path: SignatureFile(signatures=SIGNATURES.read(value, path)),
    lambda file: SIGNATURES.write(file.signatures),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """Payload bytes plus signatures over ``context + payload``."""

    payload: Annotated[bytes, _PAYLOAD]
    signatures: Annotated[SignatureFile, _SIGNATURE_FILE]

    @classmethod
    def signed(cls, payload: bytes, keys: Sequence[Ed25519PrivateKey], context: bytes) -> Envelope:
        return cls(payload=payload, signatures=sign_all(keys, context, payload))

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> Envelope:
        """Parse the envelope only (base64 text and signature entries); the payload stays
        opaque bytes until ``verified_payload`` checks it."""
        try:
            return load(cls, loads_strict(data, what))
        except ManifestError as e:
            raise SignatureError(f"malformed {what}: {e}") from None

    def to_bytes(self) -> bytes:
        return dumps_canonical(dump(self))

    def verified_payload(self, trusted: TrustedKeys, context: bytes) -> bytes:
        verify(self.signatures.signatures, trusted, context, self.payload)
        return self.payload


def bundle_file(name: str, version: Version) -> str:
    return f"bundles/{name}-{version}.bundle"


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelEntry(Document):
    name: Annotated[str, STRING]
    version: Annotated[Version, VERSION]
    # path inside the channel, always bundles/<name>-<version>.bundle
    file: Annotated[str, STRING]
    sha256: Annotated[str, SHA256]
    size: Annotated[int, count(minimum=1)]

    @classmethod
    def of(cls, name: str, version: Version, data: bytes) -> ChannelEntry:
        """The entry for the bundle bytes ``data`` published as ``name`` ``version``."""
        return cls(
            name=name,
            version=version,
            file=bundle_file(name, version),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )

    def check(self) -> None:
        # The file name is derived, never free text: a device can only be sent to the
        # canonical place, which rules out path tricks and mix-ups between entries.
        expected = bundle_file(self.name, self.version)
        if self.file != expected or not _FILE.fullmatch(self.file):
            raise ManifestError(f"must be {expected!r}", context="file")


def _entry_key(entry: ChannelEntry) -> str:
    return f"{entry.name} {entry.version}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelIndex(Document):
    format: Annotated[str, constant(INDEX_FORMAT, "channel index")] = INDEX_FORMAT
    # strictly increases with every publish: a device refuses to go back
    serial: Annotated[int, count(minimum=1)]
    # RFC 3339 UTC; a device refuses an expired index (freeze attacks)
    expires: Annotated[str, TIMESTAMP]
    bundles: Annotated[
        tuple[ChannelEntry, ...],
        array(nested(ChannelEntry), unique=(_entry_key, "name and version")),
    ]

    def to_bytes(self) -> bytes:
        data = self.to_dict()
        ChannelIndex.from_dict(data)
        return dumps_canonical(data)

    def expires_at(self) -> datetime:
        return datetime.strptime(self.expires, TIME_FORMAT).replace(tzinfo=timezone.utc)


def parse_index_payload(payload: bytes) -> ChannelIndex:
    try:
        return ChannelIndex.from_dict(loads_strict(payload, INDEX_NAME))
    except ManifestError as e:
        raise ChannelError(f"invalid {INDEX_NAME}: {e}") from None


def read_index(
    data: bytes, trusted: TrustedKeys, *, last_serial: int, now: datetime
) -> ChannelIndex:
    """The device's check of a fetched ``index.json``, in order: envelope → signature by a
    trusted key → parse → serial not lower than the last one seen → not expired."""
    payload = Envelope.from_bytes(data, INDEX_NAME).verified_payload(trusted, INDEX_CONTEXT)
    index = parse_index_payload(payload)
    if index.serial < last_serial:
        raise RollbackError(
            f"channel index serial {index.serial} is older than {last_serial} already seen "
            "(replayed index)"
        )
    if index.expires_at() <= now:
        raise ChannelError(f"channel index expired at {index.expires}")
    return index
