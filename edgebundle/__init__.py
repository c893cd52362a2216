"""edgebundle: ship a trained XGBoost model to small Linux devices as a signed, int8-quantized
ONNX bundle, and run it there.

    import edgebundle

    model = edgebundle.load("credit-score-1.4.0.bundle", trust="signing.pub")
    model.predict(rows)          # as xgboost's Booster.predict: any real dtype, lists, DataFrames
    model.score(rows)            # the records `bundle-runtime score` writes

    edgebundle.build("model.json", name="credit-score", version="1.4.0", key="signing.key")

The device runtime is ``edgebundle.runtime`` (onnxruntime, numpy, cryptography); the
workstation side, ``edgebundle.builder``, needs the ``build`` extra. Names are resolved on
first use, so importing this package costs nothing until a model is loaded or built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebundle.runtime import __version__

if TYPE_CHECKING:
    from edgebundle.builder.api import build
    from edgebundle.runtime.api import Model, load
    from edgebundle.runtime.errors import BundleError

__all__ = ["BundleError", "Model", "__version__", "build", "load"]

_LAZY = {
    "BundleError": "edgebundle.runtime.errors",
    "Model": "edgebundle.runtime.api",
    "load": "edgebundle.runtime.api",
    "build": "edgebundle.builder.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgebundle' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
