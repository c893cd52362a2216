"""``bundle build``: load → emit (float, int8 → int16) → check parity → pack and sign.

Only ``load_model``/``load_rows`` at the start and ``write_atomic`` at the end touch disk;
everything between is pure and testable in memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.baseline import baseline
from edgebundle.builder.candidate import Candidate
from edgebundle.builder.choice import (
    BudgetMissedError,
    Decision,
    automatic,
    float_only,
    forced,
)
from edgebundle.builder.convert.check import (
    Reference,
    compare,
    default_budget,
    synthesize_linear_rows,
    synthesize_rows,
)
from edgebundle.builder.convert.emit_float import emit_float
from edgebundle.builder.convert.emit_int8 import emit_int8
from edgebundle.builder.convert.emit_linear import emit_linear_float, emit_linear_int8
from edgebundle.builder.convert.graph import MarginGraph
from edgebundle.builder.convert.link import assemble
from edgebundle.builder.convert.load import SourceModel, load_model
from edgebundle.builder.convert.objectives import Link
from edgebundle.builder.data import load_rows
from edgebundle.builder.errors import ConversionError
from edgebundle.builder.files import write_atomic
from edgebundle.builder.measure import model_rss_bytes, one_row_latencies
from edgebundle.builder.progress import SILENT, Progress
from edgebundle.runtime.category_codes import CategoryCodes
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.manifest import (
    FORMAT,
    OPTIMIZE_FOR,
    REQUESTED_PRECISIONS,
    Budget,
    Feature,
    FileEntry,
    InputSchema,
    Manifest,
    Quantization,
    Requirements,
    Source,
)
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.selftest import Selftest, Tolerance
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import MANIFEST_CONTEXT, sign_all

__all__ = ["BudgetMissedError", "BuildOptions", "BuildResult", "Candidate", "build"]

F32 = npt.NDArray[np.float32]
_SELFTEST_ROWS = 8
# room for another CPU's float32 rounding, far below any error budget
_SELFTEST_TOLERANCE = Tolerance(abs=1e-4, rel=1e-4)


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildOptions:
    model: Path
    name: str
    version: Version
    keys: tuple[Ed25519PrivateKey, ...]  # every one signs the manifest (k-of-n channels)
    out_dir: Path
    data: Path | None = None
    precision: str = "auto"  # "auto", "int8" (escalates to int16 leaves) or "float"
    optimize: str = "latency"  # what "auto" chooses for: "latency", "size" or "memory"
    max_error: float | None = None  # None: the objective's default budget
    min_label_agreement: float | None = None
    use_best_iteration: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if self.precision not in REQUESTED_PRECISIONS:
            raise ValueError(
                f"precision must be one of {REQUESTED_PRECISIONS}, not {self.precision!r}"
            )
        if self.optimize not in OPTIMIZE_FOR:
            raise ValueError(f"optimize must be one of {OPTIMIZE_FOR}, not {self.optimize!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    path: Path
    manifest: Manifest
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    bundle_bytes: int
    trees_in_file: int  # more than the manifest's num_trees when best_iteration dropped some


def build(options: BuildOptions, progress: Progress = SILENT) -> BuildResult:
    """The whole pipeline; raises a BundleError (never signs) when something is off.
    ``progress`` hears of each stage (``Progress.to_stderr()`` on a terminal)."""
    with progress.stage(f"loading {options.model.name}"):
        source = load_model(options.model, options.use_best_iteration)
    with progress.stage(f"reading check rows ({len(source.ensemble.trees)} trees)"):
        data = load_rows(options.data, source.feature_names) if options.data else _no_rows(source)
        rows = np.concatenate([data, _synthesized(source)])
        link = source.objective.link
        reference = Reference.from_predictions(
            link, source.reference_predict(rows), source.reference_predict(rows, margin=True)
        )
    budget = _budget(options, link)

    def evaluate(precision: str, graph: Callable[[], MarginGraph]) -> Candidate:
        with progress.stage(f"{precision}: converting, checking {len(rows):,} rows"):
            return _evaluate(precision, graph(), source, rows, reference, budget, len(data))

    candidates, unquantizable = _candidates(options.precision, source, rows, evaluate)
    with progress.stage("timing one-row latency of each candidate"):
        candidates = _measured(options.optimize, candidates, rows)
    resolution = _resolution(reference, candidates[0].parity.error_scale)
    decision = _decide(options, candidates, resolution, unquantizable)
    chosen = decision.chosen
    with progress.stage("signing and writing the bundle"):
        bundle, manifest = _pack(options, source, decision, rows, data)
        path = options.out_dir / f"{options.name}-{options.version}.bundle"
        write_atomic(path, bundle, options.force)
    return BuildResult(
        path=path,
        manifest=manifest,
        candidates=candidates,
        chosen=chosen,
        bundle_bytes=len(bundle),
        trees_in_file=source.trees_in_file,
    )


def _pack(
    options: BuildOptions, source: SourceModel, decision: Decision, rows: F32, data: F32
) -> tuple[bytes, Manifest]:
    """The signed bundle's bytes: selftest, drift baseline, manifest, signatures."""
    chosen = decision.chosen
    selftest = _selftest(chosen, rows, len(data))
    payload = {"model.onnx": chosen.model.onnx_bytes, "selftest.json": selftest.to_bytes()}
    if len(data):
        first = chosen.outputs[chosen.model.outputs[0].name][: len(data)]
        stats = baseline(source.ensemble, source.feature_names, data, source.objective.link, first)
        payload["stats.json"] = stats.to_bytes()
    epoch = _source_date_epoch()
    manifest = _manifest(options, source, decision, payload, epoch)
    manifest_bytes = manifest.to_bytes()
    signatures = sign_all(options.keys, MANIFEST_CONTEXT, manifest_bytes)
    return write_bundle(manifest_bytes, signatures.to_bytes(), payload, mtime=epoch or 0), manifest


