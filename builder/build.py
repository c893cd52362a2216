"""``bundle build``: load → emit (float, int8 → int16) → check parity → pack and sign.

Only ``load_model``/``load_rows`` at the start and ``write_atomic`` at the end touch disk;
everything between is pure and testable in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.baseline import baseline
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
from edgebundle.builder.convert.link import BuiltModel, assemble
from edgebundle.builder.convert.load import SourceModel, load_model
from edgebundle.builder.convert.objectives import Link
from edgebundle.builder.data import load_rows
from edgebundle.builder.errors import ParityError
from edgebundle.builder.timing import median_seconds
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.manifest import (
    FORMAT,
    Budget,
    Feature,
    FileEntry,
    InputSchema,
    Manifest,
    Parity,
    Quantization,
    Requirements,
    Source,
)
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.selftest import Selftest, Tolerance
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import MANIFEST_CONTEXT, sign_all

F32 = npt.NDArray[np.float32]
_TIMING_CALLS = 200
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
    precision: str = "int8"  # "int8" (escalates to int16 leaves) or "float"
    max_error: float | None = None  # None: the objective's default budget
    min_label_agreement: float | None = None
    use_best_iteration: bool = True
    force: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """One emitted model with its measurements: a row of the build report."""

    precision: str  # float, int8, int16
    model: BuiltModel
    graph_info: dict[str, Any]  # the emitter's quantization report; empty for float
    min_onnxruntime: str  # the oldest onnxruntime that runs the model
    parity: Parity
    outputs: dict[str, npt.NDArray[np.generic]]  # on the check rows
    load_ms: float
    us_per_row: float

    @property
    def size(self) -> int:
        return len(self.model.onnx_bytes)


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    path: Path
    manifest: Manifest
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    bundle_bytes: int


class BudgetMissedError(ParityError):
    """No candidate of the requested precision met the budget; the report is still shown."""

    def __init__(self, message: str, candidates: tuple[Candidate, ...]) -> None:
        super().__init__(message)
        self.candidates = candidates


def build(options: BuildOptions) -> BuildResult:
    """The whole pipeline; raises a BundleError (never signs) when something is off."""
    source = load_model(options.model, options.use_best_iteration)
    data = load_rows(options.data, source.feature_names) if options.data else _no_rows(source)
    rows = np.concatenate([data, _synthesized(source)])
    link = source.objective.link
    reference = Reference.from_predictions(
        link, source.reference_predict(rows), source.reference_predict(rows, margin=True)
    )
    budget = _budget(options, link)

    def evaluate(precision: str, graph: MarginGraph) -> Candidate:
        return _evaluate(precision, graph, source, rows, reference, budget, len(data))

    candidates = _candidates(options.precision, source, rows, evaluate)
    chosen = _choose(options.precision, candidates)
    selftest = _selftest(chosen, rows, len(data))
    payload = {"model.onnx": chosen.model.onnx_bytes, "selftest.json": selftest.to_bytes()}
    if len(data):
        first = chosen.outputs[chosen.model.outputs[0].name][: len(data)]
        stats = baseline(source.ensemble, source.feature_names, data, link, first)
        payload["stats.json"] = stats.to_bytes()
    epoch = _source_date_epoch()
    manifest = _manifest(options, source, chosen, payload, epoch)
    manifest_bytes = manifest.to_bytes()
    signatures = sign_all(options.keys, MANIFEST_CONTEXT, manifest_bytes)
    bundle = write_bundle(manifest_bytes, signatures.to_bytes(), payload, mtime=epoch or 0)
    path = options.out_dir / f"{options.name}-{options.version}.bundle"
    write_atomic(path, bundle, options.force)
    return BuildResult(
        path=path,
        manifest=manifest,
        candidates=candidates,
        chosen=chosen,
        bundle_bytes=len(bundle),
    )


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
    evaluate: Callable[[str, MarginGraph], Candidate],
) -> tuple[Candidate, ...]:
    """Float always (it is the lossless reference row of the report); for int8, int8 leaves
    and, only when those miss the budget, int16 leaves."""
    float_graph, quantized = _emitters(source, rows)
    found = [evaluate("float", float_graph)]
    if precision == "int8":
        found.append(evaluate("int8", quantized(8)))
        if not found[-1].parity.passed:
            found.append(evaluate("int16", quantized(16)))
    return tuple(found)


def _emitters(source: SourceModel, rows: F32) -> tuple[MarginGraph, Callable[[int], MarginGraph]]:
    """The float graph, and the quantized graph for a code width (8 or 16 bits): of the trees,
    or of a gblinear model (whose error bound is stated for the largest |x| of ``rows``)."""
    linear = source.linear
    if linear is None:
        return emit_float(source.ensemble), lambda bits: emit_int8(source.ensemble, bits)
    bound = np.nanmax(np.abs(rows), axis=0, initial=0.0).astype(np.float32)
    return emit_linear_float(linear), lambda bits: emit_linear_int8(linear, bits, bound)


def _choose(precision: str, candidates: tuple[Candidate, ...]) -> Candidate:
    chosen = candidates[-1]
    if chosen.parity.passed:
        return chosen
    p = chosen.parity
    if precision == "float":
        raise BudgetMissedError(
            f"the float model misses the error budget (max error {p.max_error:.3g} > "
            f"{p.budget.max_error:.3g}); this is a converter bug, please report it",
            candidates,
        )
    raise BudgetMissedError(
        f"int8 misses the error budget even with int16 leaves (max error {p.max_error:.3g}, "
        f"budget {p.budget.max_error:.3g}; label agreement {p.label_agreement}); "
        "nothing was signed: use --precision float, or raise --max-error",
        candidates,
    )


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
        load_ms=load_ms,
        us_per_row=_us_per_row(scorer, rows),
    )


def _us_per_row(scorer: Scorer, rows: F32) -> float:
    """Median latency of single-row calls, the device's common case."""
    singles = itertools.cycle(rows[:, None, :])
    seconds, _ = median_seconds(lambda: scorer.predict(next(singles)), _TIMING_CALLS)
    return seconds * 1e6


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
    chosen: Candidate,
    payload: dict[str, bytes],
    epoch: int | None,
) -> Manifest:
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
    )


def _features(source: SourceModel) -> tuple[Feature, ...]:
    """The input schema; a categorical feature lists the codes its splits name and, for a
    model trained on pandas categoricals, the category names by code."""
    listed = source.ensemble.categories_per_feature()
    return tuple(
        Feature(
            name=name,
            type=kind,
            codes=tuple(int(c) for c in listed.get(f, ())) if kind == "c" else None,
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


def write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write ``path`` durably and atomically (a reader sees the old file or the whole new one).
    An existing bundle with other bytes is kept unless forced: devices refuse the same version
    with other content, so silently replacing it would strand them."""
    if path.exists() and not force and path.read_bytes() != data:
        raise BundleError(
            f"{path} exists with other content; bump --version (devices refuse the same "
            "version with other content) or pass --force"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, data)
