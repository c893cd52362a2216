"""The ``edgebundle.drift/2`` report: a model's live counts in two windows, beside its baseline,
with each histogram's verdict (``ok``, ``shift``, ``too_few_rows``) and the numbers behind it.

``DriftReport`` is the JSON a device answers on ``GET /v2/models/{name}/stats`` and writes for
``bundle-runtime status``; ``bundle drift`` reads it on the workstation. Each class below is
the one description of its part of the document (``runtime.document``). PSI, p-value, missing
rates and verdicts are derived from the counts, the baseline and the report's ``thresholds``;
they are written for readers and checked against the counts when a report is read, so a report
that disagrees with itself is refused rather than shown. (``drift/1`` reports had no verdicts
and no thresholds; its readers refuse this format by name.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated

from edgebundle.runtime._json import dumps_canonical, join, loads_strict
from edgebundle.runtime.document import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    STRING,
    TIMESTAMP,
    Document,
    Rule,
    array,
    choice,
    constant,
    count,
    nested,
    optional,
    read_number,
    read_string,
)
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor.statistics import (
    DEFAULT_THRESHOLDS,
    SHIFT,
    TOO_FEW_ROWS,
    VERDICTS,
    Thresholds,
    judge,
    p_value,
    psi,
)
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import Baseline, FeatureBaseline

FORMAT = "edgebundle.drift/2"
# The recent window is counted in this many blocks, so it is never fewer rows.
BLOCKS = 10
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TOLERANCE = 1e-9  # derived values written by another machine's float arithmetic


def timestamp(seconds: float) -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime(seconds))


def _read_version(value: object, path: str) -> str:
    text = read_string(value, path)
    Version.parse(text, context=path)
    return text


_VERDICT = choice(VERDICTS)
_SHIFT_OF_RATE: Rule[float] = Rule(read_number)


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureWindow(Document):
    """One feature's live counts (``counts[k]`` rows in the baseline's bin k, ``missing``
    without a value) and what they mean against its baseline."""

    name: Annotated[str, STRING]
    counts: Annotated[tuple[int, ...], array(COUNT)]
    missing: Annotated[int, COUNT]
    psi: Annotated[float | None, optional(NON_NEGATIVE)]  # None: no value to bin
    # the chi-square test of the bins and the missing count against the baseline's shares
    p_value: Annotated[float | None, optional(FRACTION)]
    missing_rate: Annotated[float | None, optional(FRACTION)]
    missing_rate_shift: Annotated[float | None, optional(_SHIFT_OF_RATE)]
    verdict: Annotated[str, _VERDICT]

    @classmethod
    def of(
        cls,
        name: str,
        counts: tuple[int, ...],
        missing: int,
        baseline: FeatureBaseline,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> FeatureWindow:
        rows = sum(counts) + missing
        rate = missing / rows if rows else None
        shift = None if rate is None else rate - baseline.missing_rate
        index = psi(baseline.shares, counts)
        # Missingness is one more category: a feature that went missing is tested too.
        expected = (*(s * (1 - baseline.missing_rate) for s in baseline.shares),)
        p = p_value((*expected, baseline.missing_rate), (*counts, missing))
        return cls(
            name=name,
            counts=counts,
            missing=missing,
            psi=index,
            p_value=p,
            missing_rate=rate,
            missing_rate_shift=shift,
            verdict=judge(
                rows=rows,
                present=sum(counts),
                psi_value=index,
                p=p,
                missing_rate_shift=shift,
                thresholds=thresholds,
            ),
        )

    @property
    def rows(self) -> int:
        return sum(self.counts) + self.missing


@dataclass(frozen=True, kw_only=True, slots=True)
class PredictionWindow(Document):
    """The predictions' histogram against the baseline's: read like a feature's."""

    counts: Annotated[tuple[int, ...], array(COUNT)]
    psi: Annotated[float | None, optional(NON_NEGATIVE)]
    p_value: Annotated[float | None, optional(FRACTION)]
    verdict: Annotated[str, _VERDICT]

    @classmethod
    def of(
        cls,
        counts: tuple[int, ...],
        shares: tuple[float, ...],
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> PredictionWindow:
        index = psi(shares, counts)
        p = p_value(shares, counts)
        rows = sum(counts)
        verdict = judge(
            rows=rows, present=rows, psi_value=index, p=p, missing_rate_shift=None,
            thresholds=thresholds,
        )  # fmt: skip
        return cls(counts=counts, psi=index, p_value=p, verdict=verdict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Window(Document):
    """Counts over a span of rows; without a baseline there is nothing to count but rows."""

    rows: Annotated[int, COUNT]
    features: Annotated[tuple[FeatureWindow, ...], array(nested(FeatureWindow))] = ()
    prediction: Annotated[PredictionWindow | None, optional(nested(PredictionWindow))] = None

    @property
    def shifted(self) -> tuple[FeatureWindow, ...]:
        return tuple(f for f in self.features if f.verdict == SHIFT)

    def check_against(self, baseline: Baseline | None, t: Thresholds, context: str) -> None:
        """Counts that fit the baseline's bins, and derived values that are what they give."""
        if baseline is None:
            if self.features or self.prediction is not None:
                raise ManifestError("counts without a baseline", context)
            return
        if len(self.features) != len(baseline.features) or self.prediction is None:
            raise ManifestError(
                f"needs one entry per baseline feature ({len(baseline.features)}) and the "
                "prediction's counts",
                context,
            )
        for i, (live, base) in enumerate(zip(self.features, baseline.features, strict=True)):
            where = f"{join(context, 'features')}[{i}]"
            if live.name != base.name:
                raise ManifestError(f"expected feature {base.name!r}", join(where, "name"))
            _check_counts(live.counts, len(base.edges) + 1, live.rows, self.rows, where)
            expected = FeatureWindow.of(live.name, live.counts, live.missing, base, t)
            _check_derived(live, expected, where)
        where = join(context, "prediction")
        shares = baseline.prediction.shares
        counts = self.prediction.counts
        _check_counts(counts, len(shares), sum(counts), self.rows, where)
        _check_derived(self.prediction, PredictionWindow.of(counts, shares, t), where)


def _check_counts(counts: tuple[int, ...], bins: int, rows: int, window: int, where: str) -> None:
    if len(counts) != bins:
        raise ManifestError(
            f"needs {bins} counts (one per bin), got {len(counts)}", join(where, "counts")
        )
    if rows != window:
        raise ManifestError(f"counts add up to {rows}, the window has {window} rows", where)


def _check_derived(written: Document, expected: Document, where: str) -> None:
    """A derived number must be what the counts give (within another machine's rounding)."""
    theirs, ours = written.to_dict(), expected.to_dict()
    for key, value in ours.items():
        other = theirs[key]
        if isinstance(value, float) and isinstance(other, float):
            same = abs(value - other) <= _TOLERANCE
        else:
            same = value == other
        if not same:
            raise ManifestError(f"does not match the counts (expected {value!r})", join(where, key))


_WINDOW = nested(Window)


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftReport(Document):
    format: Annotated[str, constant(FORMAT, "drift report")] = FORMAT
    model: Annotated[str, STRING]
    version: Annotated[str, Rule(_read_version)]
    started: Annotated[str, TIMESTAMP]  # when counting began: the model's load
    generated: Annotated[str, TIMESTAMP]
    window_rows: Annotated[int, count(minimum=BLOCKS)]  # the recent window's size
    thresholds: Annotated[Thresholds, nested(Thresholds)] = DEFAULT_THRESHOLDS
    # None: the bundle was built without --data
    baseline: Annotated[Baseline | None, optional(nested(Baseline))]
    since_start: Annotated[Window, _WINDOW]
    recent: Annotated[Window, _WINDOW]

    def check(self) -> None:
        for name in ("since_start", "recent"):
            window: Window = getattr(self, name)
            window.check_against(self.baseline, self.thresholds, name)

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict(), compact=True)


def window_summary(report: DriftReport, window: Window) -> str:
    """One line on a window: its verdict, the shifted features with their PSI and p-value,
    and the predictions."""
    t = report.thresholds
    if report.baseline is None:
        return f"{window.rows} rows; no baseline (built without --data), so drift is unknown"
    if window.rows == 0:
        return "no rows yet"
    if window.rows < t.min_rows:
        return (
            f"{window.rows:,} rows: too few to judge (a verdict needs {t.min_rows:,}; "
            "below that, PSI is mostly sampling noise)"
        )
    shifted = sorted(window.shifted, key=lambda f: -(math.inf if f.psi is None else f.psi))
    parts = [
        f"{window.rows:,} rows: {len(shifted)} of {len(window.features)} features shifted"
        + (": " + ", ".join(_shift_text(f, t) for f in shifted) if shifted else "")
    ]
    few = [f.name for f in window.features if f.verdict == TOO_FEW_ROWS]
    if few:
        parts.append("too few values to judge: " + ", ".join(few))
    p = window.prediction
    if p is not None and p.psi is not None:
        parts.append(f"prediction: {p.verdict} (PSI {p.psi:.2f})")
    return "; ".join(parts)


def _shift_text(f: FeatureWindow, t: Thresholds) -> str:
    """The name and what moved: the values (PSI), the missing rate, or both."""
    moved = []
    if f.psi is None:
        moved.append("all missing")
    elif f.psi > t.psi:
        moved.append(f"PSI {f.psi:.2f}")
    shift = f.missing_rate_shift
    if f.psi is not None and shift is not None and abs(shift) > t.missing_rate_shift:
        moved.append(f"missing {100 * shift:+.1f} pp")
    return f"{f.name} ({', '.join([*moved, p_text(f.p_value)])})"


def p_text(value: float | None) -> str:
    """A p-value as people read it: ``p < 0.001`` rather than a long run of digits."""
    if value is None:
        return "p —"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def parse_report(data: bytes, what: str = "drift report") -> DriftReport:
    return DriftReport.from_dict(loads_strict(data, what))
