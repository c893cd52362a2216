"""The wheels a kit carries: edgebundle's own, built from a clean copy of the source, and the
runtime's dependencies for the target, downloaded by pip as binaries only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgebundle.builder.kit.errors import KitError
from edgebundle.builder.kit.target import Target

# Never part of a wheel; build/ above all: setuptools reuses build/lib, so modules deleted or
# moved in the source since the last build would ship again from there.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".cache",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "bundles",
    "demo",
    "tests",
    "bench",
)
_PIP_TIMEOUT = 900.0


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # as in the file name: lower case, "_" for "-"
    version: str
    sha256: str

    @classmethod
    def of(cls, path: Path) -> Wheel:
        name, version = path.name.split("-")[:2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(path=path, name=name.lower(), version=version, sha256=digest)

    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"

    def requires(self) -> list[str]:
        """Its unconditional ``Requires-Dist`` (no extra, no marker), e.g. ``numpy>=1.24``."""
        with zipfile.ZipFile(self.path) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = wheel.read(name).decode("utf-8")
        prefix = "Requires-Dist:"
        found = (line[len(prefix):].strip() for line in metadata.splitlines()
                 if line.startswith(prefix))
        return [spec.replace(" ", "") for spec in found if ";" not in spec]


def source_tree() -> Path | None:
    """The checkout this edgebundle is imported from, if it is one (not an installed wheel)."""
    import edgebundle

    root = Path(edgebundle.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def build_wheel(source: Path, out: Path, epoch: int) -> Wheel:
    """``pip wheel --no-deps`` of a copy of ``source`` without its build leftovers."""
    with tempfile.TemporaryDirectory(prefix="edgebundle-src-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, symlinks=True, ignore=_NOT_SOURCE)
        # The wheel's zip entries take their times from here, so equal sources give equal bytes.
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        _pip(["wheel", "--no-deps", "--wheel-dir", str(out), str(copy)], env)
    built = sorted(out.glob("edgebundle-*.whl"))
    if len(built) != 1:
        raise KitError(f"expected one edgebundle wheel in {out}, found {len(built)}")
    return Wheel.of(built[0])


def download(target: Target, requirements: Sequence[str], dest: Path, deps: bool = True) -> None:
    """pip's binary wheels of ``requirements`` (and their dependencies) for ``target``."""
    args = ["download", "--only-binary=:all:", "--dest", str(dest)]
    for platform in target.pip_platforms():
        args += ["--platform", platform]
    args += ["--python-version", target.python, "--implementation", "cp"]
    if not deps:
        args.append("--no-deps")
    _pip([*args, *requirements], dict(os.environ))


def _pip(args: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise KitError(f"pip {args[0]} took over {_PIP_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise KitError(f"pip {args[0]} failed: {_last_error(proc.stderr or proc.stdout)}")


def _last_error(output: str) -> str:
    """pip's own one-line reason, not its warnings about unreachable extra indexes."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]
