"""Hypothesis profiles for the parser fuzz tests, and the bounds every fuzzed decoder must keep.

``make test`` runs the ``test`` profile: few examples, derandomized (the same ones each run, so
a failure is never a one-off). ``make fuzz`` sets ``EDGEBUNDLE_FUZZ=fuzz``: many more, drawn
afresh, and failing examples remembered in ``.cache/hypothesis`` for the next run.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

settings.register_profile(
    "test",
    max_examples=40,
    derandomize=True,
    database=None,
    # A hang fails the example (and pytest-timeout the test); a slow shared machine must not.
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=5_000,
    database=DirectoryBasedExampleDatabase(".cache/hypothesis"),
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("EDGEBUNDLE_FUZZ", "test"))

_T = TypeVar("_T")
# Python objects for what a decoder read: a few dozen bytes per input byte at most (a JSON
# "0," becomes a float object, a list slot and a float32), plus the interpreter's constant.
_BYTES_PER_INPUT_BYTE = 64
_FIXED_BYTES = 512 << 10


def within_memory(size: int, decode: Callable[[], _T]) -> _T:
    """``decode()``, checking that its peak allocation stays proportional to its input's
    ``size``: a decoder that amplified its input (a repeat count, a shape it allocates for)
    could take a device's memory with one small request."""
    tracemalloc.start()
    try:
        result = decode()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limit = _BYTES_PER_INPUT_BYTE * size + _FIXED_BYTES
    assert peak <= limit, f"{peak} bytes allocated for {size} bytes of input"
    return result
