"""Real bundles for the store tests, built by the real `bundle build`, and store snapshots."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle import read_members_unverified, write_bundle
from runtime.manifest import FileEntry, parse_manifest
from runtime.selftest import parse_selftest
from runtime.semver import Version
from runtime.signing import MANIFEST_CONTEXT, SignatureFile, load_private_key, sign
from runtime.store import AuditEvent
from tests.conftest import KeyFiles
from tests.xgbmodels import run


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
    """``bundle`` re-packed as ``version`` with one expected selftest value off by 0.5, and a
    manifest re-signed over the new selftest's real sha256: valid in every way but the test."""
    members = read_members_unverified(bundle)
    manifest = parse_manifest(members["manifest.json"])
    selftest = parse_selftest(members["selftest.json"])
    output = manifest.outputs[0].name
    values = list(selftest.expected[output])
    first = values[0]
    assert isinstance(first, float), "the first output must be a float column"
    values[0] = first + 0.5
    expected = {**selftest.expected, output: tuple(values)}
    payload = {name: members[name] for name in manifest.files}
    payload["selftest.json"] = dataclasses.replace(selftest, expected=expected).to_bytes()
    files = {
        name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        for name, data in payload.items()
    }
    new_manifest = dataclasses.replace(manifest, version=Version.parse(version), files=files)
    manifest_bytes = new_manifest.to_bytes()
    private = load_private_key(key.private, None)
    signatures = SignatureFile(signatures=(sign(private, MANIFEST_CONTEXT, manifest_bytes),))
    return write_bundle(manifest_bytes, signatures.to_bytes(), payload, mtime=0)


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
