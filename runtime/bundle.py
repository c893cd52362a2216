"""The ``.bundle`` container: a reproducible POSIX ustar file, written and strictly read here.

Members, in this order: ``manifest.json``, ``manifest.sig``, then the payload files in sorted
name order; each a regular file, mode 0644, owner 0:0, one fixed mtime. The reader is our own
(``tarfile`` is lenient by design; this must not be): it accepts only flat regular-file members
in that order, checksummed ustar headers and zero padding, and refuses anything else by name.
Mode, owner and mtime are not checked: nothing is ever extracted with them.

Verification order (DESIGN §4): size cap → container structure → manifest and signature size
caps → a trusted signature over the raw manifest bytes → only then parse the manifest → payload
sizes and hashes → no unlisted members. Nothing is written to disk.

Each check is written once and reports to a :class:`_Problems` sink: on the device
(:func:`open_bundle`) the sink raises the first problem; for ``bundle verify``
(:func:`check_bundle`) it collects all of them.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from edgebundle.runtime.errors import (
    BundleError,
    FormatError,
    IntegrityError,
    ManifestError,
    SignatureError,
)
from edgebundle.runtime.manifest import MEMBER_NAME, RESERVED_FILES, Manifest, parse_manifest

if TYPE_CHECKING:
    from edgebundle.runtime.signing import TrustedKeys

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"

_MiB = 1024 * 1024
_KiB = 1024

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_END_MARKER = 2 * BLOCK
_MAGIC = b"ustar\x0000"  # POSIX magic and version
_GNU_MAGIC = b"ustar  \x00"  # recognised only to refuse it by name
_OCTAL = re.compile(rb"[0-7]+")
# ustar header fields (POSIX.1-1988): name, mode, uid, gid, size, mtime, chksum, typeflag,
# linkname, magic+version, uname, gname, devmajor, devminor, prefix.
_NAME = slice(0, 100)
_MODE = slice(100, 108)
_UID = slice(108, 116)
_GID = slice(116, 124)
_SIZE = slice(124, 136)
_MTIME = slice(136, 148)
_CHKSUM = slice(148, 156)
_TYPEFLAG = slice(156, 157)
_LINKNAME = slice(157, 257)
_MAGIC_FIELD = slice(257, 265)
_PREFIX = slice(345, 500)
_MAX_OCTAL_12 = 8**11 - 1  # 11 digits + NUL: sizes and mtimes below 8 GiB / year 2242
_REGULAR = (b"0", b"\x00")
_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"x": "a PAX extended header",
    b"g": "a PAX global header",
    b"L": "a GNU long name header",
    b"K": "a GNU long link header",
}


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


# --- writing -------------------------------------------------------------------------------


def write_bundle(
    manifest: bytes, signatures: bytes, payload: Mapping[str, bytes], mtime: int
) -> bytes:
    """The bundle bytes: byte-identical for identical arguments, readable by any ustar reader."""
    if not 0 <= mtime <= _MAX_OCTAL_12:
        raise FormatError(f"mtime {mtime} does not fit a ustar header")
    for name in payload:
        problem = _name_problem(name) or (
            "is reserved for the container" if name in RESERVED_FILES else None
        )
        if problem is not None:
            raise FormatError(f"cannot pack member {name!r}: it {problem}")
    members = [(MANIFEST_NAME, manifest), (SIGNATURE_NAME, signatures)]
    members += [(name, payload[name]) for name in sorted(payload)]
    out = bytearray()
    for name, content in members:
        if len(content) > _MAX_OCTAL_12:
            raise FormatError(f"cannot pack member {name!r}: {len(content)} bytes is too large")
        out += _header(name, len(content), mtime)
        out += content
        out += bytes(_padded(len(content)) - len(content))
    out += bytes(_END_MARKER)
    return bytes(out)


def _header(name: str, size: int, mtime: int) -> bytes:
    header = bytearray(BLOCK)
    encoded = name.encode("ascii")
    header[: len(encoded)] = encoded
    header[_MODE] = _octal(0o644, 8)
    header[_UID] = _octal(0, 8)
    header[_GID] = _octal(0, 8)
    header[_SIZE] = _octal(size, 12)
    header[_MTIME] = _octal(mtime, 12)
    header[_TYPEFLAG] = b"0"
    header[_MAGIC_FIELD] = _MAGIC
    # uname, gname, devmajor, devminor and prefix stay NUL: empty.
    header[_CHKSUM] = b"%06o\x00 " % _checksum(header)
    return bytes(header)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _checksum(header: bytes | bytearray) -> int:
    # POSIX: the byte sum of the header with the checksum field counted as eight spaces.
    return sum(header[: _CHKSUM.start]) + 8 * ord(" ") + sum(header[_CHKSUM.stop :])


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a member name, or None. Only flat, plain file names pass."""
    if not name:
        return "has an empty name"
    if name.startswith("/"):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "escapes the bundle directory"
    if "/" in name:
        return "is inside a directory; only top-level files are allowed"
    if not MEMBER_NAME.fullmatch(name):
        return "has an invalid name (allowed: 1-100 letters, digits, '.', '_', '-')"
    return None


