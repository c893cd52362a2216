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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime._json import (
    dumps_canonical,
    get_count,
    get_list,
    get_sha256,
    get_str,
    get_timestamp,
    join,
    json_type,
    loads_strict,
    reject_unknown,
)
from edgebundle.runtime.errors import ChannelError, ManifestError, RollbackError, SignatureError
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import SignatureFile, TrustedKeys, sign_all, verify

INDEX_CONTEXT = b"edgebundle/channel-index/v1\x00"
INDEX_FORMAT = "edgebundle.channel/1"
INDEX_NAME = "index.json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_FILE = re.compile(r"bundles/[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.bundle")


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """Payload bytes plus signatures over ``context + payload``."""

    payload: bytes
    signatures: SignatureFile

    @classmethod
    def signed(cls, payload: bytes, keys: Sequence[Ed25519PrivateKey], context: bytes) -> Envelope:
        return cls(payload=payload, signatures=sign_all(keys, context, payload))

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> Envelope:
        """Parse the envelope only (base64 text and signature entries); the payload stays
        opaque bytes until ``verified_payload`` checks it."""
        try:
            d = loads_strict(data, what)
            reject_unknown(d, ("payload", "signatures"), "")
            payload = decode_base64(get_str(d, "payload", ""), "payload")
            signatures = SignatureFile.from_dict({"signatures": get_list(d, "signatures", "")})
        except ManifestError as e:
            raise SignatureError(f"malformed {what}: {e}") from None
        return cls(payload=payload, signatures=signatures)

    def to_bytes(self) -> bytes:
        return dumps_canonical(
            {
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "signatures": self.signatures.to_dict()["signatures"],
            }
        )

    def verified_payload(self, trusted: TrustedKeys, context: bytes) -> bytes:
        verify(self.signatures.signatures, trusted, context, self.payload)
        return self.payload


def decode_base64(text: str, context: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError("is not standard base64", context=context) from None


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelEntry:
    name: str
    version: Version
    file: str  # path inside the channel, always bundles/<name>-<version>.bundle
    sha256: str
    size: int

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> ChannelEntry:
        reject_unknown(d, ("name", "version", "file", "sha256", "size"), context)
        name = get_str(d, "name", context)
        version = Version.parse(get_str(d, "version", context), context=join(context, "version"))
        file = get_str(d, "file", context)
        # The file name is derived, never free text: a device can only be sent to the
        # canonical place, which rules out path tricks and mix-ups between entries.
        if file != bundle_file(name, version) or not _FILE.fullmatch(file):
            raise ManifestError(
                f"must be {bundle_file(name, version)!r}", context=join(context, "file")
            )
        return cls(
            name=name,
            version=version,
            file=file,
            sha256=get_sha256(d, "sha256", context),
            size=get_count(d, "size", context, minimum=1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": str(self.version),
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
        }


def bundle_file(name: str, version: Version) -> str:
    return f"bundles/{name}-{version}.bundle"


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelIndex:
    serial: int  # strictly increases with every publish: a device refuses to go back
    expires: str  # RFC 3339 UTC; a device refuses an expired index (freeze attacks)
    bundles: tuple[ChannelEntry, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> ChannelIndex:
        reject_unknown(d, ("format", "serial", "expires", "bundles"), context)
        if get_str(d, "format", context) != INDEX_FORMAT:
            raise ManifestError(f"unsupported channel index format (expected {INDEX_FORMAT})")
        entries = []
        for i, item in enumerate(get_list(d, "bundles", context)):
            item_context = f"{join(context, 'bundles')}[{i}]"
            if not isinstance(item, dict):
                raise ManifestError(f"expected an object, got {json_type(item)}", item_context)
            entries.append(ChannelEntry.from_dict(item, item_context))
        keys = [(e.name, str(e.version)) for e in entries]
        if len(set(keys)) != len(keys):
            raise ManifestError("lists the same name and version twice", join(context, "bundles"))
        return cls(
            serial=get_count(d, "serial", context, minimum=1),
            expires=get_timestamp(d, "expires", context),
            bundles=tuple(entries),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "serial": self.serial,
            "expires": self.expires,
            "bundles": [e.to_dict() for e in self.bundles],
        }

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
