"""``bundle make-broken``: a validly signed bundle whose selftest must fail, for fire drills.

Fleet operators rehearse the failure path before they need it: publish this to a test channel
and watch devices refuse it at their selftest, mark it bad and keep serving what they had.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.runtime.bundle import read_members_unverified
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.manifest import FileEntry, parse_manifest
from edgebundle.runtime.selftest import Number, Selftest, Value, parse_selftest
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import MANIFEST_CONTEXT, SignatureFile, sign


def make_broken(bundle: bytes, version: Version, key: Ed25519PrivateKey) -> bytes:
    """``bundle`` re-packed as ``version`` with the first expected selftest value off (by 0.5,
    or by 1 for a label), and its manifest re-signed over the new selftest's real sha256:
    valid in every way but the selftest."""
    members = read_members_unverified(bundle)
    manifest = parse_manifest(members["manifest.json"])
    selftest = parse_selftest(members["selftest.json"])
    sabotaged = _sabotaged(selftest, manifest.outputs[0].name).to_bytes()
    return repacked(bundle, key, version, {"selftest.json": sabotaged})


def repacked(
    bundle: bytes, key: Ed25519PrivateKey, version: Version, replaced: Mapping[str, bytes]
) -> bytes:
    """``bundle`` as ``version`` with the payload files in ``replaced`` swapped in, and its
    manifest re-signed over their real sizes and sha256s."""
    members = read_members_unverified(bundle)
    manifest = parse_manifest(members["manifest.json"])
    payload = {**{name: members[name] for name in manifest.files}, **replaced}
    files = {
        name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        for name, data in payload.items()
    }
    manifest_bytes = dataclasses.replace(manifest, version=version, files=files).to_bytes()
    signatures = SignatureFile(signatures=(sign(key, MANIFEST_CONTEXT, manifest_bytes),))
    return write_bundle(manifest_bytes, signatures.to_bytes(), payload, mtime=0)


def _sabotaged(selftest: Selftest, output: str) -> Selftest:
    values = list(selftest.expected[output])
    values[0] = _off(values[0])
    return dataclasses.replace(selftest, expected={**selftest.expected, output: tuple(values)})


def _off(value: Value) -> Value:
    if isinstance(value, tuple):  # a row of probabilities
        return (_off_number(value[0]), *value[1:])
    return _off_number(value)


def _off_number(value: Number) -> Number:
    return value + 1 if isinstance(value, int) else value + 0.5
