"""Real bundles for the store tests, built by the real `bundle build`, and store snapshots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgebundle.builder.drill import make_broken
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import AuditEvent
from tests.conftest import KeyFiles
from tests.support.xgbmodels import run


@dataclass(frozen=True)
class Spec:
    """One bundle to build: model name, version, precision and signing key."""

    name: str
    version: str
    precision: str = "int8"
    signer: str = "keys"  # "keys" or "other_keys"

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}-{self.precision}-{self.signer}"


def build_bundles(
    model: Path, specs: Sequence[Spec], keys: dict[str, KeyFiles], out: Path
) -> dict[Spec, Path]:
    """Build every spec with the real CLI, in parallel (each build is a 2-3 s process)."""

    def build(spec: Spec) -> Path:
        directory = out / spec.label
        args = ["build", str(model), "--name", spec.name, "--version", spec.version]
        args += ["--precision", spec.precision, "--key", str(keys[spec.signer].private)]
        proc = run("bundle", [*args, "--out", str(directory)])
        assert proc.returncode == 0, proc.stderr
        return directory / f"{spec.name}-{spec.version}.bundle"

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(specs, pool.map(build, specs), strict=True))


def with_wrong_selftest(bundle: bytes, key: KeyFiles, version: str) -> bytes:
    """``bundle`` re-signed as ``version`` with a selftest that must fail (``bundle
    make-broken``): valid in every way but the test."""
    return make_broken(bundle, Version.parse(version), load_private_key(key.private, None))


@dataclass(frozen=True)
class Snapshot:
    """What a refused operation must not change: state.json's bytes and every file's path
    (audit.log is listed, its growth is checked separately)."""

    state: bytes | None
    files: tuple[str, ...]


def snapshot(root: Path) -> Snapshot:
    state = root / "state.json"
    return Snapshot(
        state=state.read_bytes() if state.exists() else None,
        files=tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*"))),
    )


def audit_events(root: Path) -> list[AuditEvent]:
    lines = (root / "audit.log").read_text().splitlines()
    return [AuditEvent.from_dict(json.loads(line)) for line in lines]
