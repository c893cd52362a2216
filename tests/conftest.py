"""Shared fixtures: a valid manifest, a signing key, and a factory for real signed bundles."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.keys import generate_keypair
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.signing import MANIFEST_CONTEXT, SignatureFile, TrustedKeys, sign

BundleFactory = Callable[..., bytes]


@pytest.fixture
def payload() -> dict[str, bytes]:
    """Payload members; the bytes are arbitrary here (real ONNX models are tested elsewhere)."""
    return {
        "model.onnx": b"\x08\x07fake onnx model " * 40,
        "selftest.json": b'{"rows": []}\n',
        "stats.json": b"{}\n",
    }


def manifest_dict_for(payload: Mapping[str, bytes]) -> dict[str, Any]:
    """A valid int8 binary-classifier manifest listing ``payload`` with real sizes and hashes."""
    return {
        "format": "edgebundle.manifest/1",
        "name": "fraud-score",
        "version": "1.4.0-rc.1+build.7",
        "created": "2025-01-31T12:00:00Z",
        "source": {
            "framework": "xgboost",
            "framework_version": "3.2.0",
            "sha256": hashlib.sha256(b"the source model").hexdigest(),
            "objective": "binary:logistic",
            "num_class": 1,
            "num_trees": 300,
            "best_iteration": None,
            "num_features": 3,
        },
        "task": "binary",
        "inputs": {
            "features": [
                {"name": "amount", "type": "float"},
                {"name": "merchant category", "type": "int"},
                {"name": "hour", "type": "q"},
            ],
            "missing": "nan",
        },
        "outputs": [
            {"name": "probability", "dtype": "float32", "shape": [-1]},
            {"name": "label", "dtype": "int64", "shape": [-1]},
        ],
        "precision": "int8",
        "quantization": {
            "scheme": "perfect-tree-int8",
            "layout": "perfect",
            "leaf_bits": 8,
            "escalated": False,
            "bin_dtypes": {"uint8": 2, "uint16": 1},
            "margin_error_bound": 0.0123,
        },
        "parity": {
            "reference": "xgboost 3.2.0 Booster.predict",
            "rows": 1500,
            "data_rows": 1000,
            "synthesized_rows": 500,
            "max_abs_error": 0.0055,
            "error_scale": 1.0,
            "max_error": 0.0055,
            "label_agreement": 1.0,
            "budget": {"max_error": 0.01, "min_label_agreement": 0.995},
            "passed": True,
        },
        "requirements": {"onnxruntime": "1.20.0", "opsets": {"": 17, "ai.onnx.ml": 3}},
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in payload.items()
        },
    }


@pytest.fixture
def manifest_dict(payload: dict[str, bytes]) -> dict[str, Any]:
    return manifest_dict_for(payload)


@pytest.fixture
def manifest_bytes(manifest_dict: dict[str, Any]) -> bytes:
    """Canonical bytes of the valid manifest, formatted exactly as ``Manifest.to_bytes``."""
    text = json.dumps(manifest_dict, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(signing_key: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys([signing_key.public_key()])


def signature_file(manifest: bytes, *keys: Ed25519PrivateKey) -> bytes:
    """``manifest.sig`` bytes with one signature per key over ``manifest``."""
    entries = tuple(sign(key, MANIFEST_CONTEXT, manifest) for key in keys)
    return SignatureFile(signatures=entries).to_bytes()


@pytest.fixture
def sign_manifest() -> Callable[..., bytes]:
    """``sign_manifest(manifest_bytes, *keys)`` -> ``manifest.sig`` bytes."""
    return signature_file


@pytest.fixture
def make_bundle(
    signing_key: Ed25519PrivateKey, payload: dict[str, bytes], manifest_bytes: bytes
) -> BundleFactory:
    """Build a real signed bundle; keyword arguments replace one ingredient at a time."""

    def make(
        *,
        manifest: bytes | None = None,
        files: Mapping[str, bytes] | None = None,
        keys: tuple[Ed25519PrivateKey, ...] | None = None,
        signatures: bytes | None = None,
        mtime: int = 0,
    ) -> bytes:
        manifest = manifest_bytes if manifest is None else manifest
        if signatures is None:
            signatures = signature_file(manifest, *(keys or (signing_key,)))
        return write_bundle(manifest, signatures, payload if files is None else files, mtime)

    return make


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    """A real key pair on disk, made by the builder's keygen, for CLI tests."""
    private, public = generate_keypair(tmp_path_factory.mktemp("keys"), None)
    return KeyFiles(private=private, public=public)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    private, public = generate_keypair(tmp_path_factory.mktemp("other-keys"), None)
    return KeyFiles(private=private, public=public)
