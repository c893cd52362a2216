"""Live drift monitoring: the bins of a bundle's ``stats.json`` baseline, counted for live rows.

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

``DriftReport`` is the JSON a device answers on ``GET /v2/models/{name}/stats`` and writes for
``bundle-runtime status``; ``bundle drift`` reads it on the workstation. The population
stability index, missing rates and their shift are derived from the counts and the baseline,
written for readers, and checked against the counts when a report is read.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import (
    dumps_canonical,
    get_float,
    get_list,
    get_obj,
    get_optional,
    get_str,
    join,
    json_type,
    loads_strict,
    reject_unknown,
)
from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.manifest import get_count, get_timestamp
from edgebundle.runtime.semver import Version
from edgebundle.runtime.stats import (
    Baseline,
    FeatureBaseline,
    bin_edges,
    bin_index,
    prediction_values,
)

FORMAT = "edgebundle.drift/1"
DEFAULT_WINDOW_ROWS = 10_000
BLOCKS = 10
PENDING_ROWS = 4096  # ~1.6 MB of 100-feature rows at most; a busy server flushes sooner
# Values (rows × features) per counting step: a large batch is counted in steps whose few
# temporary arrays stay around a megabyte.
_STEP_VALUES = 1 << 17
# An empty bin would make the index infinite; the usual floor of 0.01% makes an emptied 5%
# baseline bin add 0.31 instead: a shift, and finite.
PSI_FLOOR = 1e-4
# The customary reading of the index: below 0.1 stable, 0.1 to 0.2 worth watching, above 0.2 a
# population that has shifted.
PSI_WATCH = 0.1
PSI_SHIFTED = 0.2
# PSI bins present values only: a feature missing 10 points more often than in the baseline
# (a failing sensor, a changed pipeline) is flagged on its own.
MISSING_SHIFT_WATCH = 0.1
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TOLERANCE = 1e-9  # derived values written by another machine's float arithmetic


def psi(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """Population stability index of live ``counts`` against baseline shares (None: no rows)."""
    total = sum(counts)
    if total == 0:
        return None
    index = 0.0
    for share, count in zip(expected, counts, strict=True):
        e = max(share, PSI_FLOOR)
        a = max(count / total, PSI_FLOOR)
        index += (a - e) * math.log(a / e)
    return index


def psi_level(value: float | None) -> str:
    if value is None:
        return "no rows"
    if value > PSI_SHIFTED:
        return "shifted"
    return "watch" if value > PSI_WATCH else "stable"


def timestamp(seconds: float) -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime(seconds))


# --- the report format -------------------------------------------------------------------


def _counts(d: Mapping[str, Any], key: str, context: str, size: int) -> tuple[int, ...]:
    values = get_list(d, key, context)
    if len(values) != size:
        raise ManifestError(
            f"needs {size} counts (one per bin), got {len(values)}", join(context, key)
        )
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ManifestError(
                f"expected a count, got {json_type(v)}", f"{join(context, key)}[{i}]"
            )
    return tuple(values)


def _check_derived(d: Mapping[str, Any], key: str, context: str, value: float | None) -> None:
    """A derived number must be what the counts give: a report that disagrees with itself is
    refused rather than shown."""
    written = get_optional(d, key, context, get_float)
    if (written is None) != (value is None) or (
        written is not None and value is not None and abs(written - value) > _TOLERANCE
    ):
        raise ManifestError(f"does not match the counts (expected {value})", join(context, key))


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureWindow:
    """One feature's live counts: ``counts[k]`` rows in the baseline's bin k, ``missing`` NaN."""

    name: str
    counts: tuple[int, ...]
    missing: int

    @property
    def rows(self) -> int:
        return sum(self.counts) + self.missing

    def psi(self, baseline: FeatureBaseline) -> float | None:
        return psi(baseline.shares, self.counts)

    def missing_rate(self) -> float | None:
        return self.missing / self.rows if self.rows else None

    def missing_rate_shift(self, baseline: FeatureBaseline) -> float | None:
        rate = self.missing_rate()
        return None if rate is None else rate - baseline.missing_rate

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], context: str, baseline: FeatureBaseline, rows: int
    ) -> FeatureWindow:
        reject_unknown(
            d, ("name", "counts", "missing", "psi", "missing_rate", "missing_rate_shift"), context
        )
        name = get_str(d, "name", context)
        if name != baseline.name:
            raise ManifestError(f"expected feature {baseline.name!r}", join(context, "name"))
        window = cls(
            name=name,
            counts=_counts(d, "counts", context, len(baseline.edges) + 1),
            missing=get_count(d, "missing", context),
        )
        if window.rows != rows:
            raise ManifestError(
                f"counts add up to {window.rows}, the window has {rows} rows", context
            )
        _check_derived(d, "psi", context, window.psi(baseline))
        _check_derived(d, "missing_rate", context, window.missing_rate())
        _check_derived(d, "missing_rate_shift", context, window.missing_rate_shift(baseline))
        return window

    def to_dict(self, baseline: FeatureBaseline) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": list(self.counts),
            "missing": self.missing,
            "psi": self.psi(baseline),
            "missing_rate": self.missing_rate(),
            "missing_rate_shift": self.missing_rate_shift(baseline),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """Counts over a span of rows; without a baseline there is nothing to count but rows."""

    rows: int
    features: tuple[FeatureWindow, ...] = ()
    prediction: tuple[int, ...] = ()

    def prediction_psi(self, baseline: Baseline) -> float | None:
        return psi(baseline.prediction.shares, self.prediction)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str, baseline: Baseline | None) -> Window:
        reject_unknown(d, ("rows", "features", "prediction"), context)
        rows = get_count(d, "rows", context)
        items = get_list(d, "features", context)
        if baseline is None:
            if items or get_optional(d, "prediction", context, get_obj) is not None:
                raise ManifestError("counts without a baseline", context)
            return cls(rows=rows)
        if len(items) != len(baseline.features):
            raise ManifestError(
                f"needs {len(baseline.features)} features (the baseline's)",
                join(context, "features"),
            )
        features = []
        for i, (item, feature) in enumerate(zip(items, baseline.features, strict=True)):
            item_context = f"{join(context, 'features')}[{i}]"
            if not isinstance(item, dict):
                raise ManifestError(f"expected an object, got {json_type(item)}", item_context)
            features.append(FeatureWindow.from_dict(item, item_context, feature, rows))
        prediction_context = join(context, "prediction")
        prediction = get_obj(d, "prediction", context)
        reject_unknown(prediction, ("counts", "psi"), prediction_context)
        counts = _counts(
            prediction, "counts", prediction_context, len(baseline.prediction.edges) + 1
        )
        if sum(counts) != rows:
            raise ManifestError(
                f"counts add up to {sum(counts)}, the window has {rows} rows", prediction_context
            )
        window = cls(rows=rows, features=tuple(features), prediction=counts)
        _check_derived(prediction, "psi", prediction_context, window.prediction_psi(baseline))
        return window

    def to_dict(self, baseline: Baseline | None) -> dict[str, Any]:
        if baseline is None:
            return {"rows": self.rows, "features": [], "prediction": None}
        return {
            "rows": self.rows,
            "features": [
                f.to_dict(b) for f, b in zip(self.features, baseline.features, strict=True)
            ],
            "prediction": {
                "counts": list(self.prediction),
                "psi": self.prediction_psi(baseline),
            },
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftReport:
    model: str
    version: str
    started: str  # when counting began: the model's load
    generated: str
    window_rows: int  # the recent window's size
    baseline: Baseline | None  # None: the bundle was built without --data
    since_start: Window
    recent: Window

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> DriftReport:
        reject_unknown(
            d,
            (
                "format", "model", "version", "started", "generated", "window_rows",
                "baseline", "since_start", "recent",
            ),
            context,
        )  # fmt: skip
        if get_str(d, "format", context) != FORMAT:
            raise ManifestError(
                f"unsupported drift report format (expected {FORMAT!r})", join(context, "format")
            )
        version = get_str(d, "version", context)
        Version.parse(version)
        raw_baseline = get_optional(d, "baseline", context, get_obj)
        baseline = (
            None
            if raw_baseline is None
            else Baseline.from_dict(raw_baseline, join(context, "baseline"))
        )
        return cls(
            model=get_str(d, "model", context),
            version=version,
            started=get_timestamp(d, "started", context),
            generated=get_timestamp(d, "generated", context),
            window_rows=get_count(d, "window_rows", context, minimum=BLOCKS),
            baseline=baseline,
            since_start=Window.from_dict(
                get_obj(d, "since_start", context), join(context, "since_start"), baseline
            ),
            recent=Window.from_dict(
                get_obj(d, "recent", context), join(context, "recent"), baseline
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "started": self.started,
            "generated": self.generated,
            "window_rows": self.window_rows,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "since_start": self.since_start.to_dict(self.baseline),
            "recent": self.recent.to_dict(self.baseline),
        }

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict(), compact=True)


def parse_report(data: bytes, what: str = "drift report") -> DriftReport:
    return DriftReport.from_dict(loads_strict(data, what))


def verdict(window: Window, baseline: Baseline | None) -> str:
    """One line on a window: which features shifted, need watching, went missing, and the
    predictions' PSI."""
    if baseline is None:
        return f"{window.rows} rows; no baseline (built without --data), so drift is unknown"
    if window.rows == 0:
        return "no rows yet"
    scored, all_missing, missing_more = [], [], []
    for live, base in zip(window.features, baseline.features, strict=True):
        value = live.psi(base)
        if value is None:
            all_missing.append(live.name)  # the most drastic change there is, yet no PSI
        else:
            scored.append((value, live.name))
        shift = live.missing_rate_shift(base)
        if value is not None and shift is not None and shift > MISSING_SHIFT_WATCH:
            missing_more.append(f"{live.name} +{100 * shift:.0f} pp")
    scored.sort(key=lambda item: -item[0])
    shifted = [f"{name} {value:.2f}" for value, name in scored if value > PSI_SHIFTED]
    watch = [f"{name} {value:.2f}" for value, name in scored if PSI_WATCH < value <= PSI_SHIFTED]
    head = f"{len(shifted)} of {len(window.features)} features shifted (PSI > {PSI_SHIFTED})"
    parts = [head + (": " + ", ".join(shifted) if shifted else "")]
    for label, names in (
        (f"{len(watch)} to watch (PSI > {PSI_WATCH})", watch),
        ("all missing", all_missing),
        ("missing more often", missing_more),
    ):
        if names:
            parts.append(f"{label}: " + ", ".join(names))
    prediction = window.prediction_psi(baseline)
    if prediction is not None:
        parts.append(f"prediction PSI {prediction:.2f} ({psi_level(prediction)})")
    return "; ".join(parts)


