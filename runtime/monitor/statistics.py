"""What counts mean: each histogram of live counts read against its baseline shares as a
``verdict`` — ``ok``, ``shift`` or ``too_few_rows`` — with the two numbers behind it.

- the **population stability index** (PSI) is the effect size: how far the live shares moved;
- a **chi-square test** of the counts against the baseline shares is the significance: how
  likely a move that large is from sampling noise alone (``p_value``).

A ``shift`` needs both: a PSI above ``PSI_SHIFTED`` (or a missing rate that moved more than
``MISSING_SHIFT``) *and* a p-value below ``ALPHA``. A large fleet makes a tiny, harmless move
significant (PSI small: ``ok``); a handful of rows makes noise look like a big PSI (not
significant: ``ok``, and below ``MIN_ROWS`` no verdict at all: ``too_few_rows``).

Why ``MIN_ROWS = 200``. With live shares ``a`` near baseline shares ``e``,
``ln(a/e) ≈ (a − e)/e``, so ``PSI = Σ (a − e)·ln(a/e) ≈ Σ (a − e)²/e = X²/n``: n times the PSI
is Pearson's chi-square statistic, which for n rows drawn from the baseline itself (no shift)
is chi-square distributed with ``bins − 1`` degrees of freedom. PSI's noise therefore shrinks
as ``(bins − 1)/n`` on average, and ``P(PSI > t | no shift) = P(χ²(bins − 1) > n·t)``. A
feature has at most ``MAX_GROUPS`` = 20 bins (``runtime.stats``), the noisiest case: with
t = 0.2, that chance is 1% at n = 181 (χ²₁₉'s 99th percentile is 36.19 = 181 × 0.2) and 0.33%
at n = 200. Below 200 rows a PSI above the threshold is too often noise to be worth a verdict;
at 5 rows an unshifted feature's PSI is routinely 1–10. Sampled (4,000 windows of 200 rows
from the baseline itself), PSI exceeds 0.2 in ~1% of windows over 20 equal bins and ~2.6% when
four bins hold 1–3% (the floor's log ratio weighs an emptied small bin heavily); the
chi-square condition keeps the false ``shift`` under 0.5% in both.
``tests/runtime/test_drift_statistics.py`` checks these numbers with this module's own
chi-square survival function and by sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from edgebundle.runtime.document import FRACTION, POSITIVE, count

OK = "ok"
SHIFT = "shift"
TOO_FEW_ROWS = "too_few_rows"
VERDICTS = (OK, SHIFT, TOO_FEW_ROWS)

# An empty bin would make the index infinite; the usual floor of 0.01% makes an emptied 5%
# baseline bin add 0.31 instead: a shift, and finite.
PSI_FLOOR = 1e-4
# The customary reading of the index: above 0.2 a population that has shifted.
PSI_SHIFTED = 0.2
# Significance level of the chi-square test: a shift must be this unlikely under no change.
ALPHA = 0.01
# PSI bins present values only: a feature missing 10 points more (or less) often than in the
# baseline (a failing sensor, a changed pipeline) is a shift on its own.
MISSING_SHIFT = 0.1
# See the module docstring: PSI's sampling noise at 20 bins and this many rows.
MIN_ROWS = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class Thresholds:
    """The rule a report's verdicts were given by, written into the report so a reader
    re-derives them with the rule the device used."""

    min_rows: Annotated[int, count(minimum=1)]
    psi: Annotated[float, POSITIVE]
    p_value: Annotated[float, FRACTION]
    missing_rate_shift: Annotated[float, FRACTION]


DEFAULT_THRESHOLDS = Thresholds(
    min_rows=MIN_ROWS, psi=PSI_SHIFTED, p_value=ALPHA, missing_rate_shift=MISSING_SHIFT
)


def psi(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """Population stability index of live ``counts`` against baseline shares (None: no rows)."""
    total = sum(counts)
    if total == 0:
        return None
    index = 0.0
    for share, n in zip(expected, counts, strict=True):
        e = max(share, PSI_FLOOR)
        a = max(n / total, PSI_FLOOR)
        index += (a - e) * math.log(a / e)
    return index


def chi_square(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """Pearson's statistic of ``counts`` against shares ``expected`` (floored like the PSI, so
    a bin the baseline never saw weighs heavily but finitely); None without rows."""
    total = sum(counts)
    if total == 0:
        return None
    floored = [max(share, PSI_FLOOR) for share in expected]
    scale = sum(floored)
    statistic = 0.0
    for share, n in zip(floored, counts, strict=True):
        mean = total * share / scale
        statistic += (n - mean) ** 2 / mean
    return statistic


def p_value(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """The chance of counts at least this far from ``expected`` if the live rows were drawn
    from the baseline: the chi-square test on ``len(counts) - 1`` degrees of freedom."""
    statistic = chi_square(expected, counts)
    if statistic is None:
        return None
    if len(counts) < 2:
        return 1.0  # one bin: every row falls in it, nothing can move
    return chi2_sf(statistic, len(counts) - 1)


def judge(
    *,
    rows: int,
    present: int,
    psi_value: float | None,
    p: float | None,
    missing_rate_shift: float | None,
    thresholds: Thresholds,
) -> str:
    """The verdict on one histogram of ``rows`` rows, ``present`` of them with a value."""
    if rows < thresholds.min_rows:
        return TOO_FEW_ROWS
    values_moved = (
        present >= thresholds.min_rows and psi_value is not None and psi_value > thresholds.psi
    )
    missing_moved = (
        missing_rate_shift is not None and abs(missing_rate_shift) > thresholds.missing_rate_shift
    )
    if p is not None and p < thresholds.p_value and (values_moved or missing_moved):
        return SHIFT
    # Few values (most rows missing, as in the baseline): their PSI cannot be judged.
    return TOO_FEW_ROWS if present < thresholds.min_rows else OK


# --- the chi-square distribution, stdlib only ------------------------------------------------

_EPSILON = 1e-15
_MAX_TERMS = 10_000
_TINY = 1e-300


def chi2_sf(x: float, dof: int) -> float:
    """``P(χ²(dof) > x)``: the regularized upper incomplete gamma function Q(dof/2, x/2)."""
    if dof < 1:
        raise ValueError("dof must be >= 1")
    if x <= 0:
        return 1.0
    a, z = dof / 2, x / 2
    if z < a + 1:
        return max(0.0, 1.0 - _lower_series(a, z))
    return _upper_fraction(a, z)


def _prefix(a: float, z: float) -> float:
    """``z^a e^-z / Γ(a)``, in logs so a large ``z`` does not overflow."""
    return math.exp(a * math.log(z) - z - math.lgamma(a))


def _lower_series(a: float, z: float) -> float:
    """P(a, z) by its power series, which converges fast for ``z < a + 1``."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_TERMS):
        denominator += 1
        term *= z / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * _prefix(a, z)


def _upper_fraction(a: float, z: float) -> float:
    """Q(a, z) by its continued fraction (modified Lentz), for ``z >= a + 1``."""
    b = z + 1 - a
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < _EPSILON:
            break
    return h * _prefix(a, z)
