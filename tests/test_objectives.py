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

from builder.cli import main
from tests.xgbmodels import NAMES, OBJECTIVES, Trained, json_lines, score, threshold_rows, train

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
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    cache: dict[str, Trained] = {}
    return cache


def _model(models: dict[str, Trained], objective: str, root: Path) -> Trained:
    if objective not in models:
        folder = root / objective.replace(":", "_")
        folder.mkdir(parents=True)
        models[objective] = train(objective, folder)
    return models[objective]


def build(model: Path, keys: Any, out: Path, *extra: str, name: str = "m") -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["build", str(model), "--name", name, "--version", "1.0.0", "--key", str(keys.private),
         "--out", str(out), "--json", *extra],
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


@pytest.mark.parametrize("precision", ["float", "int8"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_round_trip(
    objective: str,
    precision: str,
    models: dict[str, Trained],
    keys: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    trained = _model(models, objective, tmp_path_factory.mktemp("models"))
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