# --- counting ----------------------------------------------------------------------------


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
        self.names = [f.name for f in features]
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
        if not self.sizes:
            return Window(rows=counts.rows)
        return Window(
            rows=counts.rows,
            features=tuple(
                FeatureWindow(
                    name=name,
                    counts=tuple(int(c) for c in counts.bins[f, : self.sizes[f]]),
                    missing=int(counts.bins[f, self.width]),
                )
                for f, name in enumerate(self.names)
            ),
            prediction=tuple(int(c) for c in counts.prediction),
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


# --- the reports a server leaves for ``bundle-runtime status`` ------------------------------

REPORTS_DIR = "monitor"  # in the store directory
# Seconds between a server's report files. A report of 100 features is ~90 KB and devices
# write to flash: every 5 minutes is ~26 MB a day, and status is read by people.
REPORT_INTERVAL = 300.0
_MAX_REPORT_BYTES = 16 << 20


def save_report(store_root: Path, report: DriftReport) -> None:
    directory = store_root / REPORTS_DIR
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create {directory}: {e.strerror}") from None
    write_durably(directory / f"{report.model}.json", report.to_bytes())


def load_report(store_root: Path, model: str) -> DriftReport | None:
    """The last report a server wrote for ``model``; None if none was written."""
    path = store_root / REPORTS_DIR / f"{model}.json"
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > _MAX_REPORT_BYTES:
        raise StoreError(f"{path} is larger than {_MAX_REPORT_BYTES} bytes")
    try:
        return parse_report(data, str(path))
    except ManifestError as e:
        raise StoreError(f"{path} is corrupt: {e}") from None
