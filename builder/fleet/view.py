"""``bundle fleet status``'s view: devices per model version, offline devices, failed
updates, traffic, and the fleet's drift per model version, merged from every device's counts
and judged by the same statistics as ``bundle drift`` (``builder.drift.analysis``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgebundle.builder.drift.analysis import Drift, analyse, summary
from edgebundle.builder.drift.summary import summary_dict
from edgebundle.builder.fleet.ledger import Ledger, VersionTotals
from edgebundle.runtime.document import dump
from edgebundle.runtime.fleet.documents import DeviceStatus
from edgebundle.runtime.monitor.report import (
    BLOCKS,
    DriftReport,
    FeatureWindow,
    PredictionWindow,
    Window,
    timestamp,
)
from edgebundle.runtime.stats import Baseline

# A model version's baseline, or None when it is not to be had (no bundle, built without --data).
Baselines = Callable[[str, str], Baseline | None]


@dataclass(frozen=True, kw_only=True, slots=True)
class VersionCount:
    name: str
    version: str
    devices: int
    online: int


@dataclass(frozen=True, kw_only=True, slots=True)
class FailedUpdate:
    device: str
    result: str  # failed (a version refused), rejected or unreachable (the channel)
    name: str | None
    version: str | None
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetView:
    fleet: str
    statuses: Mapping[str, DeviceStatus]
    versions: tuple[VersionCount, ...]
    failed: tuple[FailedUpdate, ...]
    ledger: Ledger
    drift: tuple[Drift, ...]

    @property
    def offline(self) -> tuple[DeviceStatus, ...]:
        return tuple(s for _, s in sorted(self.statuses.items()) if not s.online)


def fleet_view(
    fleet: str, statuses: Mapping[str, DeviceStatus], ledger: Ledger, baselines: Baselines
) -> FleetView:
    counts: dict[tuple[str, str], list[int]] = {}
    failed: list[FailedUpdate] = []
    for device, status in sorted(statuses.items()):
        for model in status.models:
            count = counts.setdefault((model.name, model.version), [0, 0])
            count[0] += 1
            count[1] += status.online
        update = status.last_update
        if update is None or update.result in ("installed", "up-to-date"):
            continue
        if update.failures:
            failed += [
                FailedUpdate(device=device, result=update.result, name=f.name,
                             version=f.version, detail=f.detail)
                for f in update.failures
            ]  # fmt: skip
        else:
            failed.append(
                FailedUpdate(device=device, result=update.result, name=None, version=None,
                             detail=update.detail)
            )  # fmt: skip
    versions = tuple(
        VersionCount(name=n, version=v, devices=c[0], online=c[1])
        for (n, v), c in sorted(counts.items())
    )
    drift = tuple(
        analyse(merged_report(totals, baselines(totals.name, totals.version)), "since_start")
        for totals in ledger.versions
        if totals.drift is not None
    )
    return FleetView(
        fleet=fleet,
        statuses=statuses,
        versions=versions,
        failed=tuple(failed),
        ledger=ledger,
        drift=drift,
    )


def merged_report(totals: VersionTotals, baseline: Baseline | None) -> DriftReport:
    """The fleet's drift counts of one model version as a drift report of its own, both
    windows the whole collected period; without a matching baseline, rows only."""
    counts = totals.drift
    rows = 0 if counts is None else counts.rows
    window = Window(rows=rows)
    if counts is not None and baseline is not None and _fits(counts.features, baseline):
        window = Window(
            rows=rows,
            features=tuple(
                FeatureWindow.of(f.name, f.counts, f.missing, base)
                for f, base in zip(counts.features, baseline.features, strict=True)
            ),
            prediction=PredictionWindow.of(counts.prediction, baseline.prediction.shares),
        )
    else:
        baseline = None
    now = timestamp(time.time())
    return DriftReport(
        model=totals.name,
        version=totals.version,
        started=now,
        generated=now,
        window_rows=max(BLOCKS, rows),
        baseline=baseline,
        since_start=window,
        recent=window,
    )


def _fits(features: Any, baseline: Baseline) -> bool:
    shape = [(f.name, len(f.edges) + 1) for f in baseline.features]
    return shape == [(f.name, len(f.counts)) for f in features]


def view_dict(view: FleetView) -> dict[str, Any]:
    return {
        "fleet": view.fleet,
        "devices": [dump(s) for _, s in sorted(view.statuses.items())],
        "versions": [
            {"name": v.name, "version": v.version, "devices": v.devices, "online": v.online}
            for v in view.versions
        ],
        "offline": [s.device for s in view.offline],
        "failed_updates": [
            {
                "device": f.device,
                "result": f.result,
                "name": f.name,
                "version": f.version,
                "detail": f.detail,
            }
            for f in view.failed
        ],
        "telemetry": dump(view.ledger),
        "drift": [summary_dict(d) for d in view.drift],
    }


def format_view(view: FleetView) -> str:
    statuses = view.statuses
    online = sum(s.online for s in statuses.values())
    lines = [
        f"fleet {view.fleet}: {len(statuses)} device(s), {online} online, "
        f"{len(statuses) - online} offline"
    ]
    if view.versions:
        lines += ["", f"{'model':<24} {'version':<16} {'devices':>8} {'online':>8}"]
        lines += [
            f"{v.name:<24} {v.version:<16} {v.devices:>8} {v.online:>8}" for v in view.versions
        ]
    if view.offline:
        lines += ["", "offline:"]
        lines += [
            f"  {s.device}: last seen {s.updated}, "
            + (", ".join(f"{m.name} {m.version}" for m in s.models) or "no model")
            for s in view.offline
        ]
    if view.failed:
        lines += ["", "failed updates:"]
        lines += [
            f"  {f.device}: "
            + (f"{f.name} {f.version}: " if f.name else f"{f.result}: ")
            + f.detail
            for f in view.failed
        ]
    ledger = view.ledger
    lines += ["", f"telemetry: {ledger.reports:,} report(s) collected"]
    lines += [
        f"  {t.name} {t.version}: {t.requests:,} requests, {t.errors:,} errors, "
        f"{len(t.devices)} device(s)"
        for t in ledger.versions
    ]
    counted = {(t.name, t.version): t.drift for t in ledger.versions}
    for drift in view.drift:
        report = drift.report
        counts = counted.get((report.model, report.version))
        judged = summary(drift)
        if report.baseline is None and counts is not None and counts.features:
            judged = "counted in the bundle's bins; --channel DIR judges them against it"
        lines.append(f"drift {report.model} {report.version} ({drift.rows:,} rows): {judged}")
    return "\n".join(lines)
