"""What a comparison finds, its one-sentence verdict and its JSON form (``--json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebundle.builder.compare.agreement import Agreement
from edgebundle.builder.compare.display import metric_spec, metric_text, share, signed
from edgebundle.builder.compare.labels import LabelUse
from edgebundle.builder.compare.metrics import Metric


@dataclass(frozen=True, kw_only=True, slots=True)
class Side:
    """One bundle as the device loads it, and what scoring the rows cost there."""

    path: Path
    name: str
    version: str
    precision: str
    task: str
    bundle_bytes: int
    load_ms: float
    batch_us_per_row: float
    single_row_us: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "name": self.name,
            "version": self.version,
            "precision": self.precision,
            "task": self.task,
            "bytes": self.bundle_bytes,
            "load_ms": round(self.load_ms, 3),
            "batch_us_per_row": round(self.batch_us_per_row, 3),
            "single_row_us": round(self.single_row_us, 2),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    data: Path
    old: Side
    new: Side
    agreement: Agreement
    labels: LabelUse | None
    metrics: tuple[Metric, ...]  # the task's headline metric first
    notes: tuple[str, ...]

    @property
    def verdict(self) -> str:
        a = self.agreement
        parts = []
        if a.labels is not None:
            parts.append(f"labels agree on {share(a.labels)} of {a.rows:,} rows")
        elif a.shift is not None:
            parts.append(
                f"{a.shift.output} moves by {signed(a.shift.mean_diff)} on average "
                f"(max |Δ| {a.shift.max_abs_diff:.3g}) over {a.rows:,} rows"
            )
        if self.metrics:
            m = self.metrics[0]
            parts.append(
                f"{m.title} {metric_text(m.old)} → {metric_text(m.new)} "
                f"({signed(m.change, metric_spec(m.change))}, {m.verdict})"
            )
        elif self.labels is None:
            parts.append("no task metric without --labels")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": str(self.data),
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "agreement": self.agreement.to_dict(),
            "labels": None if self.labels is None else self.labels.to_dict(),
            "metrics": {m.key: m.to_dict() for m in self.metrics},
            "notes": list(self.notes),
            "verdict": self.verdict,
        }
