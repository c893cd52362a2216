"""``bundle drift`` on the terminal: header, verdict, and a table with sparkline histograms.

Names are untrusted: control characters are printed escaped, never sent to the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgebundle.builder.drift.analysis import Drift, FeatureDrift, Histogram, summary, window_name
from edgebundle.builder.drift.formats import p_value_text, percent, points, psi_text

_SPARKS = "▁▂▃▄▅▆▇█"


def format_text(drift: Drift) -> str:
    lines = [*header_lines(drift), "", f"verdict: {drift.verdict} — {summary(drift)}"]
    if drift.prediction is not None and drift.rows:
        lines += ["", *_table_lines(drift.features, drift.prediction)]
    return "\n".join(printable(line) for line in lines)


def header_lines(drift: Drift) -> list[str]:
    """Model, counting period and rows: the head of the text report and of the HTML page."""
    r = drift.report
    lines = [
        f"{r.model} {r.version}: counting since {r.started}, generated {r.generated}",
        f"rows: {r.since_start.rows:,} since start, {r.recent.rows:,} in the recent window "
        f"(the last {r.window_rows:,} at most)",
    ]
    if r.baseline is not None:
        other = "since_start" if drift.window == "recent" else "recent"
        lines.append(
            f"showing the {window_name(drift.window)} (--window {other} for the other one)"
        )
    return lines


def sparklines(baseline: Sequence[float], live: Sequence[float]) -> str:
    """Both histograms on one scale, so bar heights compare across the divider."""
    peak = max(*baseline, *live, 1e-12)
    return f"{_spark(baseline, peak)} │ {_spark(live, peak)}"


def printable(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _table_lines(features: Sequence[FeatureDrift], prediction: Histogram) -> list[str]:
    width = max((len(printable(f.name)) for f in features), default=0)
    width = max(width, len("feature"), len("(prediction)"))
    head = (
        f"{'feature':<{width}}  {'verdict':<12}  {'PSI':>6}  {'p-value':>7}  {'missing':>7}  "
        f"{'baseline':>8}  {'shift':>9}  shares: baseline │ live"
    )
    rows = [
        _table_row(
            printable(f.name), width, f.histogram,
            f"{percent(f.missing_rate):>7}  {percent(f.baseline_missing_rate):>8}  "
            f"{points(f.missing_rate_shift):>9}",
        )
        for f in features
    ]  # fmt: skip
    blank = f"{'':>7}  {'':>8}  {'':>9}"
    return [head, *rows, _table_row("(prediction)", width, prediction, blank)]


def _table_row(name: str, width: int, h: Histogram, missing: str) -> str:
    return (
        f"{name:<{width}}  {h.verdict:<12}  {psi_text(h.psi):>6}  {p_value_text(h.p_value):>7}  "
        f"{missing}  {sparklines(h.baseline, h.live)}"
    )


def _spark(shares: Sequence[float], peak: float) -> str:
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[round(top * s / peak)] for s in shares)
