"""``bundle drift --json``: the analysis as a dict of a stable shape (README, "Drift").

Every key is always present: ``features`` is empty and ``prediction`` null without a baseline.
"""

from __future__ import annotations

from typing import Any

from edgebundle.builder.drift.analysis import Drift, FeatureDrift, summary
from edgebundle.runtime.document import dump


def summary_dict(drift: Drift) -> dict[str, Any]:
    r = drift.report
    p = drift.prediction
    return {
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
        "thresholds": dump(r.thresholds),
        "verdict": drift.verdict,
        "shifted": list(drift.shifted),
        "summary": summary(drift),
        "features": [_feature_dict(f) for f in drift.features],
        "prediction": None
        if p is None
        else {
            "kind": drift.prediction_kind,
            "verdict": p.verdict,
            "psi": p.psi,
            "p_value": p.p_value,
        },
    }


def _feature_dict(f: FeatureDrift) -> dict[str, Any]:
    return {
        "name": f.name,
        "verdict": f.verdict,
        "psi": f.histogram.psi,
        "p_value": f.histogram.p_value,
        "missing_rate": f.missing_rate,
        "baseline_missing_rate": f.baseline_missing_rate,
        "missing_rate_shift": f.missing_rate_shift,
    }
