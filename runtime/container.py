"""The ``.bundle`` container: a reproducible POSIX ustar file, written and strictly read here.

Members, in this order: ``manifest.json``, ``manifest.sig``, then the payload files in sorted
name order; each a regular file, mode 0644, owner 0:0, one fixed mtime. The reader is our own
(``tarfile`` is lenient by design; this must not be): it accepts only flat regular-file members
in that order, checksummed ustar headers and zero padding, and refuses anything else by name.
Mode, owner and mtime are not checked: nothing is ever extracted with them. What the members
hold is ``runtime.bundle``'s to verify.

Each check is written once and reports to a :class:`Problems` sink: on the device the sink
raises the first problem; for ``bundle verify`` it collects all of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgebundle.runtime.errors import BundleError, FormatError
from edgebundle.runtime.manifest import MEMBER_NAME, RESERVED_FILES

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
END_MARKER = 2 * BLOCK
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
    out += bytes(END_MARKER)
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


class Problems:
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
class Member:
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class Container:
    members: Mapping[str, Member]  # in archive order
    complete: bool  # False when a broken header stopped the scan


def read_container(data: bytes, max_members: int, problems: Problems) -> Container:
    """Scan headers and record member byte ranges; no member content is interpreted."""
    members: dict[str, Member] = {}
    if not data:
        problems.add(FormatError("bundle is empty (0 bytes)"))
        return Container(members, complete=False)
    offset, headers = 0, 0
    while True:
        try:
            header = _next_header(data, offset)
        except FormatError as e:  # nothing after a broken header can be located
            problems.add(e)
            return Container(members, complete=False)
        if header is None:
            break
        # Refused members count too, so a flood of tiny headers is cut short.
        headers += 1
        if headers > max_members:
            problems.add(FormatError(f"bundle has more than {max_members} members"))
            return Container(members, complete=False)
        offset = header.data_start + _padded(header.size)
        problem = _member_problem(header, data)
        if problem is None and header.name in members:
            problem = f"duplicate member {header.name!r}"
        if problem is not None:
            problems.add(FormatError(problem))
            continue
        members[header.name] = Member(header.data_start, header.size)
    _check_end(data, offset, problems)
    _check_order(list(members), problems)
    return Container(members, complete=True)


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


def _check_end(data: bytes, offset: int, problems: Problems) -> None:
    if len(data) - offset < END_MARKER:
        problems.add(FormatError("incomplete end-of-archive marker (truncated?)"))
        return
    garbage = data[offset:].lstrip(b"\x00")
    if garbage:
        position = len(data) - len(garbage)
        problems.add(FormatError(f"trailing data after the end-of-archive marker at {position}"))


def _check_order(names: list[str], problems: Problems) -> None:
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
