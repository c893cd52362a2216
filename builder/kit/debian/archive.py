"""A Debian archive's packages for one suite and architecture, trusted the way apt trusts them:
``InRelease`` verified with the archive's keyring (gpgv), the ``Packages`` index checked against
the sha256 the signed release lists, and each .deb against the sha256 the index lists. Downloads
are kept in a cache by content, so a second kit for the same suite downloads nothing new."""

from __future__ import annotations

import hashlib
import lzma
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgebundle.builder.kit.debian.packages import Package, parse_index
from edgebundle.builder.kit.errors import KitError

MIRROR = "https://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_TIMEOUT = 120.0
_MAX_RELEASE = 4 << 20
_MAX_INDEX = 64 << 20
_MAX_DEB = 256 << 20


@dataclass(frozen=True)
class Archive:
    suite: str  # "trixie"
    arch: str  # Debian's name: "armhf"
    cache: Path
    mirror: str = MIRROR
    keyring: Path = KEYRING
    component: str = "main"

    def index(self) -> dict[str, Package]:
        """The suite's packages for ``arch``, from a ``Packages`` index the signature covers."""
        release = self._release()
        name = f"{self.component}/binary-{self.arch}/Packages.xz"
        sha256, size = _listed(release, name)
        data = self._fetch(f"dists/{self.suite}/{name}", sha256, size, _MAX_INDEX)
        try:
            return parse_index(lzma.decompress(data).decode("utf-8"))
        except (lzma.LZMAError, UnicodeDecodeError) as e:
            raise KitError(f"{name} of {self.suite} does not decompress: {e}") from None

    def deb(self, package: Package) -> Path:
        """The package's .deb in the cache, its sha256 checked."""
        self._fetch(package.filename, package.sha256, package.size, _MAX_DEB)
        return self._cached(package.sha256)

    def _release(self) -> str:
        if not self.keyring.is_file():
            raise KitError(
                f"{self.keyring} is missing: install debian-archive-keyring or pass its path"
            )
        signed = _download(f"{self.mirror}/dists/{self.suite}/InRelease", _MAX_RELEASE)
        with tempfile.TemporaryDirectory(prefix="edgebundle-release-") as tmp:
            path = Path(tmp) / "InRelease"
            path.write_bytes(signed)
            proc = subprocess.run(
                ["gpgv", "--keyring", str(self.keyring), "--output", "-", str(path)],
                capture_output=True, timeout=_TIMEOUT, check=False,
            )
        if proc.returncode != 0:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise KitError(f"{self.suite}'s InRelease is not signed by {self.keyring}: {reason}")
        return proc.stdout.decode("utf-8")

    def _fetch(self, path: str, sha256: str, size: int, limit: int) -> bytes:
        cached = self._cached(sha256)
        if cached.is_file() and _sha256(data := cached.read_bytes()) == sha256:
            return data
        if size > limit:
            raise KitError(f"{path} is {size} bytes, over the {limit} a kit accepts")
        data = _download(f"{self.mirror}/{path}", size)
        if len(data) != size or _sha256(data) != sha256:
            raise KitError(f"{path} does not match the sha256 the signed index lists")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(cached)
        return data

    def _cached(self, sha256: str) -> Path:
        return self.cache / "debian" / "sha256" / sha256


def fetch_debs(archive: Archive, packages: Iterable[Package], dest: Path) -> list[Path]:
    """Each package's .deb copied into ``dest`` under its pool name."""
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(archive.deb(p), dest / p.deb_name)) for p in packages]


def _listed(release: str, name: str) -> tuple[str, int]:
    """The sha256 and size ``InRelease`` lists for ``name``."""
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        parts = line.split()
        if in_sha256 and len(parts) == 3 and parts[2] == name:
            return parts[0], int(parts[1])
    raise KitError(f"the signed release does not list {name}")


def _download(url: str, limit: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            data: bytes = response.read(limit + 1)
    except OSError as e:
        raise KitError(f"cannot download {url}: {e}") from None
    if len(data) > limit:
        raise KitError(f"{url} is over {limit} bytes")
    return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
