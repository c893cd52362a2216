"""``bundle device-kit``: a tarball that installs the runtime on a device with no network.

Inside ``edgebundle-kit-VERSION-linux-MACHINE-cpXY/``: ``wheels/`` (edgebundle and every
dependency, binary, for the target), ``requirements.txt`` (each pinned with its sha256, so pip
refuses a changed wheel), ``pip/`` (pip's own wheel: the device needs neither pip nor
ensurepip), ``trust/`` (the key or key statement a new store trusts), ``kit.conf``,
``install.sh`` and ``systemd/edgebundle.service.in``.

A target PyPI has no wheels for (32-bit ARM) gets Debian's packages of the runtime's
dependencies instead: ``debs/`` holds them with what they need beyond a minimal system and
``debs/order.txt`` the ``dpkg -i`` calls that install them, one a line; ``wheels/`` holds
edgebundle's wheel only, installed into a venv that sees the system's packages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgebundle.builder.kit.debian import Archive, kit_debs
from edgebundle.builder.kit.debian.archive import KEYRING, MIRROR
from edgebundle.builder.kit.errors import KitError
from edgebundle.builder.kit.tarball import EXECUTABLE, REGULAR, write_tarball
from edgebundle.builder.kit.target import Target
from edgebundle.builder.kit.wheelhouse import Wheel, build_wheel, download, source_tree
from edgebundle.runtime.errors import BundleError

UNIT_TEMPLATE = "systemd/edgebundle.service.in"
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a wheel's zip entries can hold


@dataclass(frozen=True)
class KitOptions:
    target: Target
    trust: tuple[Path, ...]
    out_dir: Path
    onnxruntime: str | None = None  # pin, e.g. "1.20.1"; default: what pip resolves
    wheel: Path | None = None  # a built edgebundle wheel; default: build the source tree's
    cache: Path = Path.home() / ".cache" / "edgebundle"  # Debian downloads, by sha256
    debian_mirror: str = MIRROR
    debian_keyring: Path = KEYRING


@dataclass(frozen=True)
class Kit:
    path: Path
    kit_id: str  # names the device's venv: the same kit installs once
    wheels: tuple[Wheel, ...]
    debs: tuple[str, ...] = ()  # file names, in install order

    def onnxruntime(self) -> str:
        """Which onnxruntime the kit installs: a wheel's version or Debian's package."""
        found = [w.version for w in self.wheels if w.name == "onnxruntime"]
        found += [d.removesuffix(".deb") for d in self.debs if d.startswith("python3-onnxrun")]
        return found[0] if found else "none"


def epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", _ZIP_EPOCH))


def make_kit(options: KitOptions) -> Kit:
    _check_trust(options.trust)
    with tempfile.TemporaryDirectory(prefix="edgebundle-kit-") as tmp:
        work = Path(tmp)
        ours = _our_wheel(options.wheel, work / "dist")
        wheels, pip = work / "wheels", work / "pip"
        debs = _dependencies(options, ours, wheels, work / "debs")
        download(options.target, ["pip"], pip, deps=False)
        return write_kit(options.out_dir, options.target, wheels, _one(pip), options.trust, debs)


def _dependencies(
    options: KitOptions, ours: Wheel, wheels: Path, debs: Path
) -> list[list[Path]]:
    """Fill ``wheels`` with ours and, from PyPI, our dependencies; or, where PyPI has none
    for the target, return Debian's packages of them."""
    route = options.target.debian
    if route is None:
        pins = [] if options.onnxruntime is None else [f"onnxruntime=={options.onnxruntime}"]
        download(options.target, [str(ours.path), *pins], wheels)
        return []
    if options.onnxruntime is not None:
        raise KitError(
            f"--onnxruntime pins a PyPI wheel; a {options.target.platform} kit carries Debian "
            f"{route.suite}'s onnxruntime"
        )
    wheels.mkdir()
    shutil.copy(ours.path, wheels)
    archive = Archive(route.suite, route.arch, options.cache, options.debian_mirror,
                      options.debian_keyring)
    return kit_debs(route, archive, debs)


