"""One histogram as an inline SVG bar chart: baseline and live bars per bin, with tooltips.

Self-contained (no script, no external reference) and every name in it escaped, since bin
labels and feature names reach the page from an untrusted device.
"""

from __future__ import annotations

import html
import math

from edgebundle.builder.drift.analysis import Histogram
from edgebundle.builder.drift.formats import compact

VERDICT_COLOURS = {"shift": "#c62828", "ok": "#2e7d32"}
NEUTRAL = "#607d8b"  # too_few_rows: no verdict either way
_BASELINE_COLOUR = "#aab4be"

# Chart geometry in SVG user units; the viewBox scales it to the page.
_WIDTH = 720
_LEFT = 64
_TOP = 28
_PLOT_HEIGHT = 150
_LABEL_SPACE = 96
_Y_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25)


def escape(text: str) -> str:
    """``text`` safe in element content and in a double- or single-quoted attribute."""
    return html.escape(text, quote=True)


def bar_chart(h: Histogram, name: str) -> str:
    """Grouped bars, baseline then live per bin, with a native tooltip (``<title>``) each."""
    top = _axis_top(max(*h.baseline, *h.live))
    group = (_WIDTH - _LEFT - 8) / len(h.labels)
    height = _TOP + _PLOT_HEIGHT + _LABEL_SPACE
    colour = VERDICT_COLOURS.get(h.verdict, NEUTRAL)
    parts = [
        f'<svg viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(f"{name}: baseline and live share per bin")}" '
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
        f'fill="{colour}"><title>{escape(tip)}</title></rect>'
    )


def _x_label(x: float, label: str, rotate: bool) -> str:
    y = _TOP + _PLOT_HEIGHT + 14
    if not rotate:
        return f'<text x="{x:.1f}" y="{y}" text-anchor="middle">{escape(label)}</text>'
    return (
        f'<text x="{x:.1f}" y="{y}" text-anchor="end" '
        f'transform="rotate(-45 {x:.1f} {y})">{escape(label)}</text>'
    )
