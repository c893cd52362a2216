"""``python -m bench.converters``: what onnxmltools does with the models edgebundle converts
that other converters refuse (tests/support/zoo.py), next to edgebundle's float bundle.

Per model: onnxmltools' result (refuses, with its first error line; or converts, then its
largest |error| against ``Booster.predict`` on the zoo's rows: held-out rows, threshold rows,
and for categorical models every category, unseen, negative and non-integer codes and missing)
and edgebundle's float bundle's largest |error| on the same rows. The table goes into the
README.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

import edgebundle
from edgebundle.builder.keys import generate_keypair
from tests.support.zoo import CATEGORICAL, ZOO, ZooModel, train_zoo


def onnxmltools_result(model: ZooModel) -> str:
    booster = xgb.Booster()
    booster.load_model(model.path)
    features = model.rows.shape[1]
    # onnxmltools reads only f0..fN feature names: give it those, so that it is judged on the
    # model rather than refused for its column names
    booster.feature_names = [f"f{i}" for i in range(features)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_model = convert_xgboost(
                booster, initial_types=[("input", FloatTensorType([None, features]))]
            )
        session = ort.InferenceSession(
            onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, {"input": model.rows})
    except Exception as e:  # any failure is the result being reported
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"refuses: {type(e).__name__}: {first[:90]}"
    return _best_error(model.expected, [np.asarray(o) for o in outputs])


def _best_error(expected: npt.NDArray[np.float32], outputs: list[npt.NDArray[np.float32]]) -> str:
    """onnxmltools names its outputs by its own conventions: the closest float output of the
    right size is the one to judge it by."""
    want = np.asarray(expected, dtype=np.float64)
    errors = []
    for out in outputs:
        if out.dtype.kind != "f" or out.size < want.size:
            continue
        values = out.reshape(len(want), -1).astype(np.float64)
        column = values if want.ndim == 2 else values[:, -1]
        if column.shape == want.shape:
            errors.append(float(np.nanmax(np.abs(column - want))))
    if not errors:
        shapes = ", ".join(str(o.shape) for o in outputs)
        return f"converts, outputs {shapes} do not match predict()'s {want.shape}"
    worst = min(errors)
    verdict = "mis-converts" if worst > 1e-3 * max(1.0, float(np.abs(want).max())) else "ok"
    return f"{verdict}: max \\|error\\| {worst:.3g}"


def main() -> None:
    warnings.simplefilter("ignore")  # XGBoost's notes on unused parameters
    root = Path(tempfile.mkdtemp())
    private, public = generate_keypair(root / "keys", None)
    print("| model | onnxmltools | edgebundle (float) |")
    print("|---|---|---|")
    for name in (*ZOO, *CATEGORICAL):
        model = train_zoo(name, root)
        bundle = edgebundle.build(
            model.path, name="m", version="1.0.0", key=private, out_dir=root / name,
            precision="float",
        ).path
        ours = edgebundle.load(bundle, trust=public).predict(model.rows)
        error = float(np.abs(ours.astype(np.float64) - model.expected).max())
        print(f"| {name} | {onnxmltools_result(model)} | max \\|error\\| {error:.3g} |")


if __name__ == "__main__":
    main()
