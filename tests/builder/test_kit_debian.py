"""The armv7l kit's Debian side: which packages it takes from an index (in memory), and that
it trusts an archive only as apt does (a signed mirror served on 127.0.0.1 by http.server,
signed with a throwaway gpg key): a tampered index or .deb, or another key, is refused."""

from __future__ import annotations

import functools
import hashlib
import http.server
import lzma
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebundle.builder.kit import KitError
from edgebundle.builder.kit.debian import (
    Archive,
    closure,
    install_order,
    install_steps,
    minimal_system,
)
from edgebundle.builder.kit.debian.packages import parse_index, relations

_STANZA = """Package: {name}
Version: 1.0-1
Architecture: armhf
Priority: {priority}
Filename: pool/main/{name}_1.0-1_armhf.deb
Size: {size}
SHA256: {sha256}
"""


def _index(entries: dict[str, str], content: dict[str, bytes] | None = None) -> str:
    """An index whose entries are NAME: extra fields ("Depends: ..."), with the hashes of
    ``content`` (or of the name)."""
    stanzas = []
    for name, extra in entries.items():
        data = (content or {}).get(name, name.encode())
        priority = "required" if "required" in extra else "optional"
        fields = "".join(f"{line.strip()}\n" for line in extra.split(";") if ":" in line)
        stanzas.append(_STANZA.format(name=name, priority=priority, size=len(data),
                                      sha256=hashlib.sha256(data).hexdigest()) + fields)
    return "\n".join(stanzas)


ENTRIES = {
    "libc6": "required; Depends: libgcc-s1",
    "libgcc-s1": "Depends: libc6 (>= 2.35)",  # pulled into the minimal system by libc6
    "base-files": "Essential: yes",
    "debconf": "required; Provides: debconf-2.0",
    "python3.13-minimal": "Depends: libc6 (>= 2.38), debconf | debconf-2.0",
    "python3.13": "Pre-Depends: python3.13-minimal (= 1.0-1); Depends: libc6",
    "python3": "Depends: python3.13 (>= 3.13.5-1)",
    "libblas3": "Provides: libblas.so.3",
    "libopenblas0": "Provides: libblas.so.3",
    "python3-numpy": "Depends: python3:any, libblas.so.3 | libblas3, python3 (<< 3.14)",
    "python3-onnxruntime": "Depends: python3-numpy, python3-absent | python3-numpy",
    "python3-broken": "Depends: libnowhere1",
}


def test_relations_keep_names_and_alternatives_only() -> None:
    assert relations("a (>= 1), b:any | c:armhf (<< 2),, d") == (("a",), ("b", "c"), ("d",))


def test_a_minimal_system_is_the_required_and_essential_packages_and_their_needs() -> None:
    index = parse_index(_index(ENTRIES))
    assert minimal_system(index) == {"libc6", "libgcc-s1", "base-files", "debconf"}


def test_the_closure_adds_only_what_a_minimal_system_lacks() -> None:
    index = parse_index(_index(ENTRIES))
    needed = closure(index, ["python3-onnxruntime"], minimal_system(index))
    # libblas.so.3 is virtual: its first provider; debconf-2.0 is provided by the base already
    assert set(needed) == {"python3-onnxruntime", "python3-numpy", "python3", "python3.13",
                           "python3.13-minimal", "libblas3"}


def test_a_dependency_the_index_lacks_is_named_in_one_line() -> None:
    index = parse_index(_index(ENTRIES))
    with pytest.raises(KitError, match=r"^libnowhere1 \(needed by python3-broken\) is not in"):
        closure(index, ["python3-broken"], minimal_system(index))


def test_install_order_puts_every_dependency_first() -> None:
    index = parse_index(_index(ENTRIES))
    order = install_order(index, closure(index, ["python3-onnxruntime"], minimal_system(index)))
    for later, earlier in [("python3.13", "python3.13-minimal"), ("python3", "python3.13"),
                           ("python3-numpy", "libblas3"), ("python3-onnxruntime", "python3-numpy")]:
        assert order.index(earlier) < order.index(later)


def test_a_pre_dependency_unpacked_in_the_same_dpkg_call_starts_the_next_call() -> None:
    index = parse_index(_index(ENTRIES))
    order = install_order(index, closure(index, ["python3-onnxruntime"], minimal_system(index)))
    steps = install_steps(index, order)
    assert [name for step in steps for name in step] == order
    # python3.13 pre-depends on python3.13-minimal: dpkg must have configured it first
    at = {name: number for number, step in enumerate(steps) for name in step}
    assert at["python3.13-minimal"] < at["python3.13"]
    assert len(steps) == 2  # python3.13 is the only package pre-depending on something