def _synthesized(source: SourceModel) -> F32:
    if source.linear is not None:
        return synthesize_linear_rows(source.ensemble.num_features)
    return synthesize_rows(source.ensemble)


def _no_rows(source: SourceModel) -> F32:
    return np.zeros((0, source.ensemble.num_features), dtype=np.float32)


def _budget(options: BuildOptions, link: Link) -> Budget:
    budget = default_budget(link)
    if options.max_error is not None:
        budget = replace(budget, max_error=options.max_error)
    if options.min_label_agreement is not None and budget.min_label_agreement is not None:
        budget = replace(budget, min_label_agreement=options.min_label_agreement)
    return budget


def _candidates(
    precision: str,
    source: SourceModel,
    rows: F32,
    evaluate: Callable[[str, Callable[[], MarginGraph]], Candidate],
) -> tuple[tuple[Candidate, ...], str | None]:
    """Float always (it is the lossless reference row of the report and auto's other option);
    for int8 and auto, int8 leaves and, only when those miss the budget, int16 leaves. With
    auto, a model the quantized graph cannot express yet is not an error: float alone is
    built, and the second value says why."""
    float_graph, quantized = _emitters(source, rows)
    found = [evaluate("float", float_graph)]
    if precision == "float":
        return tuple(found), None
    try:
        found.append(evaluate("int8", lambda: quantized(8)))
    except ConversionError as e:
        if precision != "auto":
            raise
        return tuple(found), str(e)
    if not found[-1].parity.passed:
        found.append(evaluate("int16", lambda: quantized(16)))
    return tuple(found), None


def _emitters(
    source: SourceModel, rows: F32
) -> tuple[Callable[[], MarginGraph], Callable[[int], MarginGraph]]:
    """The float graph, and the quantized graph for a code width (8 or 16 bits): of the trees,
    or of a gblinear model (whose error bound is stated for the largest |x| of ``rows``)."""
    linear, ensemble = source.linear, source.ensemble
    if linear is None:
        return lambda: emit_float(ensemble), lambda bits: emit_int8(ensemble, bits)
    bound = np.nanmax(np.abs(rows), axis=0, initial=0.0).astype(np.float32)
    return lambda: emit_linear_float(linear), lambda bits: emit_linear_int8(linear, bits, bound)


def _measured(optimize: str, candidates: tuple[Candidate, ...], rows: F32) -> tuple[Candidate, ...]:
    """Every candidate's one-row latency (interleaved, for the report and ``latency``), and its
    resident memory when that is what the choice is for."""
    latencies = one_row_latencies([c.scorer for c in candidates], rows)
    return tuple(
        replace(
            c,
            us_per_row=round(us, 2),  # as recorded, so the reason quotes what is kept
            model_rss_bytes=model_rss_bytes(c.model.onnx_bytes, c.scorer)
            if optimize == "memory" and c.parity.passed
            else None,
        )
        for c, us in zip(candidates, latencies, strict=True)
    )


