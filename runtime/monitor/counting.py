"""Counting live rows into a baseline's bins, for one loaded model version.

A ``Monitor`` belongs to one loaded model version (a model switch starts a new one, so counts
never mix versions). It keeps counts, never rows: per feature one count per baseline bin and a
missing count, and one count per prediction bin, for two windows — everything since the model
was loaded, and the most recent ``window_rows`` rows. The recent window is ``BLOCKS`` blocks
of ``window_rows / BLOCKS`` rows: the block being filled and as many of the newest full blocks
as fit beside it, so the window covers between 90% and 100% of ``window_rows`` once that many
rows were seen, in memory independent of its size.

Counting a single row costs a dozen numpy calls, more than scoring's share of a request can
spare; ``observe`` therefore only queues the rows (in memory, never written), and they are
counted together by ``flush``: a server flushes every half second off the request path, and a
caller that never does flushes when ``PENDING_ROWS`` rows wait, and before every report.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.monitor.report import (
    BLOCKS,
    DriftReport,
    FeatureWindow,
    PredictionWindow,
    Window,
    timestamp,
)
from edgebundle.runtime.stats import Baseline, bin_edges, bin_index, prediction_values

DEFAULT_WINDOW_ROWS = 10_000
PENDING_ROWS = 4096  # ~1.6 MB of 100-feature rows at most; a busy server flushes sooner
# Values (rows × features) per counting step: a large batch is counted in steps whose few
# temporary arrays stay around a megabyte.
_STEP_VALUES = 1 << 17


@dataclass(slots=True)
class _Counts:
    rows: int
    # [F, G + 1]: feature f's bins in its first len(edges_f) + 1 columns, missing in the last
    bins: npt.NDArray[np.int64]
    prediction: npt.NDArray[np.int64]  # [P]

    def add(self, other: _Counts) -> None:
        self.rows += other.rows
        self.bins += other.bins
        self.prediction += other.prediction


class _Binner:
    """The baseline's edges as arrays: one comparison counts a whole batch's bins at once.
    Without a baseline there are no bins and only rows are counted."""

    def __init__(self, baseline: Baseline | None) -> None:
        features = () if baseline is None else baseline.features
        self.baseline = baseline
        self.sizes = [len(f.edges) + 1 for f in features]
        self.width = max(self.sizes, default=1)
        # Edge-major [width - 1, F], so a batch is compared one edge at a time across all
        # features. NaN pads: ``x >= NaN`` is false, so padding never moves a value up a bin,
        # even +inf.
        self.edges = np.full((self.width - 1, len(features)), np.nan, dtype=np.float32)
        for f, feature in enumerate(features):
            self.edges[: len(feature.edges), f] = bin_edges(feature.edges)
        self.offsets = np.arange(len(features)) * (self.width + 1)
        self.bin_dtype = np.uint8 if self.width < 255 else np.intp
        self.step_rows = max(1, _STEP_VALUES // max(len(features), 1))
        self.kind = "value" if baseline is None else baseline.prediction.kind
        self.prediction_edges = bin_edges(() if baseline is None else baseline.prediction.edges)

    def empty(self) -> _Counts:
        return _Counts(
            rows=0,
            bins=np.zeros((len(self.sizes), self.width + 1), dtype=np.int64),
            prediction=np.zeros(len(self.prediction_edges) + 1, dtype=np.int64),
        )

    def count(self, x: npt.NDArray[np.float32], output: npt.NDArray[Any]) -> _Counts:
        counts = self.empty()
        counts.rows = len(x)
        if not self.sizes:
            return counts
        # A value's bin is the number of its feature's edges at or below it: one comparison
        # per edge row across all features, added up in place (twice as fast as comparing a
        # [rows, edges, features] block at once and summing it).
        bins = np.zeros(x.shape, dtype=self.bin_dtype)
        above = np.empty(x.shape, dtype=bool)
        # bool viewed as uint8 adds without a cast per element
        increment = above.view(np.uint8) if bins.dtype == np.uint8 else above
        for edge_row in self.edges:
            np.greater_equal(x, edge_row, out=above)
            bins += increment
        # Missing values go to an extra last bin, so one bincount counts both.
        np.putmask(bins, np.isnan(x), self.width)
        counts.bins += np.bincount(
            (bins + self.offsets).ravel(), minlength=counts.bins.size
        ).reshape(counts.bins.shape)
        values = prediction_values(self.kind, output)
        counts.prediction += np.bincount(
            bin_index(self.prediction_edges, values), minlength=len(counts.prediction)
        )
        return counts

    def window(self, counts: _Counts) -> Window:
        if self.baseline is None:
            return Window(rows=counts.rows)
        return Window(
            rows=counts.rows,
            features=tuple(
                FeatureWindow.of(
                    feature.name,
                    tuple(int(c) for c in counts.bins[f, : self.sizes[f]]),
                    int(counts.bins[f, self.width]),
                    feature,
                )
                for f, feature in enumerate(self.baseline.features)
            ),
            prediction=PredictionWindow.of(
                tuple(int(c) for c in counts.prediction), self.baseline.prediction.shares
            ),
        )


class Monitor:
    """Counts for one loaded model version; ``observe`` and ``report`` are thread-safe."""

    def __init__(
        self,
        model: str,
        version: str,
        baseline: Baseline | None,
        window_rows: int = DEFAULT_WINDOW_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_rows < BLOCKS:
            raise ValueError(f"window_rows must be >= {BLOCKS}")
        self.model = model
        self.version = version
        self.baseline = baseline
        self.window_rows = window_rows
        self._clock = clock
        self._started = clock()
        self._block_rows = window_rows // BLOCKS
        self._lock = threading.Lock()  # the queue
        self._count_lock = threading.Lock()  # the counts; taken before the queue's
        self._pending: list[tuple[npt.NDArray[np.float32], npt.NDArray[Any]]] = []
        self._pending_rows = 0
        self._binner = _Binner(baseline)
        self._total = self._binner.empty()
        self._current = self._binner.empty()
        self._blocks: deque[_Counts] = deque(maxlen=BLOCKS)

    def observe(self, x: npt.NDArray[np.float32], output: npt.NDArray[Any]) -> None:
        """Rows scored (float32 ``[N, F]``) and the bundle's first output for them."""
        with self._lock:
            self._pending.append((x, output))
            self._pending_rows += len(x)
            full = self._pending_rows >= PENDING_ROWS
        if full:
            self.flush()

    def flush(self) -> None:
        """Count the queued rows, in the order they were observed."""
        with self._count_lock:
            self._drain()

    def report(self) -> DriftReport:
        with self._count_lock:
            self._drain()
            recent = self._binner.empty()
            # As many of the newest full blocks as fit beside the current one.
            blocks = list(self._blocks)[1:] if self._current.rows else self._blocks
            for block in (*blocks, self._current):
                recent.add(block)
            since_start = self._binner.window(self._total)
        return DriftReport(
            model=self.model,
            version=self.version,
            started=timestamp(self._started),
            generated=timestamp(self._clock()),
            window_rows=self.window_rows,
            baseline=self.baseline,
            since_start=since_start,
            recent=self._binner.window(recent),
        )

    def _drain(self) -> None:
        """Count what is queued; the caller holds the count lock, so queues drain in order."""
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if pending:
            self._count(pending)

    def _count(self, pending: list[tuple[npt.NDArray[np.float32], npt.NDArray[Any]]]) -> None:
        x = np.concatenate([x for x, _ in pending])
        output = np.concatenate([output for _, output in pending])
        start = 0
        while start < len(x):
            # Split where the current block fills, so each block holds exactly its rows, and
            # into steps of bounded memory.
            take = min(
                len(x) - start, self._block_rows - self._current.rows, self._binner.step_rows
            )
            counts = self._binner.count(x[start : start + take], output[start : start + take])
            self._total.add(counts)
            self._current.add(counts)
            if self._current.rows == self._block_rows:
                self._blocks.append(self._current)
                self._current = self._binner.empty()
            start += take
