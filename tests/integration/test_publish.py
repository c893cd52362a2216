"""`bundle publish` / `bundle rotate-keys` and the device-side checks of what they write."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgebundle.builder.publish import parse_duration
from edgebundle.runtime.errors import BundleError, ChannelError, RollbackError, SignatureError
from edgebundle.runtime.ota.channel import INDEX_CONTEXT, ChannelIndex, Envelope, read_index
from edgebundle.runtime.ota.keychain import load_trust, verify_statement
from edgebundle.runtime.signing import TrustedKeys
from tests.conftest import KeyFiles
from tests.support.xgbmodels import Trained, run, train

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train("reg:squarederror", tmp_path_factory.mktemp("model"), rounds=5)


def build(trained: Trained, keys: KeyFiles, out: Path, version: str, *extra: str) -> Path:
    proc = run(
        "bundle",
        [
            "build",
            str(trained.path),
            "--name",
            "demand",
            "--version",
            version,
            "--key",
            str(keys.private),
            "--out",
            str(out),
            *extra,
        ],
    )
    assert proc.returncode == 0, proc.stderr
    return out / f"demand-{version}.bundle"


def publish(bundle: Path, channel: Path, keys: KeyFiles, *extra: str) -> Any:
    return run(
        "bundle",
        ["publish", str(bundle), "--channel", str(channel), "--key", str(keys.private), *extra],
    )


def index_of(channel: Path, keys: KeyFiles, last_serial: int = 0) -> ChannelIndex:
    return read_index(
        (channel / "index.json").read_bytes(),
        TrustedKeys.from_paths([keys.public]),
        last_serial=last_serial,
        now=NOW,
    )


def snapshot(channel: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(channel)): p.read_bytes()
        for p in sorted(channel.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_publish_two_versions(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    v1 = build(trained, keys, tmp_path, "1.0.0")
    assert publish(v1, channel, keys).returncode == 0
    v2 = build(trained, keys, tmp_path, "1.1.0", "--precision", "float")
    assert publish(v2, channel, keys).returncode == 0
    index = index_of(channel, keys)
    assert index.serial == 2
    assert [str(e.version) for e in index.bundles] == ["1.0.0", "1.1.0"]
    for entry, bundle in zip(index.bundles, (v1, v2), strict=True):
        data = (channel / entry.file).read_bytes()
        assert data == bundle.read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)


def test_republishing_same_bundle_only_bumps_serial(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    channel = tmp_path / "channel"
    v1 = build(trained, keys, tmp_path, "1.0.0")
    publish(v1, channel, keys)
    publish(v1, channel, keys)
    index = index_of(channel, keys)
    assert index.serial == 2 and len(index.bundles) == 1


def test_same_version_other_content_is_refused(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    channel = tmp_path / "channel"
    publish(build(trained, keys, tmp_path / "a", "1.0.0"), channel, keys)
    before = snapshot(channel)
    other = build(trained, keys, tmp_path / "b", "1.0.0", "--precision", "float")
    proc = publish(other, channel, keys)
    assert proc.returncode == 1 and "other content" in proc.stderr
    assert snapshot(channel) == before


def test_bundle_signed_by_another_key_needs_trust(
    trained: Trained, keys: KeyFiles, other_keys: KeyFiles, tmp_path: Path
) -> None:
    channel = tmp_path / "channel"
    bundle = build(trained, other_keys, tmp_path, "1.0.0")
    refused = publish(bundle, channel, keys)
    assert refused.returncode == 1 and "trusted" in refused.stderr
    assert not (channel / "index.json").exists()
    assert publish(bundle, channel, keys, "--trust", str(other_keys.public)).returncode == 0


def test_refresh_extends_expiry(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    publish(build(trained, keys, tmp_path, "1.0.0"), channel, keys, "--expires", "1h")
    first = index_of(channel, keys)
    proc = run(
        "bundle",
        [
            "publish",
            "--refresh",
            "--channel",
            str(channel),
            "--key",
            str(keys.private),
            "--expires",
            "90d",
        ],
    )
    assert proc.returncode == 0, proc.stderr
    second = index_of(channel, keys)
    assert second.serial == first.serial + 1 and second.bundles == first.bundles
    assert second.expires_at() - first.expires_at() > timedelta(days=89)


def test_refresh_without_index_is_an_error(keys: KeyFiles, tmp_path: Path) -> None:
    proc = run(
        "bundle", ["publish", "--refresh", "--channel", str(tmp_path), "--key", str(keys.private)]
    )
    assert proc.returncode == 1 and "publish a bundle first" in proc.stderr


# --- what a device checks (read_index), one test per attack -----------------------------


@pytest.fixture
def channel(trained: Trained, keys: KeyFiles, tmp_path: Path) -> Path:
    channel = tmp_path / "channel"
    publish(build(trained, keys, tmp_path, "1.0.0"), channel, keys)
    return channel


def test_index_with_tampered_payload(channel: Path, keys: KeyFiles) -> None:
    doc = json.loads((channel / "index.json").read_bytes())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["bundles"][0]["sha256"] = "0" * 64
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(SignatureError, match="no valid signature"):
        read_index(
            json.dumps(doc).encode(), TrustedKeys.from_paths([keys.public]), last_serial=0, now=NOW
        )


def test_index_signed_by_unknown_key(channel: Path, other_keys: KeyFiles) -> None:
    with pytest.raises(SignatureError):
        read_index(
            (channel / "index.json").read_bytes(),
            TrustedKeys.from_paths([other_keys.public]),
            last_serial=0,
            now=NOW,
        )


def test_unsigned_index(channel: Path, keys: KeyFiles) -> None:
    doc = json.loads((channel / "index.json").read_bytes())
    doc["signatures"] = []
    with pytest.raises(SignatureError, match="malformed"):
        read_index(
            json.dumps(doc).encode(), TrustedKeys.from_paths([keys.public]), last_serial=0, now=NOW
        )


def test_replayed_older_index(channel: Path, keys: KeyFiles) -> None:
    with pytest.raises(RollbackError, match="replayed"):
        index_of(channel, keys, last_serial=2)


def test_expired_index(channel: Path, keys: KeyFiles) -> None:
    data = (channel / "index.json").read_bytes()
    trusted = TrustedKeys.from_paths([keys.public])
    with pytest.raises(ChannelError, match="expired"):
        read_index(data, trusted, last_serial=0, now=NOW + timedelta(days=10_000))


def test_index_signature_does_not_verify_as_another_document(channel: Path, keys: KeyFiles) -> None:
    envelope = Envelope.from_bytes((channel / "index.json").read_bytes(), "index.json")
    trusted = TrustedKeys.from_paths([keys.public])
    assert envelope.verified_payload(trusted, INDEX_CONTEXT)
    with pytest.raises(SignatureError):
        envelope.verified_payload(trusted, b"edgebundle/manifest/v1\x00")


def rotate(channel: Path, signer: KeyFiles, new: KeyFiles, *extra: str) -> Any:
    return run(
        "bundle",
        [
            "rotate-keys",
            "--channel",
            str(channel),
            "--key",
            str(signer.private),
            "--new-key",
            str(new.private),
            *extra,
        ],
    )


def test_key_rotation_writes_the_next_statement_of_the_chain(
    channel: Path, keys: KeyFiles, other_keys: KeyFiles
) -> None:
    proc = rotate(channel, keys, other_keys, "--expires", "90d")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{channel}/keys/1.json: key set version 1: 1 of 1 key(s)")
    provisioned = load_trust([keys.public])
    first = verify_statement((channel / "keys" / "1.json").read_bytes(), provisioned, 1)
    assert first.keyids() == load_trust([other_keys.public]).keyids()
    expires = first.expires_at()
    assert expires is not None
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(days=90))) < timedelta(minutes=5)
    # the index moved with the keys: valid for devices before and after they adopt keys/1.json
    data = (channel / "index.json").read_bytes()
    for trusted in (provisioned, first):
        read_index(data, trusted.trusted(), last_serial=0, now=NOW)


def test_key_rotations_chain_on(channel: Path, keys: KeyFiles, other_keys: KeyFiles) -> None:
    assert rotate(channel, keys, other_keys).returncode == 0
    assert rotate(channel, other_keys, keys).returncode == 0
    first = verify_statement(
        (channel / "keys" / "1.json").read_bytes(), load_trust([keys.public]), 1
    )
    second = verify_statement((channel / "keys" / "2.json").read_bytes(), first, 2)
    assert second.keyids() == load_trust([keys.public]).keyids()


def test_key_rotation_by_a_key_devices_do_not_trust_writes_nothing(
    channel: Path, keys: KeyFiles, other_keys: KeyFiles
) -> None:
    before = sorted(p.name for p in channel.rglob("*"))
    proc = rotate(channel, other_keys, keys)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "the key devices trust now" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in channel.rglob("*")) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(seconds=3600)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "1w", "-1d", "1.5h", "d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(BundleError):
        parse_duration(text)
