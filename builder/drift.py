"""``bundle drift``: a device's drift report read as a verdict, a table and an HTML page.

The report is what a device answers on ``GET /v2/models/{name}/stats`` (``runtime.monitor``).
Everything here is pure: ``analyse`` picks a window and ranks the features, the formatters
return text, HTML or a dict, and the CLI does the reading, printing and writing. PSI, its
levels and the missing-rate shift come from ``runtime.monitor`` so that workstation and device
never disagree about a number.

Feature and model names come from the device and are untrusted: the HTML escapes every one,
the text replaces control characters so a name cannot drive the terminal.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor import (
    DriftReport,
    FeatureWindow,
    Window,
    parse_report,
    psi,
    psi_level,
)
from edgebundle.runtime.monitor import verdict as monitor_verdict
from edgebundle.runtime.stats import FeatureBaseline

WINDOWS = ("recent", "since_start")
# A feature whose every live value is missing has no PSI (no values to bin), yet it is the
# most drastic change there is, so it gets its own level and ranks above every PSI.
ALL_MISSING = "all missing"
LEVELS = ("shifted", "watch", "stable", ALL_MISSING, "no rows")
NO_BASELINE = "no baseline: the bundle was built without --data, so only row counts are known"
DIGITS = 4
_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, kw_only=True, slots=True)
class Histogram:
    """Baseline and live shares per bin; shares are of the rows with a value."""

    labels: tuple[str, ...]
    baseline: tuple[float, ...]
    live: tuple[float, ...]
    psi: float | None
    level: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureDrift:
    name: str
    histogram: Histogram
    missing_rate: float | None  # None: no rows
    baseline_missing_rate: float
    missing_rate_shift: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Drift:
    report: DriftReport
    window: str  # one of WINDOWS
    rows: int  # in that window
    features: tuple[FeatureDrift, ...]  # most shifted first
    prediction: Histogram | None  # None: no baseline


# --- analysis ----------------------------------------------------------------------------


def read_report(data: bytes, source: str) -> DriftReport:
    """``parse_report``, with errors that name the file they are about."""
    try:
        return parse_report(data)
    except ManifestError as exc:
        raise ManifestError(f"{source}: {exc}") from None


def choose_window(report: DriftReport, requested: str | None) -> str:
    """The recent window shows the present; an empty one would show nothing at all."""
    if requested is not None:
        return requested
    return "recent" if report.recent.rows else "since_start"


def analyse(report: DriftReport, window: str | None = None) -> Drift:
    name = choose_window(report, window)
    counts = _window(report, name)
    baseline = report.baseline
    if baseline is None:
        return Drift(report=report, window=name, rows=counts.rows, features=(), prediction=None)
    features = (
        _feature(live, base, counts.rows)
        for live, base in zip(counts.features, baseline.features, strict=True)
    )
    prediction_labels = (
        class_labels(len(baseline.prediction.shares))
        if baseline.prediction.kind == "class"
        else bin_labels(baseline.prediction.edges)
    )
    return Drift(
        report=report,
        window=name,
        rows=counts.rows,
        features=tuple(sorted(features, key=_severity, reverse=True)),
        prediction=_histogram(
            prediction_labels, baseline.prediction.shares, counts.prediction, counts.rows
        ),
    )


def _window(report: DriftReport, name: str) -> Window:
    windows = {"recent": report.recent, "since_start": report.since_start}
    if name not in windows:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    return windows[name]


def _feature(live: FeatureWindow, base: FeatureBaseline, rows: int) -> FeatureDrift:
    return FeatureDrift(
        name=live.name,
        histogram=_histogram(bin_labels(base.edges), base.shares, live.counts, rows),
        missing_rate=live.missing_rate(),
        baseline_missing_rate=base.missing_rate,
        missing_rate_shift=live.missing_rate_shift(base),
    )


def _histogram(
    labels: tuple[str, ...], shares: Sequence[float], counts: Sequence[int], rows: int
) -> Histogram:
    total = sum(counts)
    value = psi(shares, counts)
    return Histogram(
        labels=labels,
        baseline=tuple(shares),
        live=tuple(c / total if total else 0.0 for c in counts),
        psi=value,
        level=ALL_MISSING if value is None and rows else psi_level(value),
    )


def _severity(feature: FeatureDrift) -> float:
    value = feature.histogram.psi
    return math.inf if value is None else value


# --- numbers and bin labels --------------------------------------------------------------


def compact(value: float, digits: int = DIGITS) -> str:
    """At most ``digits`` significant digits, thousands and up as k, M, G, T."""
    rounded = float(f"{value:.{digits}g}") + 0.0  # + 0.0 turns -0.0 into 0
    for scale, suffix in _SUFFIXES:
        # Suffix the rounded value, so 999_999 reads 1M rather than 1000k.
        if abs(rounded) >= scale:
            return f"{rounded / scale:.{digits}g}{suffix}"
    return f"{rounded:.{digits}g}"


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """``< a``, ``a – b`` …, ``≥ z``: bin k holds ``edges[k-1] <= x < edges[k]``."""
    if not edges:
        return ("all values",)
    texts = _distinct_texts(edges)
    middle = (f"{lo} – {hi}" for lo, hi in itertools.pairwise(texts))
    return (f"< {texts[0]}", *middle, f"≥ {texts[-1]}")


def class_labels(count: int) -> tuple[str, ...]:
    return tuple(f"class {k}" for k in range(count))


def _distinct_texts(edges: Sequence[float]) -> list[str]:
    """Edges as compact text, with more digits only where two would otherwise read the same
    and make two bins look like one."""
    for digits in range(DIGITS, 17):
        texts = [compact(e, digits) for e in edges]
        if len(set(texts)) == len(texts):
            return texts
    return [compact(e, 17) for e in edges]  # 17 digits tell any two doubles apart


def _psi_text(value: float | None, places: int = 3) -> str:
    return "—" if value is None else f"{value:.{places}f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _points(value: float | None) -> str:
    # Rounded before signing, so a shift of -0.01 pp reads +0.0 rather than -0.0.
    return "—" if value is None else f"{round(100 * value, 1) + 0.0:+.1f} pp"


# --- verdict -----------------------------------------------------------------------------


def verdict(drift: Drift) -> str:
    """The device's own one-line verdict (``runtime.monitor.verdict``) on the chosen window."""
    if drift.prediction is None:
        return NO_BASELINE
    if drift.rows == 0:
        return f"no rows yet in the {_window_name(drift.window)}"
    return monitor_verdict(_window(drift.report, drift.window), drift.report.baseline)


