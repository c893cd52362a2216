"""The fleet's JSON documents, described declaratively (``runtime.document``): a device's
retained status, its telemetry reports and the channel's update notice.

Telemetry carries counts *since the previous report* (requests, errors, drift bins), so a
fleet view adds the reports of every device up; a report is numbered per process
(``session``, ``sequence``) so one delivered twice (MQTT's QoS 1 is at-least-once) counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import (
    BOOLEAN,
    COUNT,
    NON_NEGATIVE,
    TEXT,
    TIMESTAMP,
    array,
    choice,
    constant,
    count,
    dump,
    load,
    nested,
    optional,
)
from edgebundle.runtime.errors import FleetError, ManifestError

STATUS_FORMAT = "edgebundle.fleet-status/1"
TELEMETRY_FORMAT = "edgebundle.fleet-telemetry/1"
NOTICE_FORMAT = "edgebundle.fleet-notice/1"
HEALTH = ("ready", "degraded", "stopped")
RESULTS = ("installed", "up-to-date", "failed", "unreachable", "rejected")
# Quantiles a report gives; a fleet view cannot merge them, it shows their spread.
QUANTILES = ("p50", "p90", "p99")

D = TypeVar("D")


@dataclass(frozen=True, kw_only=True, slots=True)
class ActiveModel:
    name: Annotated[str, TEXT]
    version: Annotated[str, TEXT]


@dataclass(frozen=True, kw_only=True, slots=True)
class Failure:
    """A version an update pass did not install, and why."""

    name: Annotated[str, TEXT]
    version: Annotated[str, TEXT]
    detail: Annotated[str, TEXT]


@dataclass(frozen=True, kw_only=True, slots=True)
class UpdateResult:
    """The device's last update pass."""

    time: Annotated[str, TIMESTAMP]
    result: Annotated[str, choice(RESULTS)]
    serial: Annotated[int | None, optional(count(1))]  # the index it read; None if none
    detail: Annotated[str, TEXT]
    failures: Annotated[tuple[Failure, ...], array(nested(Failure))]


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceStatus:
    """Retained on ``edgebundle/<fleet>/devices/<id>/status``; the MQTT last will is the same
    document as of the session's start with ``online`` false."""

    format: Annotated[str, constant(STATUS_FORMAT, "fleet status")]
    device: Annotated[str, TEXT]
    online: Annotated[bool, BOOLEAN]
    health: Annotated[str, choice(HEALTH)]
    models: Annotated[
        tuple[ActiveModel, ...], array(nested(ActiveModel), unique=(lambda m: m.name, "model"))
    ]
    last_update: Annotated[UpdateResult | None, optional(nested(UpdateResult))]
    runtime: Annotated[str, TEXT]
    onnxruntime: Annotated[str, TEXT]
    started: Annotated[str, TIMESTAMP]
    uptime_seconds: Annotated[int, COUNT]
    updated: Annotated[str, TIMESTAMP]


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    """Quantiles of request latency in seconds, each the upper edge of the histogram bucket
    it falls in (an upper bound, as Prometheus's ``histogram_quantile`` reads buckets)."""

    p50: Annotated[float, NON_NEGATIVE]
    p90: Annotated[float, NON_NEGATIVE]
    p99: Annotated[float, NON_NEGATIVE]


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureCounts:
    name: Annotated[str, TEXT]
    counts: Annotated[tuple[int, ...], array(COUNT)]  # rows per baseline bin
    missing: Annotated[int, COUNT]


@dataclass(frozen=True, kw_only=True, slots=True)
class DriftCounts:
    """Rows counted into the bundle's baseline bins since the previous report."""

    rows: Annotated[int, COUNT]
    features: Annotated[tuple[FeatureCounts, ...], array(nested(FeatureCounts))]
    prediction: Annotated[tuple[int, ...], array(COUNT)]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelTelemetry:
    name: Annotated[str, TEXT]
    version: Annotated[str, TEXT]
    requests: Annotated[int, COUNT]
    errors: Annotated[int, COUNT]  # answered 4xx or 5xx
    latency: Annotated[Latency | None, optional(nested(Latency))]  # None: no request
    drift: Annotated[DriftCounts | None, optional(nested(DriftCounts))]  # None: not monitored


@dataclass(frozen=True, kw_only=True, slots=True)
class Telemetry:
    """Published with QoS 1 on ``edgebundle/<fleet>/devices/<id>/telemetry``."""

    format: Annotated[str, constant(TELEMETRY_FORMAT, "fleet telemetry")]
    device: Annotated[str, TEXT]
    session: Annotated[str, TEXT]  # random per process start: (session, sequence) is unique
    sequence: Annotated[int, count(1)]
    start: Annotated[str, TIMESTAMP]
    end: Annotated[str, TIMESTAMP]
    dropped: Annotated[int, COUNT]  # earlier reports lost to the bounded buffer
    models: Annotated[
        tuple[ModelTelemetry, ...],
        array(nested(ModelTelemetry), unique=(lambda m: m.name, "model")),
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """``bundle publish --notify``: the channel has index ``serial``. A hint only: a device
    still reads and verifies everything from the channel."""

    format: Annotated[str, constant(NOTICE_FORMAT, "fleet notice")]
    serial: Annotated[int, count(1)]


def to_bytes(document: Any) -> bytes:
    return dumps_canonical(dump(document), compact=True)


def parse(cls: type[D], data: bytes, what: str) -> D:
    """``cls`` read strictly from ``data``; a ``FleetError`` naming the field otherwise."""
    try:
        document: D = load(cls, loads_strict(data, what))  # type: ignore[type-var]
    except ManifestError as e:
        raise FleetError(f"invalid {what}: {e}") from None
    return document
