"""The key chain's format and its verification, in memory: statements, thresholds, the walk a
device makes from the version it trusts, and what ``--trust`` accepts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.errors import ChannelError, KeyFileError, ManifestError, SignatureError
from edgebundle.runtime.ota.channel import Envelope
from edgebundle.runtime.ota.keychain import (
    KEYS_CONTEXT,
    STATEMENT_FORMAT,
    TRUST_FORMAT,
    KeySet,
    check_fresh,
    load_trust,
    parse_key_set,
    verify_statement,
    walk_chain,
)
from edgebundle.runtime.signing import public_pem

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
LATER = "2027-12-04T12:00:00Z"


def keys(n: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(n)]


def key_set(
    version: int, members: Sequence[Ed25519PrivateKey], threshold: int = 1, expires: str = LATER
) -> KeySet:
    return KeySet(
        version=version,
        threshold=threshold,
        keys=tuple(k.public_key() for k in members),
        expires=None if version == 0 else expires,
    )


def statement(new: KeySet, signers: Sequence[Ed25519PrivateKey]) -> bytes:
    return Envelope.signed(new.to_bytes(STATEMENT_FORMAT), signers, KEYS_CONTEXT).to_bytes()


# --- the format ------------------------------------------------------------------------------


def test_statement_round_trips() -> None:
    original = key_set(3, keys(3), threshold=2)
    again = KeySet.from_dict(original.to_dict(STATEMENT_FORMAT))
    assert again.to_dict(STATEMENT_FORMAT) == original.to_dict(STATEMENT_FORMAT)
    assert again.keyids() == original.keyids() and again.threshold == 2


def test_trust_file_holds_provisioned_keys_without_expiry() -> None:
    provisioned = key_set(0, keys(2))
    data = provisioned.to_bytes(TRUST_FORMAT)
    assert parse_key_set(data, "trust.json", TRUST_FORMAT).keyids() == provisioned.keyids()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold": 3}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"version": 0}, "version"),
        ({"expires": None}, "expires"),
        ({"expires": "tomorrow"}, "expires"),
        ({"keys": []}, "keys"),
        ({"keys": ["AAAA"]}, "keys[0]"),
        ({"keys": [1]}, "keys[0]"),
        ({"format": "edgebundle.keys/1"}, "format"),
    ],
)
def test_statement_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    d = {**key_set(2, keys(2)).to_dict(STATEMENT_FORMAT), **change}
    with pytest.raises(ManifestError) as e:
        KeySet.from_dict(d, "keys/2.json")
    assert e.value.context == f"keys/2.json.{field}"


def test_an_unknown_field_is_refused() -> None:
    d = {**key_set(2, keys(2)).to_dict(STATEMENT_FORMAT), "extra": 1}
    with pytest.raises(ManifestError, match="unknown top-level key 'extra'"):
        KeySet.from_dict(d)


def test_a_key_listed_twice_is_refused() -> None:
    d = key_set(2, keys(1)).to_dict(STATEMENT_FORMAT)
    d["keys"] = d["keys"] * 2
    with pytest.raises(ManifestError, match="lists a key twice"):
        KeySet.from_dict(d)


def test_a_statement_cannot_be_version_zero() -> None:
    with pytest.raises(ManifestError, match="version"):
        key_set(0, keys(1)).to_bytes(STATEMENT_FORMAT)


# --- one step of the chain -------------------------------------------------------------------


def test_a_step_signed_by_the_old_and_the_new_keys_verifies() -> None:
    old, new = keys(1), keys(1)
    step = key_set(1, new)
    adopted = verify_statement(statement(step, old + new), key_set(0, old), 1)
    assert adopted.keyids() == step.keyids()


def test_a_step_without_the_new_keys_signatures_is_refused() -> None:
    """Proof of possession: a set nobody holds the private keys of would lock devices out."""
    old, new = keys(1), keys(1)
    with pytest.raises(SignatureError, match="not signed by its own new keys"):
        verify_statement(statement(key_set(1, new), old), key_set(0, old), 1)


def test_a_step_without_the_old_keys_signatures_is_refused() -> None:
    old, new = keys(1), keys(1)
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        verify_statement(statement(key_set(1, new), new), key_set(0, old), 1)


def test_a_step_out_of_place_is_refused() -> None:
    old, new = keys(1), keys(1)
    with pytest.raises(ChannelError, match="states version 3"):
        verify_statement(statement(key_set(3, new), old + new), key_set(0, old), 1)


def test_thresholds_count_distinct_keys_on_both_sides() -> None:
    old, new = keys(3), keys(3)
    current = key_set(4, old, threshold=2)
    step = key_set(5, new, threshold=2)
    assert verify_statement(statement(step, old[:2] + new[1:]), current, 5).version == 5
    with pytest.raises(SignatureError, match="signed by 1 of the 2 trusted keys required"):
        verify_statement(statement(step, old[:1] + new), current, 5)
    with pytest.raises(SignatureError, match="signed by 1 of the 2 trusted keys required"):
        verify_statement(statement(step, old + new[:1]), current, 5)


# --- the walk --------------------------------------------------------------------------------


def chain(*sets: tuple[KeySet, Sequence[Ed25519PrivateKey]]) -> dict[int, bytes]:
    return {s.version: statement(s, signers) for s, signers in sets}


def test_a_device_follows_two_rotations_in_one_walk() -> None:
    k0, k1, k2 = keys(1), keys(1), keys(1)
    statements = chain((key_set(1, k1), k0 + k1), (key_set(2, k2), k1 + k2))
    newest = walk_chain(key_set(0, k0), statements.get, max_steps=10)
    assert newest.version == 2 and newest.keyids() == key_set(2, k2).keyids()


def test_an_anchored_device_refuses_a_step_its_keys_did_not_sign() -> None:
    k1, k2, attacker = keys(1), keys(1), keys(1)
    statements = chain((key_set(2, attacker), k2 + attacker))
    with pytest.raises(SignatureError):
        walk_chain(key_set(1, k1), statements.get, max_steps=10)


def test_a_provisioned_device_joins_at_the_statement_its_keys_signed() -> None:
    k0, k1, k2 = keys(1), keys(1), keys(1)
    statements = chain((key_set(1, k1), k0 + k1), (key_set(2, k2), k1 + k2))
    newest = walk_chain(key_set(0, k2), statements.get, max_steps=10)
    assert newest.version == 2


def test_a_provisioned_device_whose_keys_signed_nothing_refuses_the_channel() -> None:
    k0, k1, stranger = keys(1), keys(1), keys(1)
    statements = chain((key_set(1, k1), k0 + k1))
    with pytest.raises(SignatureError, match="none of the channel's 1 key statement"):
        walk_chain(key_set(0, stranger), statements.get, max_steps=10)


def test_a_chain_without_end_stops_at_the_cap() -> None:
    k0 = keys(1)

    def endless(version: int) -> bytes:
        return statement(key_set(version, k0), k0)

    with pytest.raises(ChannelError, match="goes on past 5 statements"):
        walk_chain(key_set(0, k0), endless, max_steps=5)


def test_no_chain_leaves_the_provisioned_keys() -> None:
    k0 = key_set(0, keys(1))
    assert walk_chain(k0, lambda version: None, max_steps=10) is k0


def test_an_expired_newest_statement_is_refused() -> None:
    newest = key_set(1, keys(1), expires="2026-12-04T11:59:59Z")
    with pytest.raises(ChannelError, match="expired at 2026-12-04T11:59:59Z"):
        check_fresh(newest, NOW)
    check_fresh(key_set(0, keys(1)), NOW + timedelta(days=10_000))


# --- what --trust accepts --------------------------------------------------------------------


def test_trust_from_public_keys_is_version_zero(tmp_path: Path) -> None:
    members = keys(2)
    paths = []
    for i, key in enumerate(members):
        paths.append(tmp_path / f"{i}.pub")
        paths[-1].write_bytes(public_pem(key.public_key()))
    trust = load_trust(paths)
    assert trust.version == 0 and trust.threshold == 1 and len(trust.keyids()) == 2


def test_trust_from_a_statement_file_keeps_its_version_and_threshold(tmp_path: Path) -> None:
    old, new = keys(1), keys(3)
    path = tmp_path / "7.json"
    path.write_bytes(statement(key_set(7, new, threshold=2), old + new))
    trust = load_trust([path])
    assert (trust.version, trust.threshold) == (7, 2)


def test_trust_from_a_tampered_statement_file_is_refused(tmp_path: Path) -> None:
    new = keys(1)
    doc = json.loads(statement(key_set(7, new), new))
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][::-1]
    path = tmp_path / "7.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="is not a valid key statement"):
        load_trust([path])


def test_trust_mixing_a_statement_and_keys_is_refused(tmp_path: Path) -> None:
    new = keys(1)
    (tmp_path / "1.json").write_bytes(statement(key_set(1, new), new))
    (tmp_path / "a.pub").write_bytes(public_pem(new[0].public_key()))
    with pytest.raises(KeyFileError, match="either public keys"):
        load_trust([tmp_path / "a.pub", tmp_path / "1.json"])