def _by_level(features: Sequence[FeatureDrift]) -> dict[str, list[FeatureDrift]]:
    groups: dict[str, list[FeatureDrift]] = {level: [] for level in LEVELS}
    for feature in features:
        groups[feature.histogram.level].append(feature)
    return groups


def _window_name(window: str) -> str:
    return "recent window" if window == "recent" else "window since start"


# --- text --------------------------------------------------------------------------------


def format_text(drift: Drift) -> str:
    lines = [*_header_lines(drift), "", verdict(drift)]
    if drift.prediction is not None and drift.rows:
        lines += ["", *_table_lines(drift.features)]
    return "\n".join(_printable(line) for line in lines)


def _header_lines(drift: Drift) -> list[str]:
    r = drift.report
    lines = [
        f"{r.model} {r.version}: counting since {r.started}, generated {r.generated}",
        f"rows: {r.since_start.rows:,} since start, {r.recent.rows:,} in the recent window "
        f"(the last {r.window_rows:,} at most)",
    ]
    if r.baseline is not None:
        other = "since_start" if drift.window == "recent" else "recent"
        lines.append(
            f"showing the {_window_name(drift.window)} (--window {other} for the other one)"
        )
    return lines


def _table_lines(features: Sequence[FeatureDrift]) -> list[str]:
    width = max((len(_printable(f.name)) for f in features), default=0)
    width = max(width, len("feature"))
    head = (
        f"{'feature':<{width}}  {'PSI':>6}  {'level':<11}  {'missing':>7}  {'baseline':>8}  "
        f"{'shift':>9}  shares: baseline │ live"
    )
    return [head, *(_table_row(f, width) for f in features)]


