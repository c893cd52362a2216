"""The workstation's ledger of fleet telemetry: sums, each report once."""

from __future__ import annotations

from edgebundle.builder.fleet.ledger import EMPTY, add_reports
from edgebundle.runtime.fleet.documents import (
    TELEMETRY_FORMAT,
    DriftCounts,
    FeatureCounts,
    ModelTelemetry,
    Telemetry,
)


def report(device: str, session: str, sequence: int, requests: int) -> Telemetry:
    drift = DriftCounts(rows=requests, features=(FeatureCounts(name="a", counts=(requests, 0),
                        missing=0),), prediction=(requests,))  # fmt: skip
    model = ModelTelemetry(name="m", version="1.0.0", requests=requests, errors=0,
                           latency=None, drift=drift)  # fmt: skip
    return Telemetry(format=TELEMETRY_FORMAT, device=device, session=session, sequence=sequence,
                     start="2026-01-01T00:00:00Z", end="2026-01-01T00:01:00Z", dropped=0,
                     models=(model,))  # fmt: skip


def test_the_ledger_adds_each_report_once() -> None:
    reports = [report("a", "s1", 1, 5), report("a", "s1", 2, 3), report("b", "s9", 1, 10)]
    ledger, problems = add_reports(EMPTY, reports)
    again, _ = add_reports(ledger, [reports[1], report("a", "s2", 1, 1)])  # a redelivery
    assert problems == []
    [totals] = again.versions
    assert (totals.requests, totals.devices, again.reports) == (19, ("a", "b"), 4)
    assert totals.drift is not None and totals.drift.features[0].counts == (19, 0)
