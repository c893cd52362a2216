"""The Python face of the workstation side: ``build`` is ``bundle build`` without the CLI."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.build import BuildOptions, BuildResult
from edgebundle.builder.build import build as run_build
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key

PathLike = str | os.PathLike[str]
Key = PathLike | Ed25519PrivateKey


def build(
    model: PathLike,
    *,
    name: str,
    version: str,
    key: Key | Sequence[Key],
    out_dir: PathLike = "bundles",
    data: PathLike | None = None,
    precision: str = "auto",
    optimize: str = "latency",
    max_error: float | None = None,
    min_label_agreement: float | None = None,
    use_best_iteration: bool = True,
    force: bool = False,
    passphrase: bytes | None = None,
) -> BuildResult:
    """Convert ``model`` (anything XGBoost loads), prove parity with XGBoost, and write a signed
    ``NAME-VERSION.bundle`` into ``out_dir``; the result is the report ``bundle build`` prints
    (``edgebundle.builder.report.format_report``).

    ``key``: the private signing key(s), as PEM paths (``passphrase`` for encrypted ones) or
    loaded keys. ``precision`` ``"auto"`` ships float or int8, whichever serves ``optimize``
    (``"latency"``, ``"size"`` or ``"memory"``) better; ``"int8"`` or ``"float"`` force it.
    Raises a ``BundleError`` (``BudgetMissedError`` with the candidates' report when no
    precision meets the error budget); nothing is signed then.
    """
    keys = [key] if isinstance(key, (str, os.PathLike, Ed25519PrivateKey)) else list(key)
    options = BuildOptions(
        model=Path(model),
        name=name,
        version=Version.parse(version),
        keys=tuple(_private(k, passphrase) for k in keys),
        out_dir=Path(out_dir),
        data=None if data is None else Path(data),
        precision=precision,
        optimize=optimize,
        max_error=max_error,
        min_label_agreement=min_label_agreement,
        use_best_iteration=use_best_iteration,
        force=force,
    )
    return run_build(options)


def _private(key: Key, passphrase: bytes | None) -> Ed25519PrivateKey:
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(Path(key), passphrase)