# --- reading -------------------------------------------------------------------------------


class _Problems:
    """Where each check reports: the device raises the first problem, verify collects them all."""

    __slots__ = ("found", "raise_first")

    def __init__(self, *, raise_first: bool) -> None:
        self.raise_first = raise_first
        self.found: list[str] = []

    def add(self, error: BundleError) -> None:
        if self.raise_first:
            raise error
        self.found.append(str(error))


@dataclass(frozen=True, slots=True)
class _Header:
    offset: int
    name: str  # for display; validated separately
    block: bytes
    size: int

    @property
    def data_start(self) -> int:
        return self.offset + BLOCK

    @property
    def data_end(self) -> int:
        return self.data_start + self.size


@dataclass(frozen=True, slots=True)
class _Member:
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class _Container:
    members: Mapping[str, _Member]  # in archive order
    complete: bool  # False when a broken header stopped the scan


def _check_bundle_size(data: bytes, limits: Limits, problems: _Problems) -> None:
    if len(data) > limits.max_bundle_bytes:
        cap = limits.max_bundle_bytes
        problems.add(FormatError(f"bundle is {len(data)} bytes, over the {cap}-byte cap"))


def _read_container(data: bytes, limits: Limits, problems: _Problems) -> _Container:
    """Scan headers and record member byte ranges; no member content is interpreted."""
    members: dict[str, _Member] = {}
    if not data:
        problems.add(FormatError("bundle is empty (0 bytes)"))
        return _Container(members, complete=False)
    offset, headers = 0, 0
    while True:
        try:
            header = _next_header(data, offset)
        except FormatError as e:  # nothing after a broken header can be located
            problems.add(e)
            return _Container(members, complete=False)
        if header is None:
            break
        # Refused members count too, so a flood of tiny headers is cut short.
        headers += 1
        if headers > limits.max_members:
            problems.add(FormatError(f"bundle has more than {limits.max_members} members"))
            return _Container(members, complete=False)
        offset = header.data_start + _padded(header.size)
        problem = _member_problem(header, data)
        if problem is None and header.name in members:
            problem = f"duplicate member {header.name!r}"
        if problem is not None:
            problems.add(FormatError(problem))
            continue
        members[header.name] = _Member(header.data_start, header.size)
    _check_end(data, offset, problems)
    _check_order(list(members), problems)
    return _Container(members, complete=True)


def _next_header(data: bytes, offset: int) -> _Header | None:
    """The header at ``offset``, or None at the end-of-archive marker."""
    block = data[offset : offset + BLOCK]
    if not block:
        raise FormatError("bundle ends without an end-of-archive marker (truncated?)")
    if len(block) < BLOCK:
        raise FormatError(f"truncated header at offset {offset} ({len(block)} of {BLOCK} bytes)")
    if block == _ZERO_BLOCK:
        return None
    if block[_MAGIC_FIELD] not in (_MAGIC, _GNU_MAGIC):
        raise FormatError(f"no POSIX ustar header at offset {offset} (not a bundle, or corrupt)")
    if _parse_octal(block[_CHKSUM]) != _checksum(block):
        raise FormatError(f"header checksum mismatch at offset {offset} (corrupt header)")
    name = _display_name(block)
    size = _parse_octal(block[_SIZE])
    if size is None:
        raise FormatError(f"member {name!r} has an invalid size field")
    available = len(data) - offset - BLOCK
    if _padded(size) > available:
        raise FormatError(
            f"member {name!r} needs {_padded(size)} bytes but only {available} remain (truncated?)"
        )
    return _Header(offset=offset, name=name, block=block, size=size)


def _parse_octal(field_bytes: bytes) -> int | None:
    digits = field_bytes.rstrip(b"\x00 ")
    return int(digits, 8) if _OCTAL.fullmatch(digits) else None


