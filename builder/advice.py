"""What to say when no candidate meets the error budget: the measured numbers, the budget,
and the one option that would change the outcome (pure: ``build`` raises with its text)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebundle.builder.candidate import Candidate
    from edgebundle.runtime.manifest import Parity

# The float model sums the same float32 leaves as XGBoost in another order: its error is a few
# float32 steps of the output, and grows with the number of trees. Beyond this many steps it
# is no longer rounding but a wrong conversion.
ROUNDING_STEPS = 1024


def missed(precision: str, candidates: Sequence[Candidate], resolution: float) -> str:
    """The one-line reason nothing was signed. ``resolution`` is one float32 step at the
    largest reference output, in the budget's units (relative to the error scale)."""
    last = candidates[-1].parity
    if precision == "float":
        return _float_missed(last, resolution)
    float_parity = candidates[0].parity
    if precision == "auto":  # only raised when float misses too
        return (
            f"no precision meets the error budget ({candidates[-1].precision}: "
            f"{_measured(last)}); nothing was signed; {_float_missed(float_parity, resolution)}"
        )
    tried = "int8 and int16 leaves miss" if len(candidates) > 2 else "int8 misses"
    head = f"{tried} the error budget ({_measured(last)}); nothing was signed"
    if float_parity.passed:
        return f"{head}: use --precision float, which meets it ({_measured(float_parity)})"
    return f"{head}; {_float_missed(float_parity, resolution)}"


def _float_missed(p: Parity, resolution: float) -> str:
    budget = p.budget
    if p.max_error > budget.max_error:
        if budget.max_error < resolution:
            return (
                f"--max-error {budget.max_error:.3g} is below float32 resolution: one float32 "
                f"step at these outputs is {resolution:.3g} (relative to the error scale "
                f"{p.error_scale:.4g}), so no float32 model can meet it; use --max-error "
                f"{_above(p.max_error)} or more (the float model's error)"
            )
        if p.max_error <= ROUNDING_STEPS * resolution:
            steps = p.max_error / resolution
            return (
                f"the float model's error {p.max_error:.3g} is float32 rounding ({steps:.0f} "
                "float32 steps: its trees are summed in another order than XGBoost's), above "
                f"--max-error {budget.max_error:.3g}; use --max-error {_above(p.max_error)}"
            )
        return (
            f"the float model misses the error budget ({_measured(p)}), far beyond float32 "
            "rounding: this is a converter bug, please report it with the model"
        )
    return (
        f"the float model's labels agree with XGBoost on {p.label_agreement:.2%} of the check "
        f"rows, below the required {budget.min_label_agreement:.2%} (rows whose score sits "
        "within float32 rounding of the decision boundary); use --min-agreement "
        f"{_below(p.label_agreement or 0.0)}"
    )


def _measured(p: Parity) -> str:
    """Error against budget, and labels against their minimum when the task has labels."""
    text = f"max error {p.max_error:.3g}, budget {p.budget.max_error:.3g}"
    if p.label_agreement is not None and p.budget.min_label_agreement is not None:
        text += f"; labels {p.label_agreement:.2%}, need ≥ {p.budget.min_label_agreement:.2%}"
    return text


def _above(value: float) -> str:
    """``value`` rounded up to 2 significant digits: a budget that accepts it."""
    if value <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / step) * step:.2g}"


def _below(value: float) -> str:
    """``value`` rounded down to 4 decimals: a minimum it meets."""
    return f"{math.floor(value * 1e4) / 1e4:.4f}"
