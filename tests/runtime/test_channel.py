"""The channel index and its envelope, in memory: the bytes a publisher writes read back, a
malformed index is refused naming the field, and no payload is interpreted before its
signature holds."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.errors import ChannelError, ManifestError, SignatureError
from edgebundle.runtime.ota.channel import (
    INDEX_CONTEXT,
    ChannelEntry,
    ChannelIndex,
    Envelope,
    parse_index_payload,
    read_index,
)
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
KEY = Ed25519PrivateKey.generate()
TRUSTED = TrustedKeys([KEY.public_key()])


def index(*entries: ChannelEntry, serial: int = 3) -> ChannelIndex:
    return ChannelIndex(serial=serial, expires="2026-12-11T12:00:00Z", bundles=entries)


ENTRIES = (
    ChannelEntry.of("credit", Version.parse("1.0.0"), b"bundle one"),
    ChannelEntry.of("credit", Version.parse("1.1.0-rc.1"), b"bundle two"),
)


def index_dict(**change: Any) -> dict[str, Any]:
    return {**index(*ENTRIES).to_dict(), **change}


def signed(payload: bytes) -> bytes:
    return Envelope.signed(payload, [KEY], INDEX_CONTEXT).to_bytes()


def test_the_index_reads_back_byte_for_byte() -> None:
    data = index(*ENTRIES).to_bytes()
    assert json.loads(data) == {
        "format": "edgebundle.channel/1",
        "serial": 3,
        "expires": "2026-12-11T12:00:00Z",
        "bundles": [
            {
                "name": "credit",
                "version": "1.0.0",
                "file": "bundles/credit-1.0.0.bundle",
                "sha256": ENTRIES[0].sha256,
                "size": 10,
            },
            {
                "name": "credit",
                "version": "1.1.0-rc.1",
                "file": "bundles/credit-1.1.0-rc.1.bundle",
                "sha256": ENTRIES[1].sha256,
                "size": 10,
            },
        ],
    }
    assert parse_index_payload(data) == index(*ENTRIES)
    assert parse_index_payload(data).to_bytes() == data
    assert read_index(signed(data), TRUSTED, last_serial=3, now=NOW) == index(*ENTRIES)


def entry(index: int, **change: Any) -> list[dict[str, Any]]:
    entries = [e.to_dict() for e in ENTRIES]
    entries[index] = {**entries[index], **change}
    return entries


@pytest.mark.parametrize(
    ("d", "path", "message"),
    [
        (index_dict(bundles=entry(1, sha256="AB" * 32)), "bundles[1].sha256", "not a sha256"),
        (index_dict(bundles=entry(1, size=0)), "bundles[1].size", "must be >= 1, got 0"),
        (
            index_dict(bundles=entry(0, file="bundles/../credit-1.0.0.bundle")),
            "bundles[0].file",
            "must be 'bundles/credit-1.0.0.bundle'",
        ),
        (
            index_dict(bundles=entry(0, name="../x")),
            "bundles[0].file",
            "must be 'bundles/../x-1.0.0.bundle'",  # and no such name is a channel file
        ),
        (index_dict(bundles=entry(1, version="1.0")), "bundles[1].version", "semantic version"),
        (index_dict(bundles=entry(1, extra=1)), "bundles[1]", "unknown key 'extra'"),
        (
            index_dict(bundles=entry(1, version="1.0.0", file="bundles/credit-1.0.0.bundle")),
            "bundles",
            "duplicate name and version 'credit 1.0.0'",
        ),
        (index_dict(serial=0), "serial", "must be >= 1, got 0"),
        (index_dict(expires="2026-12-11"), "expires", "is not an RFC 3339 UTC time"),
        (index_dict(format="edgebundle.channel/2"), "format", "unsupported channel index format"),
    ],
    ids=["sha256", "size", "file", "name", "version", "unknown", "twice", "serial", "time", "fmt"],
)
def test_a_malformed_index_is_refused_naming_the_field(
    d: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ManifestError) as e:
        ChannelIndex.from_dict(d)
    assert e.value.context == path and message in e.value.detail, str(e.value)
    with pytest.raises(ChannelError, match=f"^invalid index\\.json: {re.escape(path)}: "):
        parse_index_payload(json.dumps(d).encode())


def test_an_index_that_could_not_be_read_back_is_not_written() -> None:
    twice = ChannelEntry.of("credit", Version.parse("1.0.0"), b"other bytes")
    with pytest.raises(ManifestError, match=r"duplicate name and version 'credit 1\.0\.0'"):
        index(ENTRIES[0], twice).to_bytes()


def test_an_unsigned_payload_is_never_parsed() -> None:
    # Garbage in the payload: a signature by an untrusted key must be what is refused, before
    # anything reads the payload as JSON.
    forged = Envelope.signed(b"{not json", [Ed25519PrivateKey.generate()], INDEX_CONTEXT)
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        read_index(forged.to_bytes(), TRUSTED, last_serial=0, now=NOW)
    with pytest.raises(ChannelError, match=r"invalid index\.json: index\.json is not valid JSON"):
        read_index(signed(b"{not json"), TRUSTED, last_serial=0, now=NOW)


@pytest.mark.parametrize(
    ("envelope", "fragment"),
    [
        ({"payload": "***", "signatures": []}, "payload: is not standard base64"),
        ({"payload": "e30=", "signatures": []}, "signatures: must hold 1 to 16 signatures"),
        ({"payload": "e30="}, "signatures: missing required key"),
        ({"payload": "e30=", "signatures": [{"keyid": "x"}]}, "signatures[0].keyid: 'x' is not"),
        ({"payload": "e30=", "signatures": [], "x": 1}, "unknown top-level key 'x'"),
    ],
)
def test_a_malformed_envelope_is_a_signature_error(envelope: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SignatureError) as e:
        Envelope.from_bytes(json.dumps(envelope).encode(), "index.json")
    assert str(e.value).startswith("malformed index.json: ") and fragment in str(e.value)


def test_the_envelope_carries_the_payload_bytes_as_they_were_signed() -> None:
    payload = b'{"b": 1,  "a": 2}'  # not canonical: the signature covers these very bytes
    data = signed(payload)
    assert json.loads(data)["payload"] == base64.b64encode(payload).decode()
    envelope = Envelope.from_bytes(data, "index.json")
    assert envelope.verified_payload(TRUSTED, INDEX_CONTEXT) == payload
    assert envelope.to_bytes() == data