def _decide(
    options: BuildOptions,
    candidates: tuple[Candidate, ...],
    resolution: float,
    unquantizable: str | None,
) -> Decision:
    if unquantizable is not None:
        return float_only(options.optimize, candidates, resolution, unquantizable)
    if options.precision == "auto":
        return automatic(options.optimize, candidates, resolution)
    return forced(options.precision, options.optimize, candidates, resolution)


def _resolution(reference: Reference, scale: float) -> float:
    """One float32 step at the largest reference output, relative to the error scale."""
    peak = float(np.max(np.abs(reference.primary), initial=0.0))
    return float(np.spacing(np.float32(max(peak, np.finfo(np.float32).tiny)))) / scale


def _evaluate(
    precision: str,
    graph: MarginGraph,
    source: SourceModel,
    rows: F32,
    reference: Reference,
    budget: Budget,
    data_rows: int,
) -> Candidate:
    """Assemble, load into the runtime's own scorer, score the check rows and time it."""
    ensemble = source.ensemble
    model = assemble(
        graph, source.objective.link, ensemble.num_features, ensemble.num_outputs,
        source.output_columns,
    )
    started = time.perf_counter()
    # one thread: parity results go into the manifest and must be reproducible
    scorer = Scorer(model.onnx_bytes, source.feature_names, model.outputs, threads=1)
    load_ms = (time.perf_counter() - started) * 1e3
    outputs = scorer.predict(rows)
    parity = compare(source.objective.link, outputs, reference, budget, data_rows)
    return Candidate(
        precision=precision,
        model=model,
        graph_info=graph.info,
        min_onnxruntime=graph.min_onnxruntime,
        parity=parity,
        outputs=outputs,
        scorer=scorer,
        load_ms=load_ms,
    )


def _selftest(chosen: Candidate, rows: F32, data_rows: int) -> Selftest:
    """Golden rows the device replays at install: data rows first, then synthesized ones
    spread over the threshold sweep, and the all-missing row."""
    synthesized = np.arange(data_rows, len(rows))
    picks = np.unique(
        np.concatenate(
            [
                np.arange(min(data_rows, _SELFTEST_ROWS // 2)),
                synthesized[np.linspace(0, len(synthesized) - 1, _SELFTEST_ROWS).astype(int)],
            ]
        )
    )
    expected = {name: values[picks] for name, values in chosen.outputs.items()}
    return Selftest.from_arrays(rows[picks], expected, _SELFTEST_TOLERANCE)


def _manifest(
    options: BuildOptions,
    source: SourceModel,
    decision: Decision,
    payload: dict[str, bytes],
    epoch: int | None,
) -> Manifest:
    chosen = decision.chosen
    info = chosen.graph_info
    quantization = None
    if chosen.precision != "float":
        quantization = Quantization(
            scheme=info["scheme"],
            layout=info["layout"],
            leaf_bits=info["leaf_bits"],
            escalated=chosen.precision == "int16",
            bin_dtypes=info["bin_dtypes"],
            margin_error_bound=info["margin_error_bound"],
        )
    created = datetime.fromtimestamp(epoch if epoch is not None else time.time(), timezone.utc)
    return Manifest(
        format=FORMAT,
        name=options.name,
        version=options.version,
        created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=Source(
            framework="xgboost",
            framework_version=source.framework_version,
            sha256=source.sha256,
            objective=source.objective_name,
            num_class=source.num_class,
            num_trees=len(source.ensemble.trees),
            best_iteration=source.best_iteration,
            num_features=source.ensemble.num_features,
        ),
        task=source.objective.task,
        inputs=InputSchema(
            features=_features(source),
            missing="nan",
        ),
        outputs=chosen.model.outputs,
        precision="float" if chosen.precision == "float" else "int8",
        quantization=quantization,
        parity=chosen.parity,
        requirements=Requirements(
            onnxruntime=chosen.min_onnxruntime, opsets=chosen.model.opsets
        ),
        files={
            name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            for name, data in sorted(payload.items())
        },
        build=decision.record,
    )


def _features(source: SourceModel) -> tuple[Feature, ...]:
    """The input schema; a categorical feature lists the codes its splits name and, for a
    model trained on pandas categoricals, the category names by code."""
    listed = source.ensemble.categories_per_feature()
    return tuple(
        Feature(
            name=name,
            type=kind,
            codes=CategoryCodes.of(int(c) for c in listed.get(f, ())) if kind == "c" else None,
            categories=source.category_names.get(f) if kind == "c" else None,
        )
        for f, (name, kind) in enumerate(
            zip(source.feature_names, source.feature_types, strict=True)
        )
    )


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return None
    if not value.isdigit():
        raise BundleError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {value!r}")
    return int(value)
