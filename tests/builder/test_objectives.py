"""Every supported objective: build through the CLI in both precisions, score through
`bundle-runtime score` as a subprocess, compare with XGBoost's own predict()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

from edgebundle.builder.cli import main
from edgebundle.builder.convert.load import load_model
from tests.support.xgbmodels import (
    NAMES,
    OBJECTIVES,
    Trained,
    json_lines,
    score,
    threshold_rows,
    train,
)

# first output of each objective's records, which must equal predict()
PRIMARY = {
    "binary:logistic": "probability",
    "binary:logitraw": "score",
    "binary:hinge": "label",
    "multi:softprob": "probabilities",
    "multi:softmax": "label",
}
LABELS = {"binary:logistic", "binary:logitraw", "binary:hinge", "multi:softprob", "multi:softmax"}


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    """Each objective's model, trained once for both precisions."""
    return {}


def _model(
    models: dict[str, Trained], objective: str, root: Path, booster: str = "gbtree"
) -> Trained:
    key = f"{booster}-{objective}"
    if key not in models:
        folder = root / key.replace(":", "_")
        folder.mkdir(parents=True)
        params = DART if booster == "dart" else {}
        models[key] = train(objective, folder, booster=booster, **params)
    return models[key]


def build(model: Path, keys: Any, out: Path, *extra: str, name: str = "m") -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        [
            "build",
            str(model),
            "--name",
            name,
            "--version",
            "1.0.0",
            "--key",
            str(keys.private),
            "--out",
            str(out),
            "--json",
            *extra,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def check_rows(trained: Trained) -> npt.NDArray[np.float32]:
    return np.concatenate([trained.x_test, threshold_rows(trained.booster, len(NAMES))[:300]])


def primary_values(records: list[dict[str, Any]], objective: str) -> npt.NDArray[np.float64]:
    key = PRIMARY.get(objective, "prediction")
    return np.asarray([r[key] for r in records], dtype=np.float64)


# dart drops trees while training (skip_drop=0: in every round) and weights them for predict()
DART = {"rate_drop": 0.3, "skip_drop": 0.0}
BOOSTED = [("gbtree", objective) for objective in OBJECTIVES] + [
    ("dart", "binary:logistic"),
    ("dart", "reg:squarederror"),
    ("dart", "multi:softprob"),
]


@pytest.mark.parametrize("precision", ["float", "int8"])
@pytest.mark.parametrize(("booster", "objective"), BOOSTED)
def test_objective_round_trip(
    booster: str,
    objective: str,
    precision: str,
    models: dict[str, Trained],
    keys: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    trained = _model(models, objective, tmp_path_factory.mktemp("models"), booster)
    out = tmp_path_factory.mktemp("bundles")
    report = build(trained.path, keys, out, "--precision", precision)
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["passed"]
    rows = check_rows(trained)
    rc, records, stderr = score(Path(report["bundle"]), keys.public, json_lines(rows))
    assert rc == 0, stderr
    assert len(records) == len(rows)
    expected = trained.predict(rows).astype(np.float64)
    got = primary_values(records, objective)
    if objective in ("binary:hinge", "multi:softmax"):
        agreement = np.mean(got == expected)
        assert agreement >= (1.0 if precision == "float" else 0.99)
    elif precision == "float":
        # exact up to float32 summation order
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    else:
        error = np.abs(got - expected).max() / chosen["error_scale"]
        assert error <= report["budget"]["max_error"], (error, report)
    if objective in LABELS and objective not in ("binary:hinge", "multi:softmax"):
        labels = np.asarray([r["label"] for r in records])
        ref = (expected > (0.5 if objective == "binary:logistic" else 0.0)).astype(int)
        if objective == "multi:softprob":
            ref = expected.argmax(axis=1)
        assert np.mean(labels == ref) >= (1.0 if precision == "float" else 0.99)


HARD_STRUCTURES = {
    # depth ≥ 15: perfect-tree padding would need 2^depth slots, so int8 uses node arrays
    "lossguide-deep": {
        "grow_policy": "lossguide",
        "max_depth": 0,
        "max_leaves": 400,
        "min_child_weight": 0,
        "reg_lambda": 0,
        "max_bin": 1024,
    },
    # > 256 distinct thresholds in a feature
    "exact-wide": {"tree_method": "exact", "max_depth": 8, "min_child_weight": 0},
}


@pytest.mark.parametrize("case", sorted(HARD_STRUCTURES))
def test_int8_handles_deep_and_wide_trees(case: str, keys: Any, tmp_path: Path) -> None:
    trained = train("reg:squarederror", tmp_path, rounds=30, **HARD_STRUCTURES[case])
    report = build(trained.path, keys, tmp_path, "--precision", "int8")
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["precision"] in ("int8", "int16") and chosen["passed"]
    ensemble = load_model(trained.path).ensemble
    if case == "lossguide-deep":
        assert max(t.depth() for t in ensemble.trees) >= 15
        assert chosen["layout"] == "node-array"
    else:
        assert max(len(t) for t in ensemble.thresholds_per_feature()) > 256
    rows = check_rows(trained)
    rc, records, stderr = score(Path(report["bundle"]), keys.public, json_lines(rows))
    assert rc == 0, stderr
    expected = trained.predict(rows).astype(np.float64)
    error = np.abs(primary_values(records, "reg:squarederror") - expected).max()
    assert error / chosen["error_scale"] <= report["budget"]["max_error"]
