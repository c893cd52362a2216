"""Wall-clock medians for the build report and ``bundle compare``: one way to time a scorer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def median_seconds(call: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result
