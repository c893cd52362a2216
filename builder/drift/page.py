"""``bundle drift --html``: one self-contained page, a table linking to a chart per feature.

Inline CSS and SVG only: no script and no external reference, so the page opens offline and
an untrusted name, always escaped, cannot make it fetch or run anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgebundle.builder.drift.analysis import Drift, FeatureDrift, Histogram, summary
from edgebundle.builder.drift.chart import NEUTRAL, VERDICT_COLOURS, bar_chart, escape
from edgebundle.builder.drift.formats import p_value_text, percent, points, psi_text
from edgebundle.builder.drift.text import header_lines

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
    f".{css}{{background:{colour}}}"
    for css, colour in (*VERDICT_COLOURS.items(), ("neutral", NEUTRAL))
)


def format_html(drift: Drift) -> str:
    r = drift.report
    title = f"Drift: {r.model} {r.version}"
    body = [
        f"<h1>{escape(title)}</h1>",
        *(f'<p class="meta">{escape(line)}</p>' for line in header_lines(drift)),
        f'<p class="verdict">{escape(f"verdict: {drift.verdict} — {summary(drift)}")}</p>',
    ]
    if drift.prediction is not None and drift.rows:
        body += [
            _table(drift.features, drift.prediction),
            *(_feature_section(k, f) for k, f in enumerate(drift.features)),
            _prediction_section(drift.prediction, drift.prediction_kind),
        ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _badge(verdict: str) -> str:
    """The verdict as a coloured pill; too_few_rows gets the neutral colour."""
    css = verdict if verdict in VERDICT_COLOURS else "neutral"
    return f'<span class="level {css}">{escape(verdict)}</span>'


def _table(features: Sequence[FeatureDrift], p: Histogram) -> str:
    rows = [
        "<tr><th>feature</th><th>verdict</th><th>PSI</th><th>p-value</th><th>missing (live)</th>"
        "<th>missing (baseline)</th><th>shift</th></tr>",
        *(
            f'<tr><td><a href="#f{k}">{escape(f.name)}</a></td>'
            f"<td>{_badge(f.verdict)}</td><td>{psi_text(f.histogram.psi)}</td>"
            f"<td>{p_value_text(f.histogram.p_value)}</td><td>{percent(f.missing_rate)}</td>"
            f"<td>{percent(f.baseline_missing_rate)}</td><td>{points(f.missing_rate_shift)}</td>"
            "</tr>"
            for k, f in enumerate(features)
        ),
    ]
    rows.append(
        f'<tr><td><a href="#prediction">prediction</a></td><td>{_badge(p.verdict)}</td>'
        f"<td>{psi_text(p.psi)}</td><td>{p_value_text(p.p_value)}</td><td></td><td></td><td></td>"
        "</tr>"
    )
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _feature_section(index: int, f: FeatureDrift) -> str:
    h = f.histogram
    return "\n".join(
        [
            f'<section id="f{index}">',
            f"<h2>{escape(f.name)} {_badge(h.verdict)}</h2>",
            f'<p class="meta">PSI {psi_text(h.psi)} · p-value {p_value_text(h.p_value)} · '
            f"missing {percent(f.missing_rate)} live, "
            f"{percent(f.baseline_missing_rate)} baseline ({points(f.missing_rate_shift)})</p>",
            bar_chart(h, f.name),
            "</section>",
        ]
    )


def _prediction_section(p: Histogram, kind: str) -> str:
    return "\n".join(
        [
            '<section id="prediction">',
            f"<h2>prediction ({escape(kind)}) {_badge(p.verdict)}</h2>",
            f'<p class="meta">PSI {psi_text(p.psi)} · p-value {p_value_text(p.p_value)}</p>',
            bar_chart(p, "prediction"),
            "</section>",
        ]
    )
