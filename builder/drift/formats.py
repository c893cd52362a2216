"""Numbers and histogram bins as the drift report writes them, in text and HTML alike."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

DIGITS = 4
_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


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


def psi_text(value: float | None, places: int = 3) -> str:
    return "—" if value is None else f"{value:.{places}f}"


def p_value_text(value: float | None) -> str:
    """Three decimals, and ``<0.001`` below: smaller p-values say nothing more to a reader."""
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def points(value: float | None) -> str:
    # Rounded before signing, so a shift of -0.01 pp reads +0.0 rather than -0.0.
    return "—" if value is None else f"{round(100 * value, 1) + 0.0:+.1f} pp"
