"""Create the Ed25519 signing key pair on the workstation.

The private key file is created with mode 0600 from its first byte, and neither file is ever
overwritten: a lost or replaced signing key cannot be undone on a fleet.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgebundle.runtime.errors import KeyFileError
from edgebundle.runtime.signing import load_private_key, load_public_key

PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"


def generate_keypair(out_dir: Path, passphrase: bytes | None) -> tuple[Path, Path]:
    """Write ``signing.key`` (PKCS8 PEM, 0600) and ``signing.pub`` (PEM, 0644) into ``out_dir``.

    Refuses, writing nothing, if either file exists. Returns (private key path, public key path).
    """
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"refusing to overwrite existing {path}")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        create_new(private_path, private_pem, 0o600)
        try:
            create_new(public_path, public_pem, 0o644)
        except BaseException:
            # Only reached if signing.pub appeared after the check above: keep no half pair.
            private_path.unlink()
            raise
    except OSError as e:
        raise KeyFileError(f"cannot write key pair to {out_dir}: {e.strerror}") from None
    return private_path, public_path


def _encryption(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    if passphrase is None:
        return serialization.NoEncryption()
    if not passphrase:
        raise KeyFileError("the passphrase is empty; give none for an unencrypted key")
    return serialization.BestAvailableEncryption(passphrase)


def create_new(path: Path, data: bytes, mode: int) -> None:
    """Durably create ``path`` holding ``data``, failing if it exists (even if created meanwhile).

    The bytes go to a temporary sibling first, so ``path`` never exists half-written; ``os.link``
    then publishes it and, unlike ``rename``, refuses to replace a file that appeared meanwhile.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            # The umask may have narrowed a 0644 request; the mode we document is exact.
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise KeyFileError(f"refusing to overwrite existing {path}") from None
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_any_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey | Ed25519PublicKey:
    """A private key if ``path`` holds one (the passphrase applies only if it is encrypted),
    else a public key."""
    try:
        head = path.read_bytes()[:64]
    except OSError:
        return load_public_key(path)  # which reports the missing or unreadable file
    if b"PRIVATE KEY-----" not in head:
        return load_public_key(path)
    encrypted = b"ENCRYPTED PRIVATE KEY" in head
    return load_private_key(path, passphrase if encrypted else None)
