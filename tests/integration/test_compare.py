"""``bundle compare``: real models built by the real CLI, scored by the runtime's scorer."""

from __future__ import annotations

import csv
import fcntl
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost as xgb

from edgebundle.builder.compare.bundles import compare_bundles
from edgebundle.builder.compare.metrics import Metric, auc, log_loss, multiclass_log_loss
from edgebundle.builder.compare.results import Comparison
from edgebundle.builder.compare.text import format_comparison
from edgebundle.builder.keys import generate_keypair
from edgebundle.runtime.errors import InputError
from edgebundle.runtime.signing import TrustedKeys
from tests.conftest import KeyFiles
from tests.support.xgbmodels import NAMES, features, labels, run, train

ROWS = 400
UNLABELLED = 10
REGRESSOR_FEATURES = NAMES[:5]  # unlike the classifiers: compare must refuse to mix them


@dataclass(frozen=True)
class Pair:
    old: Path
    new: Path
    data: Path


def build(model: Path, name: str, version: str, keys: KeyFiles, out: Path) -> Path:
    proc = run(
        "bundle",
        ["build", str(model), "--name", name, "--version", version,
         "--key", str(keys.private), "--out", str(out)],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / f"{name}-{version}.bundle"


def write_csv(path: Path, x: npt.NDArray[np.float32], y: npt.NDArray[np.float64]) -> Path:
    """Every feature column plus ``label``; the first UNLABELLED rows have an empty label."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*NAMES, "label"])
        for i, (row, target) in enumerate(zip(x, y, strict=True)):
            cells = ["" if math.isnan(v) else repr(float(v)) for v in row]
            writer.writerow([*cells, "" if i < UNLABELLED else repr(float(target))])
    return path


def compare(pair: Pair, keys: KeyFiles, *extra: str) -> Any:
    return run(
        "bundle",
        ["compare", str(pair.old), str(pair.new), "--data", str(pair.data),
         "--trust", str(keys.public), *extra],
    )  # fmt: skip


def compare_json(pair: Pair, keys: KeyFiles, *extra: str) -> dict[str, Any]:
    proc = compare(pair, keys, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def assert_one_line_error(proc: Any) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return str(lines[0])


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory all xdist workers of this run see, so each bundle is built only once."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def once(directory: Path, make: Callable[[Path], object]) -> Path:
    """``directory``, filled by ``make`` in whichever worker comes first."""
    with (directory.parent / f"{directory.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "done").exists():
            directory.mkdir(exist_ok=True)
            make(directory)
            (directory / "done").touch()
    return directory


@pytest.fixture(scope="session")
def signer(shared: Path) -> KeyFiles:
    # conftest's `keys` differ per worker; bundles built once must verify in every worker
    directory = once(shared / "compare-keys", lambda d: generate_keypair(d, None))
    return KeyFiles(private=directory / "signing.key", public=directory / "signing.pub")


def make_classifiers(directory: Path, keys: KeyFiles) -> None:
    """A good binary classifier (1.0.0) and a far weaker one (1.1.0) of the same name."""
    (directory / "good").mkdir()
    (directory / "weak").mkdir()
    good = train("binary:logistic", directory / "good", rounds=60)
    weak = train("binary:logistic", directory / "weak", rounds=2, max_depth=1)
    build(good.path, "credit", "1.0.0", keys, directory)
    build(weak.path, "credit", "1.1.0", keys, directory)
    x = features(ROWS, seed=7)
    write_csv(directory / "rows.csv", x, labels("binary:logistic", x, seed=8))


@pytest.fixture(scope="session")
def classifiers(shared: Path, signer: KeyFiles) -> Pair:
    directory = once(shared / "compare-classifiers", lambda d: make_classifiers(d, signer))
    return Pair(
        directory / "credit-1.0.0.bundle", directory / "credit-1.1.0.bundle", directory / "rows.csv"
    )


def train_regressor(out: Path, rounds: int, max_depth: int) -> Path:
    """A squared-error regressor on the first five features only."""
    x = features(500)
    y = labels("reg:squarederror", x)
    columns = len(REGRESSOR_FEATURES)
    dtrain = xgb.DMatrix(x[:, :columns], label=y, feature_names=list(REGRESSOR_FEATURES))
    params = {"objective": "reg:squarederror", "max_depth": max_depth, "nthread": 1, "seed": 3}
    path = out / f"regressor-{rounds}.json"
    xgb.train(params, dtrain, num_boost_round=rounds).save_model(path)
    return path


def make_regressors(directory: Path, keys: KeyFiles) -> None:
    build(train_regressor(directory, 40, 4), "price", "1.0.0", keys, directory)
    build(train_regressor(directory, 2, 1), "price", "1.1.0", keys, directory)
    x = features(ROWS, seed=7)
    write_csv(directory / "rows.csv", x, labels("reg:squarederror", x, seed=8))


@pytest.fixture(scope="session")
def regressors(shared: Path, signer: KeyFiles) -> Pair:
    directory = once(shared / "compare-regressors", lambda d: make_regressors(d, signer))
    return Pair(
        directory / "price-1.0.0.bundle", directory / "price-1.1.0.bundle", directory / "rows.csv"
    )


# --- reports -----------------------------------------------------------------------------------


def test_weaker_classifier_is_reported_worse(classifiers: Pair, signer: KeyFiles) -> None:
    doc = compare_json(classifiers, signer, "--labels", "label")
    assert (doc["old"]["version"], doc["new"]["version"]) == ("1.0.0", "1.1.0")
    assert doc["labels"] == {"column": "label", "rows": ROWS - UNLABELLED, "missing": UNLABELLED}
    metrics = doc["metrics"]
    assert metrics["auc"]["new"] < metrics["auc"]["old"] - 0.05
    assert metrics["accuracy"]["new"] < metrics["accuracy"]["old"]
    assert metrics["log_loss"]["new"] > metrics["log_loss"]["old"]
    assert {m["verdict"] for m in metrics.values()} == {"worse"}
    assert "AUC" in doc["verdict"] and doc["verdict"].endswith("worse)")
    agreement = doc["agreement"]
    assert agreement["rows"] == ROWS
    assert 0.5 < agreement["label_agreement"] < 1
    assert agreement["shift"]["output"] == "probability"
    assert agreement["shift"]["max_abs_diff"] > 0
    assert agreement["mean_abs_probability_diff"] > 0
    for side in ("old", "new"):
        assert doc[side]["bytes"] == Path(doc[side]["bundle"]).stat().st_size
        assert doc[side]["load_ms"] > 0
        assert doc[side]["single_row_us"] > 0
    assert doc["notes"] == []


def in_process(pair: Pair, signer: KeyFiles) -> Comparison:
    """The same comparison without a process start (and its seconds of imports)."""
    trusted = TrustedKeys.from_paths([signer.public])
    return compare_bundles(pair.old, pair.new, pair.data, trusted, "label")


def test_text_report_is_a_table_with_a_verdict(classifiers: Pair, signer: KeyFiles) -> None:
    lines = format_comparison(in_process(classifiers, signer)).splitlines()
    assert lines[0].startswith("OLD  credit 1.0.0")
    assert lines[1].startswith("NEW  credit 1.1.0")
    header = next(line for line in lines if line.rstrip().endswith("CHANGE"))
    auc_line = next(line for line in lines if line.startswith("AUC "))
    assert auc_line.endswith("worse")
    # right-aligned: the NEW value ends where its header does
    assert auc_line[: header.index("NEW") + len("NEW")].endswith(auc_line.split()[2])
    assert lines[-1].startswith("verdict: labels agree on ")
    assert "→" in lines[-1]


def test_a_bundle_against_itself_agrees_exactly(classifiers: Pair, signer: KeyFiles) -> None:
    result = in_process(Pair(classifiers.old, classifiers.old, classifiers.data), signer)
    agreement = result.agreement
    assert agreement.labels == 1.0
    assert agreement.shift is not None
    assert agreement.shift.mean_diff == 0
    assert agreement.shift.max_abs_diff == 0
    assert agreement.probability_diff == 0
    assert {m.change for m in result.metrics} == {0}
    assert {m.verdict for m in result.metrics} == {"same"}


def test_weaker_regressor_has_higher_errors(regressors: Pair, signer: KeyFiles) -> None:
    result = in_process(regressors, signer)
    rmse, mae = result.metrics
    assert (rmse.key, mae.key) == ("rmse", "mae")
    assert rmse.new > rmse.old * 1.2
    assert mae.new > mae.old
    assert rmse.verdict == "worse"
    assert result.agreement.labels is None
    assert result.agreement.shift is not None
    assert result.agreement.shift.output == "prediction"
    assert result.verdict.startswith("prediction moves by ")


# --- refusals ----------------------------------------------------------------------------------


def test_bundles_with_other_features_are_refused(
    classifiers: Pair, regressors: Pair, signer: KeyFiles
) -> None:
    mixed = Pair(old=classifiers.old, new=regressors.old, data=classifiers.data)
    line = assert_one_line_error(compare(mixed, signer))
    assert "different features" in line
    assert "OLD has 6 features, NEW has 5" in line


def test_tampered_bundle_is_refused(classifiers: Pair, signer: KeyFiles, tmp_path: Path) -> None:
    data = bytearray(classifiers.new.read_bytes())
    data[512 + 100] ^= 0x01  # inside manifest.json, the first member
    tampered = tmp_path / "credit-1.1.0.bundle"
    tampered.write_bytes(data)
    pair = Pair(old=classifiers.old, new=tampered, data=classifiers.data)
    line = assert_one_line_error(compare(pair, signer))
    assert str(tampered) in line
    assert "signature" in line


def test_labels_column_must_exist(classifiers: Pair, signer: KeyFiles) -> None:
    trusted = TrustedKeys.from_paths([signer.public])
    with pytest.raises(InputError, match=r"no column 'target' for --labels \(found 'label'\)"):
        compare_bundles(classifiers.old, classifiers.new, classifiers.data, trusted, "target")


# --- metrics, in memory ------------------------------------------------------------------------


def brute_force_auc(y: npt.NDArray[np.float64], score: npt.NDArray[np.float64]) -> float:
    pos, neg = score[y == 1], score[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def tied_scores(rows: int = 300) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(5)
    y = (rng.random(rows) < 0.4).astype(np.float64)
    score = np.round(rng.random(rows) * 0.6 + 0.3 * y, 1)  # rounding makes many ties
    return y, score


def test_auc_counts_ties_as_half() -> None:
    y, score = tied_scores()
    assert auc(y, score) == pytest.approx(brute_force_auc(y, score), abs=1e-12)
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))  # one class: undefined


def test_metrics_match_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    y, score = tied_scores()
    assert auc(y, score) == pytest.approx(metrics.roc_auc_score(y, score), abs=1e-12)
    probability = np.clip(score, 0.05, 0.95)
    assert log_loss(y, probability) == pytest.approx(metrics.log_loss(y, probability))
    rng = np.random.default_rng(6)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    classes = rng.integers(0, 3, 200).astype(np.float64)
    assert multiclass_log_loss(classes, probabilities) == pytest.approx(
        metrics.log_loss(classes, probabilities, labels=[0, 1, 2])
    )


@pytest.mark.parametrize(
    ("higher_is_better", "old", "new", "verdict"),
    [(True, 0.9, 0.8, "worse"), (False, 0.4, 0.3, "better"), (False, 0.4, 0.4, "same")],
)
def test_metric_direction(higher_is_better: bool, old: float, new: float, verdict: str) -> None:
    metric = Metric(key="m", title="m", old=old, new=new, higher_is_better=higher_is_better)
    assert metric.verdict == verdict