def _table_row(f: FeatureDrift, width: int) -> str:
    h = f.histogram
    return (
        f"{_printable(f.name):<{width}}  {_psi_text(h.psi):>6}  {h.level:<11}  "
        f"{_percent(f.missing_rate):>7}  {_percent(f.baseline_missing_rate):>8}  "
        f"{_points(f.missing_rate_shift):>9}  {sparklines(h.baseline, h.live)}"
    )


def sparklines(baseline: Sequence[float], live: Sequence[float]) -> str:
    """Both histograms on one scale, so bar heights compare across the divider."""
    peak = max(*baseline, *live, 1e-12)
    return f"{_spark(baseline, peak)} │ {_spark(live, peak)}"


def _spark(shares: Sequence[float], peak: float) -> str:
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[round(top * s / peak)] for s in shares)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


# --- JSON --------------------------------------------------------------------------------


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
        "kind": _prediction_kind(drift),
        "psi": drift.prediction.psi,
        "level": drift.prediction.level,
    }
    return doc


def _prediction_kind(drift: Drift) -> str:
    baseline = drift.report.baseline
    return "" if baseline is None else baseline.prediction.kind


def _feature_dict(f: FeatureDrift) -> dict[str, Any]:
    return {
        "name": f.name,
        "psi": f.histogram.psi,
        "level": f.histogram.level,
        "missing_rate": f.missing_rate,
        "baseline_missing_rate": f.baseline_missing_rate,
        "missing_rate_shift": f.missing_rate_shift,
    }


# --- HTML --------------------------------------------------------------------------------

