"""The container: reproducible writing, then one test per way of breaking a real signed bundle."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.bundle import (
    Limits,
    VerifiedBundle,
    check_bundle,
    open_bundle,
    read_bundle_file,
    read_members_unverified,
)
from edgebundle.runtime.container import BLOCK, write_bundle
from edgebundle.runtime.errors import (
    BundleError,
    FormatError,
    IntegrityError,
    ManifestError,
    SignatureError,
)
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.signing import TrustedKeys, keyid

BundleFactory = Callable[..., bytes]
END_MARKER = 2 * BLOCK
MEMBERS = ["manifest.json", "manifest.sig", "model.onnx", "selftest.json", "stats.json"]


def expect_refused(
    error: type[BundleError],
    fragment: str,
    data: bytes,
    trusted: TrustedKeys,
    limits: Limits | None = None,
) -> str:
    """Assert open_bundle raises exactly ``error`` with ``fragment`` in a one-line message."""
    with pytest.raises(BundleError) as excinfo:
        open_bundle(data, trusted, limits or Limits())
    message = str(excinfo.value)
    assert type(excinfo.value) is error, message
    assert fragment in message, message
    assert "\n" not in message
    return message


def info(
    name: str, content: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: Any
) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.size = len(content)
    member.type = kind
    member.mode = 0o644
    for key, value in fields.items():
        setattr(member, key, value)
    return member, content


def tar_bytes(
    members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.USTAR_FORMAT
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for member, content in members:
            tar.addfile(member, io.BytesIO(content) if member.isreg() else None)
    return buffer.getvalue()


def append(
    bundle: bytes, *members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.USTAR_FORMAT
) -> bytes:
    """The bundle with members added after its last one (tarfile writes the new end marker)."""
    assert bundle.endswith(bytes(END_MARKER))
    return bundle[:-END_MARKER] + tar_bytes(list(members), fmt)


def members_of(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {member.name: member for member in tar.getmembers()}


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def tar_of_parts(parts: list[tuple[str, bytes]]) -> bytes:
    return tar_bytes([info(name, content) for name, content in parts])


def parts_of(data: bytes) -> dict[str, bytes]:
    return read_members_unverified(data)


# --- the valid bundle ------------------------------------------------------------------------


def test_open_valid_bundle(
    make_bundle: BundleFactory,
    trusted: TrustedKeys,
    signing_key: Ed25519PrivateKey,
    payload: dict[str, bytes],
    manifest_dict: dict[str, Any],
    manifest_bytes: bytes,
) -> None:
    bundle = open_bundle(make_bundle(), trusted)
    assert bundle.manifest == Manifest.from_dict(manifest_dict)
    assert bundle.manifest_bytes == manifest_bytes
    assert dict(bundle.files) == payload
    assert bundle.keyid == keyid(signing_key.public_key())
    assert check_bundle(make_bundle(), trusted, Limits()) == []


def test_verified_bundle_is_only_made_by_open_bundle(
    make_bundle: BundleFactory, trusted: TrustedKeys
) -> None:
    bundle = open_bundle(make_bundle(), trusted)
    with pytest.raises(TypeError, match=r"only by runtime\.bundle\.open_bundle"):
        VerifiedBundle(manifest=bundle.manifest, manifest_bytes=b"", files={}, keyid=bundle.keyid)
    with pytest.raises(TypeError):
        bundle.files["model.onnx"] = b"evil"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.keyid = "x"  # type: ignore[misc]


def test_reproducible_bytes(make_bundle: BundleFactory, payload: dict[str, bytes]) -> None:
    first = make_bundle()
    assert make_bundle() == first
    assert make_bundle(files=dict(reversed(list(payload.items())))) == first
    assert make_bundle(mtime=1700000000) != first
    assert len(first) % BLOCK == 0


def test_readable_by_tarfile(make_bundle: BundleFactory, payload: dict[str, bytes]) -> None:
    data = make_bundle(mtime=1700000000)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == MEMBERS
        for member in members:
            assert member.isreg() and member.mode == 0o644
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == 1700000000
        for name, content in payload.items():
            extracted = tar.extractfile(name)
            assert extracted is not None and extracted.read() == content


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar binary")
def test_readable_by_system_tar(tmp_path: Path, make_bundle: BundleFactory) -> None:
    path = tmp_path / "fraud-score-1.4.0.bundle"
    path.write_bytes(make_bundle())
    listing = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True, text=True)
    assert listing.stdout.split() == MEMBERS
    assert listing.stderr == ""


def test_same_members_written_by_tarfile_open(
    make_bundle: BundleFactory, trusted: TrustedKeys, payload: dict[str, bytes]
) -> None:
    # The reader is strict about structure, not overfitted to our writer's exact bytes:
    # tarfile's 10 KiB record padding after the end marker is accepted.
    data = tar_of_parts(list(parts_of(make_bundle()).items()))
    assert len(data) % 10240 == 0
    assert dict(open_bundle(data, trusted).files) == payload


def test_zero_padding_after_the_end_marker_is_accepted(
    make_bundle: BundleFactory, trusted: TrustedKeys
) -> None:
    open_bundle(make_bundle() + bytes(3 * BLOCK + 7), trusted)


def test_write_bundle_refuses_unsafe_names_and_times() -> None:
    for name, fragment in [
        ("a/b", "inside a directory"),
        ("../x", "escapes the bundle"),
        ("manifest.sig", "reserved"),
        ("", "empty name"),
        ("é.bin", "invalid name"),
    ]:
        with pytest.raises(FormatError, match=fragment):
            write_bundle(b"{}", b"{}", {name: b"", "model.onnx": b""}, 0)
    with pytest.raises(FormatError, match="mtime -1"):
        write_bundle(b"{}", b"{}", {}, -1)


# --- tampering with content -----------------------------------------------------------------


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("manifest.json", SignatureError, "no valid signature by a trusted key"),
        ("manifest.sig", SignatureError, "manifest.sig"),
        ("model.onnx", IntegrityError, "model.onnx: sha256 is"),
        ("selftest.json", IntegrityError, "selftest.json: sha256 is"),
        ("stats.json", IntegrityError, "stats.json: sha256 is"),
    ],
)
def test_flipped_byte_in_member(
    make_bundle: BundleFactory,
    trusted: TrustedKeys,
    name: str,
    error: type[BundleError],
    fragment: str,
    position: str,
) -> None:
    data = make_bundle()
    member = members_of(data)[name]
    offset = {"first": 0, "middle": member.size // 2, "last": member.size - 1}[position]
    tampered = flip(data, member.offset_data + offset)
    message = expect_refused(error, "", tampered, trusted)
    # A flipped manifest.sig byte may break its JSON or just its signature: both name it.
    assert fragment in message or name == "manifest.sig", message


def test_flipped_sig_byte_inside_the_signature(
    make_bundle: BundleFactory, trusted: TrustedKeys, signing_key: Ed25519PrivateKey
) -> None:
    data = make_bundle()
    member = members_of(data)["manifest.sig"]
    sig_text = data[member.offset_data : member.offset_data + member.size]
    position = sig_text.index(b'"sig": "') + len(b'"sig": "') + 10
    tampered = (
        data[: member.offset_data + position]
        + (b"B" if sig_text[position : position + 1] != b"B" else b"C")
        + data[member.offset_data + position + 1 :]
    )
    expect_refused(
        SignatureError,
        f"invalid signature by trusted key {keyid(signing_key.public_key())}",
        tampered,
        trusted,
    )


@pytest.mark.parametrize(
    "field_offset", [0, 50, 100, 108, 124, 135, 136, 148, 150, 156, 157, 257, 265, 345, 499]
)
def test_flipped_byte_in_header(
    make_bundle: BundleFactory, trusted: TrustedKeys, field_offset: int
) -> None:
    data = make_bundle()
    header_offset = members_of(data)["model.onnx"].offset
    tampered = flip(data, header_offset + field_offset)
    fragment = "no POSIX ustar header" if field_offset == 257 else "header checksum mismatch"
    expect_refused(FormatError, f"{fragment} at offset {header_offset}", tampered, trusted)


def test_hidden_data_in_member_padding(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = make_bundle()
    member = members_of(data)["selftest.json"]
    tampered = flip(data, member.offset_data + member.size)
    expect_refused(FormatError, "'selftest.json' has non-zero padding", tampered, trusted)


def test_wrong_key(
    make_bundle: BundleFactory, other_key: Ed25519PrivateKey, signing_key: Ed25519PrivateKey
) -> None:
    expect_refused(
        SignatureError,
        f"no valid signature by a trusted key (signed by: {keyid(signing_key.public_key())})",
        make_bundle(),
        TrustedKeys([other_key.public_key()]),
    )


def test_extra_signature_by_untrusted_key_is_ignored(
    make_bundle: BundleFactory,
    trusted: TrustedKeys,
    other_key: Ed25519PrivateKey,
    signing_key: Ed25519PrivateKey,
) -> None:
    bundle = open_bundle(make_bundle(keys=(other_key, signing_key)), trusted)
    assert bundle.keyid == keyid(signing_key.public_key())


def test_manifest_with_duplicate_keys_signed_by_the_valid_key(
    make_bundle: BundleFactory, trusted: TrustedKeys, manifest_bytes: bytes
) -> None:
    # Signature holds; only the strict parser stands between this and "last key wins".
    evil = manifest_bytes.replace(b'"task": "binary"', b'"task": "binary", "task": "ranking"')
    expect_refused(ManifestError, "duplicate key 'task'", make_bundle(manifest=evil), trusted)


def test_manifest_of_unknown_format_signed_by_the_valid_key(
    make_bundle: BundleFactory, trusted: TrustedKeys, manifest_bytes: bytes
) -> None:
    future = manifest_bytes.replace(b"edgebundle.manifest/1", b"edgebundle.manifest/2")
    expect_refused(
        ManifestError, "unsupported manifest format", make_bundle(manifest=future), trusted
    )


def test_payload_missing(
    make_bundle: BundleFactory, trusted: TrustedKeys, payload: dict[str, bytes]
) -> None:
    files = {k: v for k, v in payload.items() if k != "stats.json"}
    expect_refused(
        IntegrityError,
        "stats.json: listed in the manifest but not in the bundle",
        make_bundle(files=files),
        trusted,
    )


def test_payload_size_differs(
    make_bundle: BundleFactory, trusted: TrustedKeys, payload: dict[str, bytes]
) -> None:
    files = {**payload, "selftest.json": payload["selftest.json"] + b" "}
    expect_refused(
        IntegrityError,
        "selftest.json: size is 14 bytes, manifest says 13",
        make_bundle(files=files),
        trusted,
    )


# --- tampering with structure ----------------------------------------------------------------


@pytest.mark.parametrize(
    "keep", [1, 100, 511, 512, 513, 1024, 1536, 2000, -1025, -1024, -513, -512, -1]
)
def test_truncated(make_bundle: BundleFactory, trusted: TrustedKeys, keep: int) -> None:
    data = make_bundle()
    expect_refused(FormatError, "truncated", data[:keep], trusted)


def test_truncated_at_every_cut_point(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = make_bundle()
    for keep in range(1, len(data), 61):
        with pytest.raises(FormatError):
            open_bundle(data[:keep], trusted)


def test_empty_file(trusted: TrustedKeys) -> None:
    expect_refused(FormatError, "bundle is empty (0 bytes)", b"", trusted)


def test_not_a_tar(trusted: TrustedKeys) -> None:
    expect_refused(FormatError, "no POSIX ustar header at offset 0", b"PK\x03\x04" * 300, trusted)


def test_only_the_end_marker(trusted: TrustedKeys) -> None:
    expect_refused(FormatError, "bundle has no members", bytes(END_MARKER), trusted)


def test_trailing_garbage(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = make_bundle()
    expect_refused(
        FormatError,
        f"trailing data after the end-of-archive marker at {len(data) + 5}",
        data + bytes(5) + b"evil",
        trusted,
    )


def test_data_between_the_end_blocks(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = make_bundle()
    tampered = flip(data, len(data) - 1)
    expect_refused(FormatError, "trailing data after the end-of-archive marker", tampered, trusted)


def test_extra_unlisted_member(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = append(make_bundle(), info("zz-extra.bin", b"surprise"))
    expect_refused(FormatError, "unlisted member 'zz-extra.bin'", data, trusted)


def test_extra_member_out_of_order(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = append(make_bundle(), info("aa-extra.bin", b"surprise"))
    expect_refused(FormatError, "member 'aa-extra.bin' comes after 'stats.json'", data, trusted)


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (info("../x", b"evil"), "member '../x' escapes the bundle directory"),
        (info("a/b", b"evil"), "member 'a/b' is inside a directory"),
        (info("/etc/passwd", b"evil"), "member '/etc/passwd' is an absolute path"),
        (info(".hidden", b"evil"), "member '.hidden' has an invalid name"),
        (info("x" * 90 + "/" + "y" * 20, b"evil"), "uses the ustar prefix field"),
        (info("link", kind=tarfile.SYMTYPE, linkname="/etc/shadow"), "'link' is a symbolic link"),
        (info("hard", kind=tarfile.LNKTYPE, linkname="model.onnx"), "'hard' is a hard link"),
        (info("dir", kind=tarfile.DIRTYPE), "'dir/' is a directory"),
        (info("fifo", kind=tarfile.FIFOTYPE), "'fifo' is a FIFO"),
        (info("tty", kind=tarfile.CHRTYPE), "'tty' is a character device"),
        (info("disk", kind=tarfile.BLKTYPE), "'disk' is a block device"),
        (info("model.onnx", b"evil"), "duplicate member 'model.onnx'"),
        (info("manifest.json", b"{}"), "duplicate member 'manifest.json'"),
        (info("zz.bin", b"x", linkname="model.onnx"), "'zz.bin' has a link target"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_unsafe_member(
    make_bundle: BundleFactory,
    trusted: TrustedKeys,
    member: tuple[tarfile.TarInfo, bytes],
    fragment: str,
) -> None:
    expect_refused(FormatError, fragment, append(make_bundle(), member), trusted)


def test_pax_header(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    member, content = info("zz.bin", b"x")
    member.pax_headers = {"comment": "smuggled metadata"}
    data = append(make_bundle(), (member, content), fmt=tarfile.PAX_FORMAT)
    expect_refused(FormatError, "'././@PaxHeader' is a PAX extended header", data, trusted)


def test_gnu_long_name(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = append(make_bundle(), info("z" * 120, b"x"), fmt=tarfile.GNU_FORMAT)
    expect_refused(FormatError, "'././@LongLink' is a GNU long name header", data, trusted)


def test_gnu_format_member(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = append(make_bundle(), info("zz.bin", b"x"), fmt=tarfile.GNU_FORMAT)
    expect_refused(FormatError, "'zz.bin' is in GNU tar format; only POSIX ustar", data, trusted)


def test_members_out_of_order(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    parts = parts_of(make_bundle())
    swapped = [("manifest.sig", parts["manifest.sig"]), ("manifest.json", parts["manifest.json"])]
    rest = [(name, parts[name]) for name in MEMBERS[2:]]
    expect_refused(
        FormatError,
        "first member must be 'manifest.json', not 'manifest.sig'",
        tar_of_parts(swapped + rest),
        trusted,
    )
    unsorted = [(name, parts[name]) for name in MEMBERS[:2]] + rest[::-1]
    expect_refused(
        FormatError,
        "member 'selftest.json' comes after 'stats.json'",
        tar_of_parts(unsorted),
        trusted,
    )


def test_signature_member_missing(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    parts = parts_of(make_bundle())
    data = tar_of_parts([(name, parts[name]) for name in MEMBERS if name != "manifest.sig"])
    expect_refused(
        FormatError, "second member must be 'manifest.sig', not 'model.onnx'", data, trusted
    )


# --- caps ------------------------------------------------------------------------------------


def test_bundle_over_the_cap(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    data = make_bundle()
    limits = Limits(max_bundle_bytes=len(data) - 1)
    expect_refused(
        FormatError,
        f"bundle is {len(data)} bytes, over the {len(data) - 1}-byte cap",
        data,
        trusted,
        limits,
    )


def test_manifest_over_the_cap(
    make_bundle: BundleFactory, trusted: TrustedKeys, manifest_bytes: bytes
) -> None:
    limits = Limits(max_manifest_bytes=1000)
    expect_refused(
        FormatError,
        f"manifest.json is {len(manifest_bytes)} bytes, over the 1000-byte cap",
        make_bundle(),
        trusted,
        limits,
    )


def test_signature_over_the_cap(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    expect_refused(
        FormatError, "manifest.sig is", make_bundle(), trusted, Limits(max_signature_bytes=64)
    )


def test_too_many_members(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    expect_refused(
        FormatError, "bundle has more than 4 members", make_bundle(), trusted, Limits(max_members=4)
    )


def test_oversized_member_claim(make_bundle: BundleFactory, trusted: TrustedKeys) -> None:
    # A header claiming more data than the file holds, with a correct checksum.
    member, _ = info("zz.bin")
    member.size = 10**9
    header = member.tobuf(format=tarfile.USTAR_FORMAT)
    data = make_bundle()[:-END_MARKER] + header + bytes(END_MARKER)
    expect_refused(FormatError, "member 'zz.bin' needs 1000000000 bytes", data, trusted)


# --- check_bundle: every problem at once -----------------------------------------------------


def test_check_bundle_reports_signature_and_payload_problems_together(
    make_bundle: BundleFactory, other_key: Ed25519PrivateKey
) -> None:
    data = make_bundle()
    model = members_of(data)["model.onnx"]
    tampered = flip(data, model.offset_data + 3)
    tampered = append(tampered, info("zz-extra.bin", b"x"))
    problems = check_bundle(tampered, TrustedKeys([other_key.public_key()]), Limits())
    assert len(problems) == 3, problems
    assert problems[0].startswith("no valid signature by a trusted key")
    assert problems[1].startswith("model.onnx: sha256 is")
    assert problems[2] == "unlisted member 'zz-extra.bin'"


def test_check_bundle_reports_structure_and_manifest_problems(
    make_bundle: BundleFactory, trusted: TrustedKeys, manifest_bytes: bytes
) -> None:
    evil = manifest_bytes.replace(b'"task": "binary"', b'"task": "binary", "task": "ranking"')
    data = append(make_bundle(manifest=evil), info("link", kind=tarfile.SYMTYPE, linkname="x"))
    problems = check_bundle(data + b"junk", trusted, Limits(max_bundle_bytes=len(data)))
    assert problems[0].startswith(f"bundle is {len(data) + 4} bytes")
    assert problems[1] == "member 'link' is a symbolic link; only regular files are allowed"
    assert problems[2].startswith("trailing data after the end-of-archive marker")
    assert problems[3] == "manifest.json has a duplicate key 'task'"
    assert len(problems) == 4


def test_check_bundle_stops_file_checks_after_a_broken_header(
    make_bundle: BundleFactory, trusted: TrustedKeys
) -> None:
    data = make_bundle()
    header_offset = members_of(data)["selftest.json"].offset
    problems = check_bundle(flip(data, header_offset), trusted, Limits())
    assert problems == [f"header checksum mismatch at offset {header_offset} (corrupt header)"]


def test_check_bundle_on_garbage(trusted: TrustedKeys) -> None:
    assert check_bundle(b"", trusted, Limits()) == ["bundle is empty (0 bytes)"]


# --- reading the file ------------------------------------------------------------------------


def test_read_bundle_file(tmp_path: Path, make_bundle: BundleFactory) -> None:
    path = tmp_path / "b.bundle"
    path.write_bytes(make_bundle())
    assert read_bundle_file(path, Limits()) == make_bundle()


def test_read_bundle_file_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="is not a regular file"):
        read_bundle_file(tmp_path, Limits())


def test_read_bundle_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "missing.bundle"
    with pytest.raises(BundleError) as excinfo:
        read_bundle_file(path, Limits())
    assert str(excinfo.value) == f"cannot read {path}: No such file or directory"


def test_read_bundle_file_too_big(tmp_path: Path) -> None:
    path = tmp_path / "big.bundle"
    path.write_bytes(bytes(2048))
    with pytest.raises(FormatError, match="is 2048 bytes, over the 1024-byte bundle cap"):
        read_bundle_file(path, Limits(max_bundle_bytes=1024))


def test_read_members_unverified(make_bundle: BundleFactory, payload: dict[str, bytes]) -> None:
    members = read_members_unverified(make_bundle())
    assert list(members) == MEMBERS
    assert {name: members[name] for name in payload} == payload
    with pytest.raises(FormatError, match="is a symbolic link"):
        read_members_unverified(append(make_bundle(), info("l", kind=tarfile.SYMTYPE)))


def test_flood_of_refused_headers_is_cut_short(
    make_bundle: BundleFactory, trusted: TrustedKeys
) -> None:
    links = [info(f"l{i:03d}", kind=tarfile.SYMTYPE, linkname="x") for i in range(500)]
    problems = check_bundle(append(make_bundle(), *links), trusted, Limits())
    assert problems[-1] == "bundle has more than 16 members"
    assert len(problems) == 12  # 11 refused links fit under the cap after the 5 real members
