"""What counts mean: the population stability index of live counts against baseline shares,
its customary reading, and a one-line verdict on a window of counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebundle.runtime.monitor.report import Window
    from edgebundle.runtime.stats import Baseline

# An empty bin would make the index infinite; the usual floor of 0.01% makes an emptied 5%
# baseline bin add 0.31 instead: a shift, and finite.
PSI_FLOOR = 1e-4
# The customary reading of the index: below 0.1 stable, 0.1 to 0.2 worth watching, above 0.2 a
# population that has shifted.
PSI_WATCH = 0.1
PSI_SHIFTED = 0.2
# PSI bins present values only: a feature missing 10 points more often than in the baseline
# (a failing sensor, a changed pipeline) is flagged on its own.
MISSING_SHIFT_WATCH = 0.1


def psi(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """Population stability index of live ``counts`` against baseline shares (None: no rows)."""
    total = sum(counts)
    if total == 0:
        return None
    index = 0.0
    for share, count in zip(expected, counts, strict=True):
        e = max(share, PSI_FLOOR)
        a = max(count / total, PSI_FLOOR)
        index += (a - e) * math.log(a / e)
    return index


def psi_level(value: float | None) -> str:
    if value is None:
        return "no rows"
    if value > PSI_SHIFTED:
        return "shifted"
    return "watch" if value > PSI_WATCH else "stable"


def verdict(window: Window, baseline: Baseline | None) -> str:
    """One line on a window: which features shifted, need watching, went missing, and the
    predictions' PSI."""
    if baseline is None:
        return f"{window.rows} rows; no baseline (built without --data), so drift is unknown"
    if window.rows == 0:
        return "no rows yet"
    scored, all_missing, missing_more = [], [], []
    for live, base in zip(window.features, baseline.features, strict=True):
        value = live.psi(base)
        if value is None:
            all_missing.append(live.name)  # the most drastic change there is, yet no PSI
        else:
            scored.append((value, live.name))
        shift = live.missing_rate_shift(base)
        if value is not None and shift is not None and shift > MISSING_SHIFT_WATCH:
            missing_more.append(f"{live.name} +{100 * shift:.0f} pp")
    scored.sort(key=lambda item: -item[0])
    shifted = [f"{name} {value:.2f}" for value, name in scored if value > PSI_SHIFTED]
    watch = [f"{name} {value:.2f}" for value, name in scored if PSI_WATCH < value <= PSI_SHIFTED]
    head = f"{len(shifted)} of {len(window.features)} features shifted (PSI > {PSI_SHIFTED})"
    parts = [head + (": " + ", ".join(shifted) if shifted else "")]
    for label, names in (
        (f"{len(watch)} to watch (PSI > {PSI_WATCH})", watch),
        ("all missing", all_missing),
        ("missing more often", missing_more),
    ):
        if names:
            parts.append(f"{label}: " + ", ".join(names))
    prediction = window.prediction_psi(baseline)
    if prediction is not None:
        parts.append(f"prediction PSI {prediction:.2f} ({psi_level(prediction)})")
    return "; ".join(parts)
