"""The build report: one row per emitted precision, as text or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebundle.builder.build import BuildResult, Candidate


def report_dict(result: BuildResult) -> dict[str, Any]:
    m = result.manifest
    return {
        "bundle": str(result.path),
        "name": m.name,
        "version": str(m.version),
        "bytes": result.bundle_bytes,
        "precision": result.chosen.precision,
        "objective": m.source.objective,
        "trees": m.source.num_trees,
        "trees_in_file": result.trees_in_file,
        "best_iteration": m.source.best_iteration,
        "features": m.source.num_features,
        "check_rows": {"data": m.parity.data_rows, "synthesized": m.parity.synthesized_rows},
        "budget": m.parity.budget.to_dict(),
        "candidates": [candidate_dict(c, c is result.chosen) for c in result.candidates],
        "choice": None if m.build is None else m.build.to_dict(),
    }


def candidate_dict(c: Candidate, chosen: bool) -> dict[str, Any]:
    return {
        "precision": c.precision,
        "chosen": chosen,
        "model_bytes": c.size,
        "load_ms": round(c.load_ms, 3),
        "us_per_row": round(c.us_per_row, 2),
        "max_abs_error": c.parity.max_abs_error,
        "max_error": c.parity.max_error,
        "error_scale": c.parity.error_scale,
        "label_agreement": c.parity.label_agreement,
        "margin_error_bound": c.graph_info.get("margin_error_bound"),
        "layout": c.graph_info.get("layout"),
        "model_rss_bytes": c.model_rss_bytes,
        "passed": c.parity.passed,
    }


_HEADER = (
    f"{'precision':<10}{'model bytes':>12}{'load ms':>9}{'µs/row':>9}"
    f"{'max |err|':>11}{'rel err':>10}{'labels':>9}{'margin bound':>14}  result"
)


def format_candidates(candidates: tuple[Candidate, ...], chosen: Candidate | None) -> str:
    lines = [_HEADER]
    for c in candidates:
        p = c.parity
        agreement = "n/a" if p.label_agreement is None else f"{p.label_agreement:.2%}"
        bound = c.graph_info.get("margin_error_bound")
        bound_text = "exact" if bound is None else f"±{bound:.3g}"
        verdict = "ok" if p.passed else "MISSES BUDGET"
        mark = "*" if c is chosen else " "
        lines.append(
            f"{c.precision + mark:<10}{c.size:>12,}{c.load_ms:>9.1f}{c.us_per_row:>9.1f}"
            f"{p.max_abs_error:>11.2e}{p.max_error:>10.2e}{agreement:>9}{bound_text:>14}  {verdict}"
        )
    return "\n".join(lines)


def format_report(result: BuildResult) -> str:
    m = result.manifest
    p = m.parity
    budget = p.budget
    agreement = (
        " (no labels to compare: a regressor)"
        if budget.min_label_agreement is None
        else f", labels ≥ {budget.min_label_agreement:.1%}"
    )
    return "\n".join(
        [
            f"{m.name} {m.version} → {result.path} ({result.bundle_bytes:,} bytes, "
            f"{result.chosen.precision})",
            f"source: {m.source.objective}, {_trees(result)}, "
            f"{m.source.num_features} features, xgboost {m.source.framework_version}",
            f"check rows: {p.rows:,} ({p.data_rows:,} from --data, {p.synthesized_rows:,} "
            "synthesized from thresholds)",
            f"budget: max error {budget.max_error:g} (relative to {p.error_scale:.4g}){agreement}",
            "",
            format_candidates(result.candidates, result.chosen),
            *(
                []
                if m.build is None
                else ["", f"chose {result.chosen.precision}: {m.build.reason}"]
            ),
        ]
    )


def _trees(result: BuildResult) -> str:
    """The bundle's trees, and those ``best_iteration`` left out of it."""
    source = result.manifest.source
    dropped = result.trees_in_file - source.num_trees
    if dropped <= 0:
        return f"{source.num_trees:,} trees"
    return (
        f"{source.num_trees:,} of {result.trees_in_file:,} trees (best_iteration "
        f"{source.best_iteration} leaves out {dropped:,}, as predict() does; --all-trees keeps "
        "them)"
    )
