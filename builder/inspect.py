"""``bundle inspect``: what a bundle claims, for a human at a workstation (not a verification)."""

from __future__ import annotations

from typing import Any

from edgebundle.runtime.bundle import DEFAULT_LIMITS, read_members_unverified
from edgebundle.runtime.manifest import parse_manifest
from edgebundle.runtime.signing import parse_signature_file


def inspect_bundle(data: bytes) -> dict[str, Any]:
    """Manifest, member sizes and signing key ids, parsed strictly but NOT verified."""
    members = read_members_unverified(data, DEFAULT_LIMITS)
    manifest = parse_manifest(members["manifest.json"])
    signatures = parse_signature_file(members["manifest.sig"])
    return {
        "verified": False,
        "manifest": manifest.to_dict(),
        "members": {name: len(content) for name, content in members.items()},
        "signatures": [entry.keyid for entry in signatures.signatures],
    }
