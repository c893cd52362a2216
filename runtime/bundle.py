"""Verifying a ``.bundle``: the only way to a ``VerifiedBundle``.

Verification order (see the README's "Bundle format"): size cap → container structure
(``runtime.container``) → manifest and signature size caps → a trusted signature over the raw
manifest bytes → only then parse the manifest → payload sizes and hashes → no unlisted members.
Nothing is written to disk.

Each check reports to a ``Problems`` sink: on the device (:func:`open_bundle`) the sink raises
the first problem; for ``bundle verify`` (:func:`check_bundle`) it collects all of them.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from edgebundle.runtime.container import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Container,
    Problems,
    read_container,
)
from edgebundle.runtime.errors import (
    BundleError,
    FormatError,
    IntegrityError,
    ManifestError,
    SignatureError,
)
from edgebundle.runtime.manifest import RESERVED_FILES, Manifest, parse_manifest

if TYPE_CHECKING:
    from edgebundle.runtime.signing import TrustedKeys


_MiB = 1024 * 1024
_KiB = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Byte and count caps applied before anything is parsed.

    The defaults fit the largest model we expect (a 1000-tree float model is ~5 MB; the
    onnxmltools form of it ~13 MB) with a wide margin, yet keep a hostile file from exhausting
    a 256 MB device. A manifest for 10,000 features is ~600 KB; a full ``manifest.sig`` (16
    signatures) ~3 KB. A bundle has five members today (manifest, signature, model, selftest,
    stats). Devices with less RAM should lower ``max_bundle_bytes``.
    """

    max_bundle_bytes: int = 256 * _MiB
    max_manifest_bytes: int = 1 * _MiB
    max_signature_bytes: int = 64 * _KiB
    max_members: int = 16


DEFAULT_LIMITS = Limits()

# Proof of origin for VerifiedBundle: only this module holds it.
_SEAL = object()


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedBundle:
    """A bundle whose signature, manifest and payload all checked out. Made only by
    ``open_bundle`` (and ``open_installed``, for bytes pinned after ``open_bundle``)."""

    manifest: Manifest
    manifest_bytes: bytes  # exactly the signed bytes
    files: Mapping[str, bytes]  # payload members only, read-only
    keyid: str  # the trusted key whose signature verified
    _seal: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL:
            raise TypeError("VerifiedBundle is created only by runtime.bundle.open_bundle")


def _check_bundle_size(data: bytes, limits: Limits, problems: Problems) -> None:
    if len(data) > limits.max_bundle_bytes:
        cap = limits.max_bundle_bytes
        problems.add(FormatError(f"bundle is {len(data)} bytes, over the {cap}-byte cap"))


def _member_bytes(
    data: bytes, container: Container, name: str, cap: int, problems: Problems
) -> bytes | None:
    """A container member's bytes within its cap; None if absent (already reported) or too big."""
    member = container.members.get(name)
    if member is None:
        return None
    if member.size > cap:
        problems.add(FormatError(f"{name} is {member.size} bytes, over the {cap}-byte cap"))
        return None
    return data[member.start : member.start + member.size]


def _check_signature(
    signature_bytes: bytes, manifest_bytes: bytes, trusted: TrustedKeys, problems: Problems
) -> str | None:
    """The keyid of the trusted key that signed the exact manifest bytes, or None."""
    # Imported here: a caller holding TrustedKeys has loaded cryptography already, and one
    # loading installed bundles (open_installed) never needs it (~10 MB resident).
    from edgebundle.runtime.signing import MANIFEST_CONTEXT, parse_signature_file, verify

    try:
        signatures = parse_signature_file(signature_bytes, SIGNATURE_NAME)
        return verify(signatures.signatures, trusted, MANIFEST_CONTEXT, manifest_bytes)
    except SignatureError as e:
        problems.add(e)
        return None


def _parse_manifest(manifest_bytes: bytes, problems: Problems) -> Manifest | None:
    try:
        return parse_manifest(manifest_bytes)
    except ManifestError as e:
        problems.add(e)
        return None