def test_a_dependency_cycle_still_gives_every_package_once() -> None:
    index = parse_index(_index({"a": "Depends: b", "b": "Depends: a", "c": "Depends: a"}))
    order = install_order(index, ["c", "a", "b"])
    assert sorted(order) == ["a", "b", "c"] and order[-1] == "c"


# --- a signed mirror on 127.0.0.1 ---------------------------------------------------------


class _Mirror:
    def __init__(self, root: Path, keyring: Path, gpg_home: Path) -> None:
        self.root, self.keyring, self.gpg_home = root, keyring, gpg_home
        self.debs = {"python3": b"python3's files", "libc6": b"libc6's files"}

    def publish(self, index: str) -> None:
        dists = self.root / "dists" / "trixie"
        (dists / "main" / "binary-armhf").mkdir(parents=True, exist_ok=True)
        packed = lzma.compress(index.encode())
        (dists / "main" / "binary-armhf" / "Packages.xz").write_bytes(packed)
        for name, data in self.debs.items():
            (self.root / "pool" / "main").mkdir(parents=True, exist_ok=True)
            (self.root / "pool" / "main" / f"{name}_1.0-1_armhf.deb").write_bytes(data)
        release = (f"Suite: trixie\nSHA256:\n {hashlib.sha256(packed).hexdigest()} "
                   f"{len(packed)} main/binary-armhf/Packages.xz\n")
        (dists / "Release").write_text(release)
        (dists / "InRelease").unlink(missing_ok=True)
        self.gpg("--clearsign", "--output", str(dists / "InRelease"), str(dists / "Release"))

    def gpg(self, *args: str) -> None:
        subprocess.run(["gpg", "--batch", "--homedir", str(self.gpg_home), "--pinentry-mode",
                        "loopback", "--passphrase", "", *args], check=True, capture_output=True)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[_Mirror, str]]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("gpg/gpgv are not installed (apt-get install gpg gpgv)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    site = _Mirror(tmp_path / "www", tmp_path / "archive.gpg", home)
    site.gpg("--quick-gen-key", "Test Archive <archive@example.org>", "ed25519", "sign", "never")
    site.gpg("--output", str(site.keyring), "--export")
    site.publish(_index({"python3": "Depends: libc6", "libc6": "required"}, site.debs))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site.root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _archive(site: _Mirror, url: str, cache: Path) -> Archive:
    return Archive("trixie", "armhf", cache, mirror=url, keyring=site.keyring)


def test_a_signed_mirror_gives_its_index_and_checked_debs(
    mirror: tuple[_Mirror, str], tmp_path: Path
) -> None:
    site, url = mirror
    archive = _archive(site, url, tmp_path / "cache")
    index = archive.index()
    assert set(index) == {"python3", "libc6"}
    assert archive.deb(index["python3"]).read_bytes() == site.debs["python3"]
    # cached by content: the mirror going away does not matter the second time
    (site.root / "pool" / "main" / "python3_1.0-1_armhf.deb").unlink()
    assert archive.deb(index["python3"]).read_bytes() == site.debs["python3"]


def test_a_deb_that_differs_from_the_index_is_refused(
    mirror: tuple[_Mirror, str], tmp_path: Path
) -> None:
    site, url = mirror
    archive = _archive(site, url, tmp_path / "cache")
    index = archive.index()
    (site.root / "pool" / "main" / "python3_1.0-1_armhf.deb").write_bytes(b"python3's filez")
    with pytest.raises(KitError, match="does not match the sha256 the signed index lists"):
        archive.deb(index["python3"])
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_an_index_the_release_does_not_list_is_refused(
    mirror: tuple[_Mirror, str], tmp_path: Path
) -> None:
    site, url = mirror
    packed = site.root / "dists" / "trixie" / "main" / "binary-armhf" / "Packages.xz"
    packed.write_bytes(lzma.compress(_index({"python3": "", "evil": ""}).encode()))
    with pytest.raises(KitError, match=r"Packages\.xz does not match the sha256"):
        _archive(site, url, tmp_path / "cache").index()


def test_a_release_signed_by_another_key_is_refused(
    mirror: tuple[_Mirror, str], tmp_path: Path
) -> None:
    site, url = mirror
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    stranger = _Mirror(site.root, tmp_path / "other.gpg", other)
    stranger.gpg("--quick-gen-key", "Stranger <s@example.org>", "ed25519", "sign", "never")
    stranger.publish(_index({"python3": "", "libc6": "required"}, site.debs))
    with pytest.raises(KitError, match="InRelease is not signed by"):
        _archive(site, url, tmp_path / "cache").index()
