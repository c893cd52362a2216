"""What the build measures to choose a precision: one-row latency and a model's resident memory.

This machine is usually shared and noisy, so latencies are taken interleaved: each round times
every candidate in turn, and a candidate's figure is the median over rounds of its per-round
median. A burst of load then slows every candidate in that round alike instead of one of them.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edgebundle.builder.errors import MeasurementError
from edgebundle.builder.timing import median_seconds
from edgebundle.runtime.scoring import Scorer

ROUNDS = 7
CALLS_PER_ROUND = 60
_RSS_TIMEOUT_S = 120

# Loads the model as the runtime does and scores one row; prints the resident bytes that added
# (Linux's current RSS; elsewhere the growth of the peak, which imports may already have set).
_MODEL_RSS_SCRIPT = """
import json, os, resource, sys
import numpy as np
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.scoring import Scorer

def resident():
    if os.path.exists("/proc/self/statm"):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024

spec = json.loads(sys.argv[1])
outputs = [OutputSpec.from_dict(o) for o in spec["outputs"]]
model = sys.stdin.buffer.read()
row = np.zeros((1, len(spec["features"])), dtype=np.float32)
before = resident()
Scorer(model, spec["features"], outputs).predict(row)
print(max(0, resident() - before))
"""


def one_row_latencies(scorers: list[Scorer], rows: npt.NDArray[np.float32]) -> list[float]:
    """Median µs a single-row ``predict`` takes with each scorer, measured interleaved."""
    calls = [_single_rows(scorer, rows) for scorer in scorers]
    rounds: list[list[float]] = [[] for _ in scorers]
    for _ in range(ROUNDS):
        for call, times in zip(calls, rounds, strict=True):
            seconds, _ = median_seconds(call, CALLS_PER_ROUND)
            times.append(seconds * 1e6)
    return [statistics.median(times) for times in rounds]


def _single_rows(scorer: Scorer, rows: npt.NDArray[np.float32]) -> Callable[[], object]:
    """A call scoring the next of ``rows`` alone, cycling through them."""
    singles = itertools.cycle(rows[:, None, :])
    return lambda: scorer.predict(next(singles))


def model_rss_bytes(model: bytes, scorer: Scorer) -> int:
    """Resident bytes that loading ``model`` and scoring one row add to a fresh process."""
    spec = {
        "features": list(scorer.features),
        "outputs": [o.to_dict() for o in scorer.outputs],
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _MODEL_RSS_SCRIPT, json.dumps(spec)],
            input=model,
            capture_output=True,
            timeout=_RSS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MeasurementError("measuring memory timed out") from None
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise MeasurementError(f"measuring memory failed: {' '.join(last) or 'no message'}")
    return int(proc.stdout.strip())
