from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgebundle.builder.keys import generate_keypair
from edgebundle.runtime.errors import KeyFileError
from edgebundle.runtime.signing import keyid, load_private_key, load_public_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_a_matching_pair_with_modes(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "nested"
    private_path, public_path = generate_keypair(out, None)
    assert (private_path, public_path) == (out / "signing.key", out / "signing.pub")
    assert _mode(private_path) == 0o600
    assert _mode(public_path) == 0o644
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    private = load_private_key(private_path, None)
    assert keyid(private.public_key()) == keyid(load_public_key(public_path))
    assert sorted(p.name for p in out.iterdir()) == ["signing.key", "signing.pub"]


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        _, public_path = generate_keypair(tmp_path, None)
    finally:
        os.umask(old)
    assert _mode(public_path) == 0o644


def test_passphrase_round_trip(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path, b"correct horse")
    assert private_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    private = load_private_key(private_path, b"correct horse")
    assert keyid(private.public_key()) == keyid(load_public_key(public_path))


def test_wrong_passphrase_message(tmp_path: Path) -> None:
    private_path, _ = generate_keypair(tmp_path, b"correct horse")
    with pytest.raises(KeyFileError) as excinfo:
        load_private_key(private_path, b"battery staple")
    assert str(excinfo.value) == f"wrong passphrase for {private_path}"


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="passphrase is empty"):
        generate_keypair(tmp_path, b"")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", ["signing.key", "signing.pub"])
def test_refuses_to_overwrite_and_leaves_files_untouched(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious key material\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyFileError, match=f"refusing to overwrite existing .*{existing}"):
        generate_keypair(tmp_path, None)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_second_generate_keeps_the_first_pair(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path, None)
    before = (private_path.read_bytes(), public_path.read_bytes())
    with pytest.raises(KeyFileError):
        generate_keypair(tmp_path, b"other")
    assert (private_path.read_bytes(), public_path.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.key", "signing.pub"]


def test_dangling_symlink_counts_as_existing(tmp_path: Path) -> None:
    (tmp_path / "signing.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path, None)
    assert not (tmp_path / "elsewhere").exists()


def test_unwritable_directory_is_a_key_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(KeyFileError, match="cannot write key pair to"):
        generate_keypair(blocker / "keys", None)


def test_public_key_appearing_meanwhile_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process creates signing.pub between our existence check and our write.
    real_link = os.link

    def racing_link(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "signing.pub":
            Path(dst).write_bytes(b"theirs\n")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(KeyFileError, match="refusing to overwrite existing"):
        generate_keypair(tmp_path, None)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"signing.pub": b"theirs\n"}