def write_kit(
    out_dir: Path,
    target: Target,
    wheels_dir: Path,
    pip_wheel: Path,
    trust: Sequence[Path],
    steps: Sequence[Sequence[Path]] = (),
) -> Kit:
    """The tarball from wheels (and .deb files, in their ``dpkg -i`` calls) already at hand;
    the same inputs give the same bytes."""
    debs = [deb for step in steps for deb in step]
    wheels = tuple(Wheel.of(path) for path in sorted(wheels_dir.glob("*.whl")))
    names = [w.name for w in wheels]
    if "edgebundle" not in names:
        raise KitError(f"no edgebundle wheel in {wheels_dir}")
    requirements = "".join(w.requirement() + "\n" for w in wheels).encode()
    order = "".join(" ".join(deb.name for deb in step) + "\n" for step in steps).encode()
    ours = wheels[names.index("edgebundle")]
    version = ours.version
    identity = requirements + "".join(f"{d.name} {_sha256(d)}\n" for d in debs).encode()
    kit_id = f"{version}-{hashlib.sha256(identity).hexdigest()[:12]}"
    top = f"edgebundle-kit-{version}-linux-{target.machine}-{target.cp_tag}"
    conf = {
        "KIT_VERSION": version,
        "KIT_ID": kit_id,
        "KIT_MACHINE": target.machine,
        "KIT_PYTHON": target.python,
        "KIT_PIP": pip_wheel.name,
        # "yes": the runtime's dependencies are the system's (Debian's packages), not wheels
        "KIT_SYSTEM_SITE": "yes" if target.debian else "no",
        "KIT_REQUIRES": f"\"{' '.join(ours.requires() if target.debian else ())}\"",
        "KIT_DEBIAN_PACKAGES": f"\"{' '.join(target.debian.packages if target.debian else ())}\"",
    }
    files: dict[str, tuple[Path | bytes, int]] = {
        "install.sh": (_package_file("install.sh"), EXECUTABLE),
        UNIT_TEMPLATE: (_package_file("edgebundle.service.in"), REGULAR),
        "kit.conf": ("".join(f"{k}={v}\n" for k, v in conf.items()).encode(), REGULAR),
        "requirements.txt": (requirements, REGULAR),
        f"pip/{pip_wheel.name}": (pip_wheel, REGULAR),
        **{f"wheels/{w.path.name}": (w.path, REGULAR) for w in wheels},
        **_trust_files(trust),
        **({"debs/order.txt": (order, REGULAR)} if debs else {}),
        **{f"debs/{deb.name}": (deb, REGULAR) for deb in debs},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{top}.tar.gz"
    write_tarball(path, top, files, epoch())
    return Kit(path=path, kit_id=kit_id, wheels=wheels, debs=tuple(d.name for d in debs))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_trust(trust: Sequence[Path]) -> None:
    """Refuse here what ``bundle-runtime init`` would refuse on the device."""
    from edgebundle.runtime.ota.keychain import load_trust

    if not trust:
        raise KitError("a kit needs --trust: the key (or keys/N.json) its store will trust")
    try:
        load_trust(trust)
    except BundleError as e:
        raise KitError(str(e)) from None


def _trust_files(trust: Sequence[Path]) -> dict[str, tuple[Path | bytes, int]]:
    files: dict[str, tuple[Path | bytes, int]] = {}
    for path in trust:
        name = f"trust/{path.name}"
        if name in files:
            raise KitError(f"two trust files are named {path.name}; rename one")
        files[name] = (path, REGULAR)
    return files


def _our_wheel(prebuilt: Path | None, dist: Path) -> Wheel:
    if prebuilt is not None:
        dist.mkdir()
        return Wheel.of(Path(shutil.copy(prebuilt, dist)))
    source = source_tree()
    if source is None:
        raise KitError("edgebundle is not imported from a source checkout: pass --wheel")
    return build_wheel(source, dist, epoch())


def _one(folder: Path) -> Path:
    found = sorted(folder.glob("*.whl"))
    if len(found) != 1:
        raise KitError(f"expected one wheel in {folder}, found {len(found)}")
    return found[0]


def _package_file(name: str) -> bytes:
    return (resources.files("edgebundle.builder.kit") / name).read_bytes()