def _check_payload(
    data: bytes, container: Container, manifest: Manifest, problems: Problems
) -> dict[str, bytes]:
    """The payload files whose size and sha256 match the manifest; reports every mismatch."""
    files: dict[str, bytes] = {}
    view = memoryview(data)
    for name, entry in manifest.files.items():
        member = container.members.get(name)
        if member is None:
            problems.add(IntegrityError(f"{name}: listed in the manifest but not in the bundle"))
            continue
        if member.size != entry.size:
            problems.add(
                IntegrityError(f"{name}: size is {member.size} bytes, manifest says {entry.size}")
            )
            continue
        content = view[member.start : member.start + member.size]
        digest = hashlib.sha256(content).hexdigest()
        if digest != entry.sha256:
            problems.add(
                IntegrityError(f"{name}: sha256 is {digest}, manifest says {entry.sha256}")
            )
            continue
        files[name] = bytes(content)
    for name in container.members:
        if name not in manifest.files and name not in RESERVED_FILES:
            problems.add(FormatError(f"unlisted member {name!r}"))
    return files


# How the signature is settled: by trusted keys, or by the store's pin (open_installed).
_SignatureCheck = Callable[[bytes, bytes, Problems], str | None]


def _verify(
    data: bytes, signed_by: _SignatureCheck, limits: Limits, problems: Problems
) -> VerifiedBundle | None:
    """Run every check in the design's order; the bundle, or None if any problem was reported."""
    _check_bundle_size(data, limits, problems)
    container = read_container(data, limits.max_members, problems)
    manifest_bytes = _member_bytes(
        data, container, MANIFEST_NAME, limits.max_manifest_bytes, problems
    )
    signature_bytes = _member_bytes(
        data, container, SIGNATURE_NAME, limits.max_signature_bytes, problems
    )
    if manifest_bytes is None:
        return None
    keyid = None
    if signature_bytes is not None:
        keyid = signed_by(signature_bytes, manifest_bytes, problems)
    # Reached with an unverified manifest only when collecting (the device raised already):
    # the offline report still wants to know what else is wrong.
    manifest = _parse_manifest(manifest_bytes, problems)
    if manifest is None or not container.complete:
        return None
    files = _check_payload(data, container, manifest, problems)
    if keyid is None or problems.found:
        return None
    return VerifiedBundle(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        files=MappingProxyType(files),
        keyid=keyid,
        _seal=_SEAL,
    )


def open_bundle(
    data: bytes, trusted: TrustedKeys, limits: Limits = DEFAULT_LIMITS
) -> VerifiedBundle:
    """Verify ``data`` completely, raising the first problem (a ``BundleError`` subclass)."""
    return _raising(data, _by_keys(trusted), limits)


def open_installed(
    data: bytes, sha256: str, keyid: str, limits: Limits = DEFAULT_LIMITS
) -> VerifiedBundle:
    """A bundle the store verified completely at install (``open_bundle``, signed by
    ``keyid``), loaded again from the store: ``data`` must hash to the ``sha256`` recorded then,
    and every check but the signature runs again. The signature is not: the trusted keys live
    in the same store directory as the pin, so checking it again would guard against nobody
    the pin does not, and it would cost a server cryptography's ~10 MB of resident memory."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise IntegrityError(f"bundle sha256 is {digest}, the store recorded {sha256}")
    return _raising(data, lambda signature, manifest, problems: keyid, limits)


def _raising(data: bytes, signed_by: _SignatureCheck, limits: Limits) -> VerifiedBundle:
    bundle = _verify(data, signed_by, limits, Problems(raise_first=True))
    # A raising sink turns every reported problem into an exception, so None cannot come back.
    assert bundle is not None
    return bundle


def _by_keys(trusted: TrustedKeys) -> _SignatureCheck:
    return lambda signature, manifest, problems: _check_signature(
        signature, manifest, trusted, problems
    )


def check_bundle(data: bytes, trusted: TrustedKeys, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Every problem found, one line each, in verification order; empty means valid."""
    problems = Problems(raise_first=False)
    _verify(data, _by_keys(trusted), limits, problems)
    return problems.found


def read_members_unverified(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """All members by name after the structural checks only: for ``bundle inspect``, never trust."""
    problems = Problems(raise_first=True)
    _check_bundle_size(data, limits, problems)
    container = read_container(data, limits.max_members, problems)
    return {
        name: data[member.start : member.start + member.size]
        for name, member in container.members.items()
    }


def read_bundle_file(path: Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a bundle file, refusing non-regular files and files over the size cap."""
    cap = limits.max_bundle_bytes
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise FormatError(f"{path} is not a regular file")
        if info.st_size > cap:
            raise FormatError(f"{path} is {info.st_size} bytes, over the {cap}-byte bundle cap")
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > cap:  # the file grew after stat()
        raise FormatError(f"{path} is over the {cap}-byte bundle cap")
    return data