def _display_name(block: bytes) -> str:
    name = block[_NAME].split(b"\x00", 1)[0].decode("ascii", "backslashreplace")
    prefix = block[_PREFIX].split(b"\x00", 1)[0].decode("ascii", "backslashreplace")
    return f"{prefix}/{name}" if prefix else name


def _member_problem(header: _Header, data: bytes) -> str | None:
    """Why this member is refused, or None: only plain regular files with flat names pass."""
    block, name = header.block, header.name
    typeflag = block[_TYPEFLAG]
    if typeflag not in _REGULAR:
        kind = _TYPE_NAMES.get(typeflag, f"of unknown type {typeflag!r}")
        return f"member {name!r} is {kind}; only regular files are allowed"
    if block[_MAGIC_FIELD] != _MAGIC:
        return f"member {name!r} is in GNU tar format; only POSIX ustar is allowed"
    if any(block[_PREFIX]):
        return f"member {name!r} uses the ustar prefix field; only top-level files are allowed"
    problem = _name_problem(name)
    if problem is not None:
        return f"member {name!r} {problem}"
    if any(block[_NAME][len(name) :]):
        return f"member {name!r} has bytes hidden after its name"
    if any(block[_LINKNAME]):
        return f"member {name!r} has a link target"
    if any(data[header.data_end : header.data_start + _padded(header.size)]):
        return f"member {name!r} has non-zero padding after its data"
    return None


def _check_end(data: bytes, offset: int, problems: _Problems) -> None:
    if len(data) - offset < _END_MARKER:
        problems.add(FormatError("incomplete end-of-archive marker (truncated?)"))
        return
    garbage = data[offset:].lstrip(b"\x00")
    if garbage:
        position = len(data) - len(garbage)
        problems.add(FormatError(f"trailing data after the end-of-archive marker at {position}"))


def _check_order(names: list[str], problems: _Problems) -> None:
    if not names:
        problems.add(FormatError("bundle has no members"))
        return
    if names[0] != MANIFEST_NAME:
        problems.add(FormatError(f"first member must be {MANIFEST_NAME!r}, not {names[0]!r}"))
    second = names[1] if len(names) > 1 else None
    if second != SIGNATURE_NAME:
        found = "missing" if second is None else f"not {second!r}"
        problems.add(FormatError(f"second member must be {SIGNATURE_NAME!r}, {found}"))
    payload = names[2:]
    for before, after in itertools.pairwise(payload):
        if after < before:
            problems.add(FormatError(f"member {after!r} comes after {before!r}: not sorted"))
            return


def _member_bytes(
    data: bytes, container: _Container, name: str, cap: int, problems: _Problems
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
    signature_bytes: bytes, manifest_bytes: bytes, trusted: TrustedKeys, problems: _Problems
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


def _parse_manifest(manifest_bytes: bytes, problems: _Problems) -> Manifest | None:
    try:
        return parse_manifest(manifest_bytes)
    except ManifestError as e:
        problems.add(e)
        return None


def _check_payload(
    data: bytes, container: _Container, manifest: Manifest, problems: _Problems
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
_SignatureCheck = Callable[[bytes, bytes, _Problems], str | None]


def _verify(
    data: bytes, signed_by: _SignatureCheck, limits: Limits, problems: _Problems
) -> VerifiedBundle | None:
    """Run every check in the design's order; the bundle, or None if any problem was reported."""
    _check_bundle_size(data, limits, problems)
    container = _read_container(data, limits, problems)
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
    bundle = _verify(data, signed_by, limits, _Problems(raise_first=True))
    # A raising sink turns every reported problem into an exception, so None cannot come back.
    assert bundle is not None
    return bundle


def _by_keys(trusted: TrustedKeys) -> _SignatureCheck:
    return lambda signature, manifest, problems: _check_signature(
        signature, manifest, trusted, problems
    )


def check_bundle(data: bytes, trusted: TrustedKeys, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Every problem found, one line each, in verification order; empty means valid."""
    problems = _Problems(raise_first=False)
    _verify(data, _by_keys(trusted), limits, problems)
    return problems.found


def read_members_unverified(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """All members by name after the structural checks only: for ``bundle inspect``, never trust."""
    problems = _Problems(raise_first=True)
    _check_bundle_size(data, limits, problems)
    container = _read_container(data, limits, problems)
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
