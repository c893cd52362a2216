from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.errors import KeyFileError, ManifestError, SignatureError
from edgebundle.runtime.signing import (
    MANIFEST_CONTEXT,
    SignatureEntry,
    SignatureFile,
    TrustedKeys,
    keyid,
    load_private_key,
    load_public_key,
    parse_signature_file,
    sign,
    verify,
)

MESSAGE = b'{"name": "fraud-score"}\n'
OTHER_CONTEXT = b"edgebundle/channel/v1\x00"


def kid(key: Ed25519PrivateKey) -> str:
    return keyid(key.public_key())


def test_keyid_is_sha256_of_the_raw_public_key(signing_key: Ed25519PrivateKey) -> None:
    raw = signing_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert kid(signing_key) == hashlib.sha256(raw).hexdigest()


def test_sign_verify_round_trip(signing_key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    entry = sign(signing_key, MANIFEST_CONTEXT, MESSAGE)
    assert entry.keyid == kid(signing_key)
    assert len(entry.signature) == 64
    assert verify([entry], trusted, MANIFEST_CONTEXT, MESSAGE) == entry.keyid


def test_signature_by_untrusted_key_only(
    other_key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    entry = sign(other_key, MANIFEST_CONTEXT, MESSAGE)
    with pytest.raises(SignatureError) as excinfo:
        verify([entry], trusted, MANIFEST_CONTEXT, MESSAGE)
    assert str(excinfo.value) == (
        f"no valid signature by a trusted key (signed by: {kid(other_key)})"
    )


def test_wrong_key_claiming_a_trusted_keyid(
    signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    forged = SignatureEntry(
        keyid=kid(signing_key), sig=sign(other_key, MANIFEST_CONTEXT, MESSAGE).sig
    )
    with pytest.raises(
        SignatureError, match=f"invalid signature by trusted key {kid(signing_key)}"
    ):
        verify([forged], trusted, MANIFEST_CONTEXT, MESSAGE)


def test_tampered_message(signing_key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    entry = sign(signing_key, MANIFEST_CONTEXT, MESSAGE)
    with pytest.raises(SignatureError, match="invalid signature by trusted key"):
        verify([entry], trusted, MANIFEST_CONTEXT, MESSAGE.replace(b"fraud", b"frauD"))


def test_signature_for_another_context_does_not_verify(
    signing_key: Ed25519PrivateKey, trusted: TrustedKeys
) -> None:
    entry = sign(signing_key, OTHER_CONTEXT, MESSAGE)
    with pytest.raises(SignatureError):
        verify([entry], trusted, MANIFEST_CONTEXT, MESSAGE)
    assert verify([entry], trusted, OTHER_CONTEXT, MESSAGE) == entry.keyid


def test_no_signatures(trusted: TrustedKeys) -> None:
    with pytest.raises(SignatureError, match=r"\(signed by: nobody\)"):
        verify([], trusted, MANIFEST_CONTEXT, MESSAGE)


def test_one_good_trusted_signature_is_enough(
    signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    both = TrustedKeys([signing_key.public_key(), other_key.public_key()])
    bad = sign(other_key, MANIFEST_CONTEXT, b"something else")
    untrusted = sign(Ed25519PrivateKey.generate(), MANIFEST_CONTEXT, MESSAGE)
    good = sign(signing_key, MANIFEST_CONTEXT, MESSAGE)
    assert verify([untrusted, bad, good], both, MANIFEST_CONTEXT, MESSAGE) == good.keyid


@pytest.mark.parametrize("context", [b"", b"no-nul", b"two\x00nuls\x00"])
def test_context_must_end_in_one_nul(signing_key: Ed25519PrivateKey, context: bytes) -> None:
    with pytest.raises(ValueError, match="single NUL"):
        sign(signing_key, context, MESSAGE)


# --- manifest.sig ------------------------------------------------------------------------


def test_signature_file_round_trip(
    signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    sig_file = SignatureFile(
        signatures=(
            sign(signing_key, MANIFEST_CONTEXT, MESSAGE),
            sign(other_key, MANIFEST_CONTEXT, MESSAGE),
        )
    )
    data = sig_file.to_bytes()
    assert parse_signature_file(data) == sig_file
    assert parse_signature_file(data).to_bytes() == data
    assert SignatureFile.from_dict(sig_file.to_dict()) == sig_file
    assert json.loads(data) == sig_file.to_dict()
    assert data.endswith(b"\n") and b'  "signatures": [' in data


def _entry(signing_key: Ed25519PrivateKey) -> dict[str, str]:
    return sign(signing_key, MANIFEST_CONTEXT, MESSAGE).to_dict()


def _malformed_cases(key: Ed25519PrivateKey) -> list[tuple[bytes, str]]:
    entry = _entry(key)
    raw_sig = base64.b64decode(entry["sig"])

    def doc(*entries: object, **extra: object) -> bytes:
        return json.dumps({"signatures": list(entries), **extra}).encode()

    # Flip the two low padding bits of the last base64 digit: decodes the same, not canonical.
    last = entry["sig"][-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = entry["sig"][:-3] + alphabet[alphabet.index(last) ^ 1] + "=="
    return [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"signatures": [], "signatures": []}', "duplicate key 'signatures'"),
        (doc(entry, extra=1), "unknown top-level key 'extra'"),
        (b"{}", "signatures: missing required key"),
        (doc(), "must hold 1 to 16 signatures, got 0"),
        (doc(*[_entry(Ed25519PrivateKey.generate()) for _ in range(17)]), "got 17"),
        (doc(entry, entry), "two signatures by the same key"),
        (doc("sig"), "signatures[0]: expected an object, got a string"),
        (doc({**entry, "keyid": entry["keyid"].upper()}), "is not a keyid"),
        (doc({**entry, "keyid": 7}), "signatures[0].keyid: expected a string"),
        (doc({"keyid": entry["keyid"]}), "signatures[0].sig: missing required key"),
        (doc({**entry, "sig": "***"}), "not standard base64"),
        (doc({**entry, "sig": base64.b64encode(raw_sig[:63]).decode()}), "64-byte"),
        (doc({**entry, "sig": base64.urlsafe_b64encode(raw_sig + b"\xff").decode()}), "base64"),
        (doc({**entry, "sig": entry["sig"].rstrip("=")}), "base64"),
        (doc({**entry, "sig": sloppy}), "canonical"),
    ]


def test_malformed_signature_files(signing_key: Ed25519PrivateKey) -> None:
    for data, fragment in _malformed_cases(signing_key):
        with pytest.raises(SignatureError) as excinfo:
            parse_signature_file(data)
        message = str(excinfo.value)
        assert message.startswith("malformed manifest.sig: "), message
        assert fragment in message, (fragment, message)
        assert "\n" not in message


def test_signature_entry_validates_on_construction() -> None:
    with pytest.raises(ManifestError, match="is not a keyid"):
        SignatureEntry(keyid="abc", sig=base64.b64encode(bytes(64)).decode())


# --- key files ---------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _private_pem(key: Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_load_public_key(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    path = _write(tmp_path / "k.pub", _public_pem(signing_key))
    assert keyid(load_public_key(path)) == kid(signing_key)


def test_load_public_key_errors(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases = [
        (tmp_path / "missing.pub", "public key file not found"),
        (_write(tmp_path / "text.pub", b"hello"), "is not a PEM public key"),
        (_write(tmp_path / "priv.pub", _private_pem(signing_key)), "holds a private key"),
        (_write(tmp_path / "ec.pub", ec_pub), "is not an Ed25519 public key (found EC"),
        (tmp_path, "cannot read public key file"),
    ]
    for path, fragment in cases:
        with pytest.raises(KeyFileError) as excinfo:
            load_public_key(path)
        assert fragment in str(excinfo.value)


def test_load_private_key_plain_and_encrypted(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    plain = _write(tmp_path / "plain.key", _private_pem(signing_key))
    encrypted = _write(tmp_path / "enc.key", _private_pem(signing_key, b"correct horse"))
    assert keyid(load_private_key(plain, None).public_key()) == kid(signing_key)
    assert keyid(load_private_key(encrypted, b"correct horse").public_key()) == kid(signing_key)


def test_load_private_key_errors(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    plain = _write(tmp_path / "plain.key", _private_pem(signing_key))
    encrypted = _write(tmp_path / "enc.key", _private_pem(signing_key, b"correct horse"))
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    corrupt = _private_pem(signing_key).replace(b"MC4CAQAw", b"MC4CAQAx")
    cases: list[tuple[Path, bytes | None, str]] = [
        (encrypted, b"wrong", f"wrong passphrase for {encrypted}"),
        (encrypted, None, "is encrypted; a passphrase is required"),
        (plain, b"x", "is not encrypted, but a passphrase was given"),
        (tmp_path / "missing.key", None, "private key file not found"),
        (_write(tmp_path / "pub.key", _public_pem(signing_key)), None, "not a PKCS8 PEM"),
        (_write(tmp_path / "ec.key", ec_key), None, "not an Ed25519 private key (found EC"),
        (_write(tmp_path / "corrupt.key", corrupt), None, "not a valid PKCS8 PEM private key"),
    ]
    for path, passphrase, fragment in cases:
        with pytest.raises(KeyFileError) as excinfo:
            load_private_key(path, passphrase)
        assert fragment in str(excinfo.value), (path, str(excinfo.value))


def test_trusted_keys_from_paths(
    tmp_path: Path, signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    a = _write(tmp_path / "a.pub", _public_pem(signing_key))
    b = _write(tmp_path / "b.pub", _public_pem(other_key))
    trusted = TrustedKeys.from_paths([a, b, a])
    assert sorted(trusted) == sorted([kid(signing_key), kid(other_key)])
    assert len(trusted) == 2 and kid(signing_key) in trusted
    assert "TrustedKeys([" in repr(trusted)


def test_trusted_keys_refuse_an_empty_set() -> None:
    with pytest.raises(KeyFileError, match="no trusted public keys"):
        TrustedKeys.from_paths([])
