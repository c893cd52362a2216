"""The workstation's running totals of the fleet's telemetry (``edgebundle.fleet-ledger/1``):
per model version the requests, errors and drift counts every device reported, each report
counted once.

Devices send counts since their previous report, so the totals are sums. A report is known
by its device, the device process's ``session`` and its ``sequence``; devices publish their
reports oldest first, so the ledger keeps the highest sequence per session and skips a report
at or below it (QoS 1 may deliver one twice).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

from edgebundle.runtime._json import loads_strict
from edgebundle.runtime.document import COUNT, TEXT, array, constant, count, load, nested, optional
from edgebundle.runtime.errors import BundleError, FleetError, ManifestError
from edgebundle.runtime.fleet.documents import DriftCounts, FeatureCounts, Telemetry, to_bytes
from edgebundle.runtime.fsio import read_capped, write_durably

FORMAT = "edgebundle.fleet-ledger/1"
_MAX_BYTES = 64 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class Seen:
    device: Annotated[str, TEXT]
    session: Annotated[str, TEXT]
    sequence: Annotated[int, count(1)]


@dataclass(frozen=True, kw_only=True, slots=True)
class VersionTotals:
    name: Annotated[str, TEXT]
    version: Annotated[str, TEXT]
    devices: Annotated[tuple[str, ...], array(TEXT)]  # that reported this version
    requests: Annotated[int, COUNT]
    errors: Annotated[int, COUNT]
    drift: Annotated[DriftCounts | None, optional(nested(DriftCounts))]


@dataclass(frozen=True, kw_only=True, slots=True)
class Ledger:
    format: Annotated[str, constant(FORMAT, "fleet ledger")]
    reports: Annotated[int, COUNT]
    seen: Annotated[tuple[Seen, ...], array(nested(Seen))]
    versions: Annotated[tuple[VersionTotals, ...], array(nested(VersionTotals))]


EMPTY = Ledger(format=FORMAT, reports=0, seen=(), versions=())


def read_ledger(path: Path) -> Ledger:
    """The ledger at ``path``; an empty one if there is none yet."""
    data = read_capped(path, _MAX_BYTES, FleetError)
    if data is None:
        return EMPTY
    try:
        return load(Ledger, loads_strict(data, str(path)))
    except ManifestError as e:
        raise FleetError(f"invalid fleet ledger {path}: {e}") from None


def write_ledger(path: Path, ledger: Ledger) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, to_bytes(ledger))
    except (OSError, BundleError) as e:
        detail = e.strerror if isinstance(e, OSError) else str(e)
        raise FleetError(f"cannot write {path}: {detail}") from None


def add_reports(ledger: Ledger, reports: Iterable[Telemetry]) -> tuple[Ledger, list[str]]:
    """``ledger`` with ``reports`` added (each once); and a line per report part that could
    not be added (drift counts shaped unlike the version's earlier ones)."""
    seen = {(s.device, s.session): s.sequence for s in ledger.seen}
    totals = {(v.name, v.version): v for v in ledger.versions}
    problems: list[str] = []
    added = 0
    for report in reports:
        key = (report.device, report.session)
        if report.sequence <= seen.get(key, 0):
            continue
        seen[key] = report.sequence
        added += 1
        for model in report.models:
            old = totals.get((model.name, model.version))
            if old is None:
                old = VersionTotals(
                    name=model.name, version=model.version, devices=(), requests=0, errors=0,
                    drift=None,
                )  # fmt: skip
            drift = old.drift
            if model.drift is not None:
                merged = add_drift(old.drift, model.drift)
                if merged is None:
                    problems.append(
                        f"{report.device}: drift counts of {model.name} {model.version} do not "
                        "match the shape of earlier reports; left out"
                    )
                else:
                    drift = merged
            totals[model.name, model.version] = replace(
                old,
                devices=tuple(sorted({*old.devices, report.device})),
                requests=old.requests + model.requests,
                errors=old.errors + model.errors,
                drift=drift,
            )
    return (
        Ledger(
            format=FORMAT,
            reports=ledger.reports + added,
            seen=tuple(Seen(device=d, session=s, sequence=n) for (d, s), n in sorted(seen.items())),
            versions=tuple(totals[k] for k in sorted(totals)),
        ),
        problems,
    )


def add_drift(a: DriftCounts | None, b: DriftCounts) -> DriftCounts | None:
    """``a + b`` bin by bin; None when their shapes differ."""
    if a is None:
        return b
    shape = [(f.name, len(f.counts)) for f in a.features]
    if shape != [(f.name, len(f.counts)) for f in b.features] or len(a.prediction) != len(
        b.prediction
    ):
        return None
    return DriftCounts(
        rows=a.rows + b.rows,
        features=tuple(
            FeatureCounts(
                name=x.name,
                counts=tuple(i + j for i, j in zip(x.counts, y.counts, strict=True)),
                missing=x.missing + y.missing,
            )
            for x, y in zip(a.features, b.features, strict=True)
        ),
        prediction=tuple(i + j for i, j in zip(a.prediction, b.prediction, strict=True)),
    )
