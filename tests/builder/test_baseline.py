"""The drift baseline a bundle built with --data carries (stats.json, signed like every file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgebundle.builder.convert.load import load_model
from edgebundle.runtime.bundle import open_bundle, read_bundle_file
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.signing import TrustedKeys
from edgebundle.runtime.stats import MAX_GROUPS, Baseline, bin_edges, parse_stats
from tests.conftest import KeyFiles
from tests.support.xgbmodels import NAMES, run, train


def build(model: Path, keys: KeyFiles, out: Path, *extra: str) -> dict[str, bytes]:
    proc = run(
        "bundle",
        [
            "build",
            str(model),
            "--name",
            "m",
            "--version",
            "1.0.0",
            "--key",
            str(keys.private),
            "--out",
            str(out),
            *extra,
        ],
    )
    assert proc.returncode == 0, proc.stderr
    bundle = open_bundle(
        read_bundle_file(out / "m-1.0.0.bundle"), TrustedKeys.from_paths([keys.public])
    )
    return dict(bundle.files)


@pytest.mark.parametrize(
    ("objective", "kind"),
    [("binary:logistic", "probability"), ("multi:softmax", "class"), ("reg:squarederror", "value")],
)
def test_data_rows_give_a_signed_baseline(
    objective: str, kind: str, keys: KeyFiles, tmp_path: Path
) -> None:
    trained = train(objective, tmp_path, rounds=30, max_bin=256)
    np.save(tmp_path / "rows.npy", trained.x_test)
    files = build(trained.path, keys, tmp_path / "out", "--data", str(tmp_path / "rows.npy"))
    stats = parse_stats(files["stats.json"])
    assert stats.rows == len(trained.x_test)
    thresholds = load_model(trained.path).ensemble.thresholds_per_feature()
    assert max(len(t) for t in thresholds) > MAX_GROUPS  # merging is exercised
    for f, feature in enumerate(stats.features):
        assert feature.name == NAMES[f]
        assert len(feature.shares) <= MAX_GROUPS
        # the model's own cuts, written as shortest float32 text
        assert set(bin_edges(feature.edges).tolist()) <= set(thresholds[f].tolist())
        assert all(len(repr(e)) <= 16 for e in feature.edges)
        column = trained.x_test[:, f]
        assert feature.missing_rate == pytest.approx(np.mean(np.isnan(column)))
        assert sum(feature.shares) == pytest.approx(1.0, abs=1e-5)  # 6-decimal shares
    assert stats.prediction.kind == kind
    assert sum(stats.prediction.shares) == pytest.approx(1.0, abs=1e-5)
    if kind == "class":
        assert len(stats.prediction.shares) == 3


def test_no_data_no_baseline(keys: KeyFiles, tmp_path: Path) -> None:
    trained = train("binary:logistic", tmp_path, rounds=5)
    assert "stats.json" not in build(trained.path, keys, tmp_path / "out")


def test_stats_format_is_strict() -> None:
    good = {
        "format": "edgebundle.stats/1",
        "rows": 10,
        "features": [{"name": "age", "edges": [1.0], "shares": [0.5, 0.5], "missing_rate": 0.1}],
        "prediction": {"kind": "value", "edges": [], "shares": [1.0]},
    }
    stats = Baseline.from_dict(good)
    assert parse_stats(stats.to_bytes()) == stats
    bad_shares = json.loads(json.dumps(good))
    bad_shares["features"][0]["shares"] = [0.5]
    with pytest.raises(ManifestError, match="one share"):
        Baseline.from_dict(bad_shares)
    unsorted = json.loads(json.dumps(good))
    unsorted["features"][0]["edges"] = [2.0, 1.0]
    unsorted["features"][0]["shares"] = [0.2, 0.3, 0.5]
    with pytest.raises(ManifestError, match="increasing"):
        Baseline.from_dict(unsorted)
