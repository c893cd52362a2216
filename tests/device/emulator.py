"""Emulated ARM Debian devices on this x86_64 machine, with no binfmt_misc.

Debian's arm64 Python and the libraries it loads are unpacked (``dpkg -x``) into a root under
``.cache/device/``; ``qemu-aarch64-static -L ROOT`` runs it, finding the loader and libraries in
the root. Without binfmt_misc the host kernel cannot start an aarch64 program, so every one
must be started through qemu: a small host script, the *launcher*, does that for the root's
``python3.11``, and passes its own path as the program's ``argv[0]`` (``qemu -0``). Python then
believes it lives where the launcher is, so a venv made by the launcher links back to it, and
the venv's ``bin/python`` and console scripts run on the host as if the machine were aarch64:
install.sh, pip and ``bundle-runtime`` run unchanged.

The aarch64 device is bookworm with a hand-picked list of libraries; the 32-bit one
(``trixie_root``) is a minimal trixie, every Essential and Priority: required package, so that
what the device kit adds to it is all a real minimal system would need.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgebundle.builder.kit.debian import Archive, fetch_debs, minimal_system

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = REPO / ".cache" / "device"
PYTHON = "3.11"
# What `import edgebundle.runtime`, onnxruntime, numpy and cryptography load, from bookworm.
PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libssl3",
    "libffi8",
    "zlib1g",
    "libexpat1",
    "liblzma5",
    "libbz2-1.0",
    "libstdc++6",
    "libgcc-s1",
    "libuuid1",
    "libsqlite3-0",
)
_APT_TIMEOUT = 900
_INSTALL_ALTERNATIVE = re.compile(r"update-alternatives\s+--install\s+(/\S+)\s+\S+\s+(/\S+)\s+\d+")


@dataclass(frozen=True)
class Device:
    root: Path
    python: Path  # the launcher: runs the root's python3.11 under qemu

    def run_python(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args], capture_output=True, text=True, timeout=timeout, check=False
        )


def offline() -> list[str]:
    """A command prefix with no network at all (a new network namespace), if one can be had."""
    for prefix in (["unshare", "--net"], ["unshare", "--net", "--map-root-user"]):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode
        except FileNotFoundError:
            return []
        if ok == 0:
            return prefix
    return []


def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    # The cache ignores itself, as .pytest_cache does: nothing in it belongs in git.
    (CACHE.parent / ".gitignore").write_text("*\n")
    return CACHE


def qemu(arch: str = "aarch64") -> str:
    """qemu-ARCH-static, installed from Debian if missing."""
    name = f"qemu-{arch}-static"
    if shutil.which(name) is None:
        _apt(["apt-get", "install", "-y", "-qq", "qemu-user-static"])
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed"
    return path


def device(arch: str = "arm64", machine: str = "aarch64") -> Device:
    root = _debian_root(arch)
    return Device(root=root, python=launcher(root, qemu(machine)))


def _debian_root(arch: str) -> Path:
    """The packages' files unpacked into ``.cache/device/ARCH/root`` (once per package list)."""
    base = cache_dir() / arch
    root, stamp = base / "root", base / "packages.txt"
    wanted = "".join(f"{p}:{arch}\n" for p in PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted and root.is_dir():
        return root
    shutil.rmtree(base, ignore_errors=True)
    debs = base / "debs"
    debs.mkdir(parents=True)
    _add_architecture(arch)
    _apt(["apt-get", "download", *wanted.split()], cwd=debs)
    unpack(sorted(debs.glob("*.deb")), root)
    stamp.write_text(wanted)
    return root


def _add_architecture(arch: str) -> None:
    foreign = subprocess.run(
        ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=True
    ).stdout.split()
    if arch not in foreign:
        subprocess.run(["dpkg", "--add-architecture", arch], check=True)
        _apt(["apt-get", "update", "-qq"])
        return
    probe = ["apt-cache", "show", f"{PACKAGES[0]}:{arch}"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        _apt(["apt-get", "update", "-qq"])


def _apt(command: list[str], cwd: Path | None = None) -> None:
    # apt's sandbox user cannot write into the repository's cache: download as root here.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [command[0], "-o", "APT::Sandbox::User=root", *command[1:]]
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=_APT_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stderr[-2000:]}"


def minimal_trixie(cache: Path) -> list[Path]:
    """Every Essential and Priority: required package of trixie armhf, as debootstrap's minbase
    installs them: the device kit's own downloads, checked against the signed index and cached
    in ``cache``."""
    archive = Archive("trixie", "armhf", cache)
    index = archive.index()
    names = sorted(minimal_system(index))
    return fetch_debs(archive, [index[name] for name in names], cache / "trixie-minimal")


def trixie_root(root: Path, debs: Iterable[Path]) -> Path:
    """``debs`` unpacked into ``root``, with ``/bin``, ``/lib`` and ``/sbin`` linked into
    ``/usr`` as debootstrap makes them."""
    for folder in ("bin", "lib", "sbin"):
        (root / "usr" / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).symlink_to(f"usr/{folder}")
    unpack(debs, root)
    return root


def unpack(debs: Iterable[Path], root: Path) -> None:
    """The packages' files in ``root`` as dpkg leaves them, and of what their maintainer
    scripts do (which need the device's own shell) the one thing the runtime needs: the
    ``update-alternatives`` links (numpy finds libblas.so.3 through one)."""
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        with tempfile.TemporaryDirectory(prefix="control-") as control:
            subprocess.run(["dpkg", "-e", str(deb), control], check=True)
            postinst = Path(control) / "postinst"
            if postinst.is_file():
                _alternatives(postinst.read_text(), root)


def _alternatives(script: str, root: Path) -> None:
    """Each ``update-alternatives --install LINK NAME PATH PRIORITY`` as a link in ``root``,
    relative, so that it resolves inside the root rather than on the host."""
    for link, target in _INSTALL_ALTERNATIVE.findall(script.replace("\\\n", " ")):
        at = root / link.lstrip("/")
        if not at.is_symlink() and not at.exists():
            at.symlink_to(os.path.relpath(target, os.path.dirname(link)))


def launcher(root: Path, qemu_binary: str, python: str = PYTHON, shim: bool = False) -> Path:
    """A host script that runs the root's ``pythonX.Y`` under qemu, in the root's place;
    with ``shim`` through qemu_shim.py, for a guest whose libc stats with ``statx``."""
    path = root.parent / "bin" / f"python{python}"
    path.parent.mkdir(exist_ok=True)
    wrap = f"{sys.executable} {Path(__file__).parent / 'qemu_shim.py'} " if shim else ""
    path.write_text(
        "#!/bin/sh\n"
        f'exec {wrap}{qemu_binary} -L {root} -0 "$0" {root}/usr/bin/python{python} "$@"\n'
    )
    path.chmod(0o755)
    return path
