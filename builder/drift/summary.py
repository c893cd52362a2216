"""``bundle drift --json``: the analysis as a dict, counts per level and every feature's PSI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgebundle.builder.drift.analysis import LEVELS, Drift, FeatureDrift, verdict


def summary_dict(drift: Drift) -> dict[str, Any]:
    r = drift.report
    doc: dict[str, Any] = {
        "model": r.model,
        "version": r.version,
        "started": r.started,
        "generated": r.generated,
        "window": drift.window,
        "rows": {
            "since_start": r.since_start.rows,
            "recent": r.recent.rows,
            "window_rows": r.window_rows,
        },
        "baseline": r.baseline is not None,
        "verdict": verdict(drift),
    }
    if drift.prediction is None:
        return doc
    by_level = _by_level(drift.features)
    doc["counts"] = {"features": len(drift.features)} | {k: len(v) for k, v in by_level.items()}
    doc["features"] = [_feature_dict(f) for f in drift.features]
    doc["prediction"] = {
        "kind": drift.prediction_kind,
        "psi": drift.prediction.psi,
        "level": drift.prediction.level,
    }
    return doc


def _by_level(features: Sequence[FeatureDrift]) -> dict[str, list[FeatureDrift]]:
    groups: dict[str, list[FeatureDrift]] = {level: [] for level in LEVELS}
    for feature in features:
        groups[feature.histogram.level].append(feature)
    return groups


def _feature_dict(f: FeatureDrift) -> dict[str, Any]:
    return {
        "name": f.name,
        "psi": f.histogram.psi,
        "level": f.histogram.level,
        "missing_rate": f.missing_rate,
        "baseline_missing_rate": f.baseline_missing_rate,
        "missing_rate_shift": f.missing_rate_shift,
    }
