"""Which candidate goes into the bundle: forced by ``--precision``, or chosen for the declared use.

``--precision auto`` (the default) weighs the lossless float model against the quantized one
(int8 leaves, or int16 when int8 misses the budget) for ``--optimize``:

- ``latency`` (the default: devices mostly score one request at a time, and the quantized
  graph's fixed per-op cost makes it slower than float at one row on small models): the one-row
  latencies of both, measured interleaved in this build (``builder/measure.py``). The quantized
  model is kept unless float is faster by more than ``LATENCY_TOLERANCE``, since within that it
  is the smaller and the measurement's own noise decides nothing.
- ``size``: the smaller ``model.onnx``; nothing is timed, so the bundle is reproducible.
- ``memory``: the fewer resident bytes that loading the model and scoring a row add to a fresh
  process (what a device pays for the model beyond Python and onnxruntime).

A candidate that misses the error budget is never chosen. The choice, the reason and what was
measured go into the manifest's ``build`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgebundle.builder.advice import missed
from edgebundle.builder.candidate import Candidate
from edgebundle.builder.errors import ParityError
from edgebundle.runtime.manifest import BuildChoice, Measured

LATENCY_TOLERANCE = 0.05
Optimize = Literal["latency", "size", "memory"]


class BudgetMissedError(ParityError):
    """No candidate of the requested precision met the budget; the report is still shown."""

    def __init__(self, message: str, candidates: tuple[Candidate, ...]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    chosen: Candidate
    record: BuildChoice


def forced(
    requested: str, optimize: str, candidates: tuple[Candidate, ...], resolution: float
) -> Decision:
    """``--precision int8|float``: the last candidate emitted, if it met the budget.
    ``resolution`` (for the advice when it did not) is one float32 step at the largest
    reference output, relative to the error scale."""
    chosen = candidates[-1]
    if not chosen.parity.passed:
        raise BudgetMissedError(missed(requested, candidates, resolution), candidates)
    reason = f"--precision {requested} forces it"
    return Decision(chosen=chosen, record=_record(requested, optimize, reason, candidates, ()))


def automatic(
    optimize: str, candidates: tuple[Candidate, ...], resolution: float
) -> Decision:
    """``--precision auto``: float or the quantized candidate, whichever serves ``optimize``
    (candidates carry the measurements that ``optimize`` needs); only those within budget."""
    exact, quantized = candidates[0], candidates[-1]
    if not (exact.parity.passed or quantized.parity.passed):
        raise BudgetMissedError(missed("auto", candidates, resolution), candidates)
    if not (exact.parity.passed and quantized.parity.passed):
        chosen, other = (exact, quantized) if exact.parity.passed else (quantized, exact)
        reason = f"{other.precision} misses the error budget"
        return Decision(chosen=chosen, record=_record("auto", optimize, reason, candidates, ()))
    if optimize == "size":
        chosen, reason = _smaller(quantized, exact)
        measured: tuple[str, ...] = ()
    elif optimize == "memory":
        chosen, reason = _lighter(quantized, exact)
        measured = ("model_rss_bytes",)
    else:
        chosen, reason = _faster(quantized, exact)
        measured = ("us_per_row",)
    return Decision(chosen=chosen, record=_record("auto", optimize, reason, candidates, measured))


def float_only(
    optimize: str, candidates: tuple[Candidate, ...], resolution: float, why: str
) -> Decision:
    """``--precision auto`` on a model the quantized graph cannot express (``why``): float."""
    chosen = candidates[0]
    if not chosen.parity.passed:
        raise BudgetMissedError(missed("float", candidates, resolution), candidates)
    reason = f"only float can be built: {why}"
    return Decision(chosen=chosen, record=_record("auto", optimize, reason, candidates, ()))


def _smaller(quantized: Candidate, exact: Candidate) -> tuple[Candidate, str]:
    chosen, other = (quantized, exact) if quantized.size <= exact.size else (exact, quantized)
    return chosen, (
        f"optimize size: {chosen.precision} model.onnx is {chosen.size:,} bytes, "
        f"{other.precision} {other.size:,}"
    )


def _faster(quantized: Candidate, exact: Candidate) -> tuple[Candidate, str]:
    q, f = quantized.us_per_row, exact.us_per_row
    figures = f"{quantized.precision} {q:.1f} µs, float {f:.1f} µs a row"
    if q <= f * (1 + LATENCY_TOLERANCE):
        return quantized, (
            f"optimize latency: {quantized.precision} is within {LATENCY_TOLERANCE:.0%} of float "
            f"at one row or faster ({figures}) and {exact.size / quantized.size:.1f}x smaller"
        )
    return exact, (
        f"optimize latency: float is {q / f - 1:.0%} faster at one row ({figures}); "
        f"{quantized.precision} would be {exact.size / quantized.size:.1f}x smaller"
    )


def _lighter(quantized: Candidate, exact: Candidate) -> tuple[Candidate, str]:
    q, f = quantized.model_rss_bytes or 0, exact.model_rss_bytes or 0
    chosen, other = (quantized, exact) if q <= f else (exact, quantized)
    return chosen, (
        f"optimize memory: loading and scoring {chosen.precision} adds "
        f"{(chosen.model_rss_bytes or 0) / 2**20:.1f} MiB resident, {other.precision} "
        f"{(other.model_rss_bytes or 0) / 2**20:.1f} MiB"
    )


def _record(
    requested: str,
    optimize: str,
    reason: str,
    candidates: tuple[Candidate, ...],
    measured: tuple[str, ...],
) -> BuildChoice:
    """Only the measurements that decided are recorded: the rest would only make otherwise
    identical builds differ (see the README's reproducibility note)."""
    return BuildChoice(
        requested=requested,
        optimize=optimize,
        reason=reason,
        candidates=tuple(
            Measured(
                precision=c.precision,
                model_bytes=c.size,
                passed=c.parity.passed,
                us_per_row=round(c.us_per_row, 2) if "us_per_row" in measured else None,
                model_rss_bytes=c.model_rss_bytes if "model_rss_bytes" in measured else None,
            )
            for c in candidates
        ),
    )
