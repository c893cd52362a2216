"""Real models and real signed bundles for the runtime's scoring tests.

Models are small XGBoost models converted by the builder's lossless float emitter, so the
Scorer runs real ONNX of the only kind it accepts: the kind edgebundle builds.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import xgboost as xgb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.convert.emit_float import emit_float
from edgebundle.builder.convert.link import BuiltModel, assemble
from edgebundle.builder.convert.load import load_model
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.manifest import Manifest, OutputSpec
from edgebundle.runtime.selftest import Selftest, Tolerance
from edgebundle.runtime.signing import MANIFEST_CONTEXT, SignatureFile, sign

FEATURES = ("f0", "f1", "f2", "f3")
RUNTIME = [sys.executable, "-m", "edgebundle.runtime"]
Outputs = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Model:
    onnx: bytes
    task: str
    objective: str
    num_class: int
    outputs: tuple[OutputSpec, ...]
    reference: Callable[[npt.NDArray[np.float32]], Outputs]  # XGBoost's own predictions

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURES


def rows(n: int, seed: int = 0, missing: float = 0.1) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _target(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    signal: npt.NDArray[np.float64] = np.nan_to_num(x[:, 0] - 0.5 * x[:, 1] + 0.25 * x[:, 2])
    return signal.astype(np.float64)


def _built(model: Any) -> BuiltModel:
    """``model`` through the builder's lossless float emitter and link: the runtime refuses
    any graph edgebundle does not build (``runtime.graphcheck``)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.json"
        model.save_model(path)
        source = load_model(path)
    ensemble = source.ensemble
    graph = emit_float(ensemble)
    return assemble(graph, source.objective.link, ensemble.num_features, ensemble.num_outputs)


@functools.cache
def regression() -> Model:
    x = rows(400)
    model = xgb.XGBRegressor(n_estimators=12, max_depth=3, learning_rate=0.3)
    model.fit(x, 10 * _target(x) + 3)
    built = _built(model)
    return Model(
        onnx=built.onnx_bytes,
        task="regression",
        objective="reg:squarederror",
        num_class=1,
        outputs=built.outputs,
        reference=lambda x: {"prediction": model.predict(x)},
    )


@functools.cache
def multiclass() -> Model:
    x = rows(400, seed=1)
    model = xgb.XGBClassifier(n_estimators=6, max_depth=3, objective="multi:softprob")
    model.fit(x, np.digitize(_target(x), [-0.5, 0.5]))
    built = _built(model)
    return Model(
        onnx=built.onnx_bytes,
        task="multiclass",
        objective="multi:softprob",
        num_class=3,
        outputs=built.outputs,
        reference=lambda x: {"probabilities": model.predict_proba(x), "label": model.predict(x)},
    )


@functools.cache
def binary() -> Model:
    x = rows(400, seed=2)
    model = xgb.XGBClassifier(n_estimators=6, max_depth=3, objective="binary:logistic")
    model.fit(x, (_target(x) > 0).astype(int))
    built = _built(model)
    return Model(
        onnx=built.onnx_bytes,
        task="binary",
        objective="binary:logistic",
        num_class=1,
        outputs=built.outputs,
        reference=lambda x: {
            "probability": model.predict_proba(x)[:, 1],
            "label": model.predict(x),
        },
    )


def selftest_bytes(model: Model, n: int = 16) -> bytes:
    x = rows(n, seed=99)
    expected = {spec.name: model.reference(x)[spec.name] for spec in model.outputs}
    converted = {
        spec.name: np.asarray(expected[spec.name]).astype(
            np.float32 if spec.dtype == "float32" else np.int64
        )
        for spec in model.outputs
    }
    return Selftest.from_arrays(x, converted, Tolerance(abs=1e-5, rel=1e-5)).to_bytes()


def _sha(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def manifest_for(model: Model, files: dict[str, bytes]) -> Manifest:
    proto = onnx.load_from_string(model.onnx)
    opsets = {opset.domain: opset.version for opset in proto.opset_import}
    return Manifest.from_dict(
        {
            "format": "edgebundle.manifest/1",
            "name": f"test-{model.task}",
            "version": "1.0.0",
            "created": "2025-01-31T12:00:00Z",
            "source": {
                "framework": "xgboost",
                "framework_version": xgb.__version__,
                "sha256": hashlib.sha256(b"source").hexdigest(),
                "objective": model.objective,
                "num_class": model.num_class,
                "num_trees": 6,
                "best_iteration": None,
                "num_features": len(FEATURES),
            },
            "task": model.task,
            "inputs": {
                "features": [{"name": name, "type": "float"} for name in FEATURES],
                "missing": "nan",
            },
            "outputs": [spec.to_dict() for spec in model.outputs],
            "precision": "float",
            "quantization": None,
            "parity": {
                "reference": "xgboost predict",
                "rows": 10,
                "data_rows": 10,
                "synthesized_rows": 0,
                "max_abs_error": 0.0,
                "error_scale": 1.0,
                "max_error": 0.0,
                "label_agreement": None,
                "budget": {"max_error": 0.001, "min_label_agreement": None},
                "passed": True,
            },
            "requirements": {"onnxruntime": "1.20.0", "opsets": opsets},
            "files": {name: _sha(data) for name, data in files.items()},
        }
    )


@dataclass(frozen=True)
class BundleFiles:
    bundle: Path
    public_key: Path
    signing_key: Ed25519PrivateKey


def write_signed_bundle(
    directory: Path, model: Model, onnx_bytes: bytes | None = None
) -> BundleFiles:
    """A real signed bundle of ``model`` (optionally with other ONNX bytes) and its public key."""
    files = {
        "model.onnx": model.onnx if onnx_bytes is None else onnx_bytes,
        "selftest.json": selftest_bytes(model),
    }
    manifest = manifest_for(model, files).to_bytes()
    key = Ed25519PrivateKey.generate()
    signatures = SignatureFile(signatures=(sign(key, MANIFEST_CONTEXT, manifest),)).to_bytes()
    bundle = directory / f"test-{model.task}-1.0.0.bundle"
    bundle.write_bytes(write_bundle(manifest, signatures, files, mtime=0))
    public_key = directory / f"{model.task}.pub"
    public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return BundleFiles(bundle=bundle, public_key=public_key, signing_key=key)
