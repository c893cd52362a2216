"""A running server's telemetry: what happened since the previous report, as counts a fleet
view can add up (requests, errors, drift bins), plus latency quantiles.

Everything is read from what the server keeps anyway (``Metrics`` and each served model's
drift ``Monitor``), from the fleet agent's thread: nothing runs on a request's path.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgebundle.runtime.fleet.documents import (
    TELEMETRY_FORMAT,
    DriftCounts,
    FeatureCounts,
    Latency,
    ModelTelemetry,
    Telemetry,
)
from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.report import Window, timestamp
from edgebundle.runtime.serve.metrics import LATENCY_BUCKETS, Metrics, RequestTotals
from edgebundle.runtime.serve.serving import ServedModels

_ZERO = RequestTotals(requests=0, errors=0, buckets=(0,) * (len(LATENCY_BUCKETS) + 1))


def quantile(buckets: tuple[int, ...], q: float) -> float:
    """The upper edge of the bucket the ``q`` quantile falls in (the largest edge for the
    requests slower than every edge)."""
    total = sum(buckets)
    seen = 0
    for k, n in enumerate(buckets[:-1]):
        seen += n
        if seen >= q * total:
            return LATENCY_BUCKETS[k]
    return LATENCY_BUCKETS[-1]


def _minus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def drift_delta(now: Window, before: Window | None) -> DriftCounts:
    """The rows counted into ``now`` that ``before`` (the same monitor's earlier window) had
    not counted yet."""
    features = tuple(
        FeatureCounts(
            name=f.name,
            counts=f.counts if before is None else _minus(f.counts, before.features[k].counts),
            missing=f.missing - (0 if before is None else before.features[k].missing),
        )
        for k, f in enumerate(now.features)
    )
    predicted = () if now.prediction is None else now.prediction.counts
    if before is not None and before.prediction is not None:
        predicted = _minus(predicted, before.prediction.counts)
    return DriftCounts(
        rows=now.rows - (0 if before is None else before.rows),
        features=features,
        prediction=predicted,
    )


@dataclass(slots=True)
class _Sent:
    monitor: Monitor
    window: Window


class TelemetryCounter:
    """Makes one ``Telemetry`` report at a time, each covering the time since the last."""

    def __init__(
        self,
        device: str,
        metrics: Metrics,
        models: ServedModels,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.session = secrets.token_hex(8)
        self._metrics = metrics
        self._models = models
        self._clock = clock
        self._sequence = 0
        self._start = clock()
        self._requests: dict[str, RequestTotals] = {}
        self._drift: dict[str, _Sent] = {}

    def report(self, dropped: int = 0) -> Telemetry:
        end = self._clock()
        totals = self._metrics.totals()
        current = self._models.current
        models = []
        for name, loaded in sorted(current.models.items()):
            now = totals.get(name, _ZERO)
            before = self._requests.get(name, _ZERO)
            self._requests[name] = now
            buckets = _minus(now.buckets, before.buckets)
            watched = current.watched.get(name)
            models.append(
                ModelTelemetry(
                    name=name,
                    version=str(loaded.version),
                    requests=now.requests - before.requests,
                    errors=now.errors - before.errors,
                    latency=None
                    if not any(buckets)
                    else Latency(
                        p50=quantile(buckets, 0.5),
                        p90=quantile(buckets, 0.9),
                        p99=quantile(buckets, 0.99),
                    ),
                    drift=None if watched is None else self._drift_since(name, watched.monitor),
                )
            )
        self._sequence += 1
        document = Telemetry(
            format=TELEMETRY_FORMAT,
            device=self.device,
            session=self.session,
            sequence=self._sequence,
            start=timestamp(self._start),
            end=timestamp(end),
            dropped=dropped,
            models=tuple(models),
        )
        self._start = end
        return document

    def _drift_since(self, name: str, monitor: Monitor) -> DriftCounts | None:
        if monitor.baseline is None:
            return None
        window = monitor.report().since_start
        sent = self._drift.get(name)
        # A new monitor (a version switch) counts from zero.
        before = sent.window if sent is not None and sent.monitor is monitor else None
        self._drift[name] = _Sent(monitor, window)
        return drift_delta(window, before)
