"""``bundle compare``'s text report: OLD and NEW side by side, then the notes and the verdict."""

from __future__ import annotations

from collections.abc import Sequence

from edgebundle.builder.compare.agreement import Agreement
from edgebundle.builder.compare.display import metric_spec, metric_text, share, signed
from edgebundle.builder.compare.labels import LabelUse
from edgebundle.builder.compare.metrics import Metric
from edgebundle.builder.compare.results import Comparison

# label, OLD, NEW, CHANGE, verdict
Row = tuple[str, str, str, str, str]


def format_comparison(c: Comparison) -> str:
    table = [
        ("", "OLD", "NEW", "CHANGE", ""),
        *_side_rows(c),
        *_agreement_rows(c.agreement),
        *_metric_rows(c.metrics),
    ]
    lines = [
        f"OLD  {c.old.name} {c.old.version}  {c.old.path}",
        f"NEW  {c.new.name} {c.new.version}  {c.new.path}",
        f"rows {c.agreement.rows:,} from {c.data}" + _labels_text(c.labels),
        "",
        *_table(table),
        "",
        *(f"note: {note}" for note in c.notes),
        f"verdict: {c.verdict}",
    ]
    return "\n".join(lines)


def _labels_text(labels: LabelUse | None) -> str:
    if labels is None:
        return ""
    missing = f", {labels.missing:,} without a label left out" if labels.missing else ""
    return f"; metrics on {labels.rows:,} labelled rows (column {labels.column!r}{missing})"


def _side_rows(c: Comparison) -> list[Row]:
    old, new = c.old, c.new
    growth = (new.bundle_bytes - old.bundle_bytes) / old.bundle_bytes
    return [
        ("precision", old.precision, new.precision, "", ""),
        (
            "bundle bytes",
            f"{old.bundle_bytes:,}",
            f"{new.bundle_bytes:,}",
            signed(growth, ".1%"),
            "",
        ),
        _timing_row("load ms", old.load_ms, new.load_ms, ".1f"),
        _timing_row(
            f"µs/row, batch of {c.agreement.rows:,}",
            old.batch_us_per_row,
            new.batch_us_per_row,
            ".2f",
        ),
        _timing_row("µs, one row (median)", old.single_row_us, new.single_row_us, ".1f"),
    ]


def _timing_row(title: str, old: float, new: float, spec: str) -> Row:
    return (title, format(old, spec), format(new, spec), signed(new - old, spec), "")


def _agreement_rows(a: Agreement) -> list[Row]:
    rows: list[Row] = []
    if a.labels is not None:
        rows.append(("identical labels", "", "", share(a.labels), ""))
    if a.shift is not None:
        s = a.shift
        rows.append(
            (f"mean {s.output}", f"{s.mean_old:.4g}", f"{s.mean_new:.4g}", signed(s.mean_diff), "")
        )
        rows.append((f"max |Δ {s.output}|", "", "", f"{s.max_abs_diff:.3g}", ""))
    if a.probability_diff is not None:
        rows.append(("mean |Δ probability|", "", "", f"{a.probability_diff:.3g}", ""))
    return rows


def _metric_rows(metrics: Sequence[Metric]) -> list[Row]:
    return [
        (
            m.title,
            metric_text(m.old),
            metric_text(m.new),
            signed(m.change, metric_spec(m.change)),
            m.verdict,
        )
        for m in metrics
    ]


def _table(rows: Sequence[Row]) -> list[str]:
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{label:<{width[0]}}  {old:>{width[1]}}  {new:>{width[2]}}  {change:>{width[3]}}"
        f"  {verdict}".rstrip()
        for label, old, new, change, verdict in rows
    ]