_COLOURS = {"shifted": "#c62828", "watch": "#b26a00", "stable": "#2e7d32"}
_NEUTRAL = "#607d8b"
_BASELINE_COLOUR = "#aab4be"
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;color:#1f2933;max-width:62rem;margin:2rem auto;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.25rem}
h2{font-size:1.15rem;margin:2rem 0 .25rem}
.meta{color:#52606d;margin:.1rem 0}
.verdict{font-weight:600;padding:.6rem .8rem;background:#f5f7fa;border-left:4px solid #52606d}
table{border-collapse:collapse;margin:1rem 0}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}
a{color:inherit}
.level{display:inline-block;padding:0 .45rem;border-radius:.6rem;color:#fff;font-size:.85rem;
font-weight:600}
svg{display:block;max-width:100%;height:auto}
""" + "".join(
    f".{css}{{background:{colour}}}" for css, colour in (*_COLOURS.items(), ("neutral", _NEUTRAL))
)


def format_html(drift: Drift) -> str:
    r = drift.report
    title = f"Drift: {r.model} {r.version}"
    body = [
        f"<h1>{_e(title)}</h1>",
        *_html_header(drift),
        f'<p class="verdict">{_e(verdict(drift))}</p>',
    ]
    if drift.prediction is not None and drift.rows:
        body += [
            _html_table(drift.features, drift.prediction),
            *(_html_feature(k, f) for k, f in enumerate(drift.features)),
            _html_prediction(drift.prediction, _prediction_kind(drift)),
        ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_header(drift: Drift) -> list[str]:
    return [f'<p class="meta">{_e(line)}</p>' for line in _header_lines(drift)]


def _badge(level: str) -> str:
    css = level if level in _COLOURS else "neutral"
    return f'<span class="level {css}">{_e(level)}</span>'


def _html_table(features: Sequence[FeatureDrift], p: Histogram) -> str:
    rows = [
        "<tr><th>feature</th><th>PSI</th><th>level</th><th>missing (live)</th>"
        "<th>missing (baseline)</th><th>shift</th></tr>",
        *(
            f'<tr><td><a href="#f{k}">{_e(f.name)}</a></td><td>{_psi_text(f.histogram.psi)}</td>'
            f"<td>{_badge(f.histogram.level)}</td><td>{_percent(f.missing_rate)}</td>"
            f"<td>{_percent(f.baseline_missing_rate)}</td><td>{_points(f.missing_rate_shift)}</td>"
            "</tr>"
            for k, f in enumerate(features)
        ),
    ]
    rows.append(
        f'<tr><td><a href="#prediction">prediction</a></td><td>{_psi_text(p.psi)}</td>'
        f"<td>{_badge(p.level)}</td><td></td><td></td><td></td></tr>"
    )
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _html_feature(index: int, f: FeatureDrift) -> str:
    h = f.histogram
    return "\n".join(
        [
            f'<section id="f{index}">',
            f"<h2>{_e(f.name)} {_badge(h.level)}</h2>",
            f'<p class="meta">PSI {_psi_text(h.psi)} · missing {_percent(f.missing_rate)} live, '
            f"{_percent(f.baseline_missing_rate)} baseline ({_points(f.missing_rate_shift)})</p>",
            bar_chart(h, f.name),
            "</section>",
        ]
    )


def _html_prediction(p: Histogram, kind: str) -> str:
    return "\n".join(
        [
            '<section id="prediction">',
            f"<h2>prediction ({_e(kind)}) {_badge(p.level)}</h2>",
            f'<p class="meta">PSI {_psi_text(p.psi)}</p>',
            bar_chart(p, "prediction"),
            "</section>",
        ]
    )


# Chart geometry in SVG user units; the viewBox scales it to the page.
_WIDTH = 720
_LEFT = 64
_TOP = 28
_PLOT_HEIGHT = 150
_LABEL_SPACE = 96
_Y_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25)


def bar_chart(h: Histogram, name: str) -> str:
    """Grouped bars, baseline then live per bin, with a native tooltip (``<title>``) each."""
    top = _axis_top(max(*h.baseline, *h.live))
    group = (_WIDTH - _LEFT - 8) / len(h.labels)
    height = _TOP + _PLOT_HEIGHT + _LABEL_SPACE
    colour = _COLOURS.get(h.level, _NEUTRAL)
    parts = [
        f'<svg viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" role="img" '
        f'aria-label="{_e(f"{name}: baseline and live share per bin")}" '
        'font-family="system-ui, sans-serif" font-size="11" fill="#3e4c59">',
        *_legend(colour),
        *_y_axis(top),
    ]
    for k, label in enumerate(h.labels):
        x = _LEFT + k * group
        tip = f"{name} {label}: baseline {h.baseline[k]:.1%}, live {h.live[k]:.1%}"
        parts += [
            _bar(x + 0.12 * group, 0.36 * group, h.baseline[k] / top, _BASELINE_COLOUR, tip),
            _bar(x + 0.52 * group, 0.36 * group, h.live[k] / top, colour, tip),
            _x_label(x + group / 2, label, rotate=len(h.labels) > 6),
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def _axis_top(peak: float) -> float:
    """The smallest multiple of a round step above ``peak`` that needs at most 5 steps."""
    peak = max(peak, 0.01)
    step = next((s for s in _Y_STEPS if math.ceil(peak / s) <= 5), 0.25)
    return math.ceil(peak / step) * step


def _y_axis(top: float) -> list[str]:
    bottom = _TOP + _PLOT_HEIGHT
    lines = []
    for tick in (0.0, top / 2, top):
        y = bottom - _PLOT_HEIGHT * tick / top
        label = f"{compact(100 * tick)}%"
        lines += [
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - 8}" y2="{y:.1f}" stroke="#e4e7eb"/>',
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>',
        ]
    return lines


def _legend(live_colour: str) -> list[str]:
    return [
        f'<rect x="{_LEFT}" y="6" width="12" height="12" fill="{_BASELINE_COLOUR}"/>',
        f'<text x="{_LEFT + 16}" y="16">baseline</text>',
        f'<rect x="{_LEFT + 84}" y="6" width="12" height="12" fill="{live_colour}"/>',
        f'<text x="{_LEFT + 100}" y="16">live</text>',
    ]


def _bar(x: float, width: float, fraction: float, colour: str, tip: str) -> str:
    height = _PLOT_HEIGHT * fraction
    y = _TOP + _PLOT_HEIGHT - height
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
        f'fill="{colour}"><title>{_e(tip)}</title></rect>'
    )


def _x_label(x: float, label: str, rotate: bool) -> str:
    y = _TOP + _PLOT_HEIGHT + 14
    if not rotate:
        return f'<text x="{x:.1f}" y="{y}" text-anchor="middle">{_e(label)}</text>'
    return (
        f'<text x="{x:.1f}" y="{y}" text-anchor="end" '
        f'transform="rotate(-45 {x:.1f} {y})">{_e(label)}</text>'
    )
