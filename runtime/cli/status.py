"""The commands that read a store: ``status`` (models, versions, trust, drift) and ``audit``
(the log of what the store did and refused)."""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Iterable, Iterator

from edgebundle.runtime.cli.exits import ExitCode
from edgebundle.runtime.cli.help import document
from edgebundle.runtime.cli.options import (
    LIMITS,
    add_json_option,
    add_store_option,
    positive_int,
    text_of,
    utc_time,
)
from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.monitor.report import DriftReport, window_summary
from edgebundle.runtime.monitor.saved import load_report
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store import AUDIT_EVENTS, AuditEvent, InstalledVersion, ModelState, Store

_STORE = "/var/lib/edgebundle"


def add_status(status: argparse.ArgumentParser) -> None:
    document(
        status,
        "Show the store's trusted keys and, per model, the active and previous versions, the "
        "anti-rollback floor, the versions marked bad and the drift a server last reported.",
        examples=[
            f"bundle-runtime status --store {_STORE}",
            f"bundle-runtime status --store "
            f"{_STORE} --json | jq '.models[\"credit-score\"].active'",
        ],
        exits=[ExitCode.USAGE],
    )
    add_store_option(status)
    add_json_option(status)
    status.set_defaults(run=_status)


def add_audit(audit: argparse.ArgumentParser) -> None:
    document(
        audit,
        "Print the store's audit log: every init, install, refusal, rollback, removal, "
        "mark-bad and key rotation, oldest first, with where each install came from. A line "
        "that cannot be read is reported on stderr and skipped.",
        examples=[
            f"bundle-runtime audit --store {_STORE} --model credit-score --event refused",
            f"bundle-runtime audit --store {_STORE} --since 2026-12-01T00:00:00Z --json",
        ],
        exits=[ExitCode.USAGE],
    )
    add_store_option(audit)
    audit.add_argument("--model", metavar="NAME", help="only this model's events")
    audit.add_argument(
        "--event", choices=AUDIT_EVENTS, action="append", help="only these events (repeatable)"
    )
    audit.add_argument(
        "--since",
        type=utc_time,
        metavar="TIME",
        help="only events at or after TIME (UTC: 2026-12-01T08:00:00Z, or a date)",
    )
    audit.add_argument("--last", type=positive_int, metavar="N", help="only the last N events")
    audit.add_argument(
        "--json", action="store_true", help="print one JSON object per line (JSON Lines)"
    )
    audit.set_defaults(run=_audit)


COMMANDS = {"status": add_status, "audit": add_audit}


def _status(args: argparse.Namespace) -> int:
    store = Store.open(args.store, limits=LIMITS)
    state = store.state()
    trust = store.trust()
    reports = {name: _drift_report(store, name, model) for name, model in state.models.items()}
    keys = trust.keyids()
    if args.json:
        drift = {
            name: r.to_dict() if isinstance(r, DriftReport) else {"error": r}
            for name, r in reports.items()
            if r is not None
        }
        key_set = {"version": trust.version, "threshold": trust.threshold, "expires": trust.expires}
        doc = {
            "store": str(store.root),
            "trusted_keys": keys,
            "key_set": key_set,
            **state.to_dict(),
            "drift": drift,
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return ExitCode.OK
    print(f"store {store.root}")
    print(f"trust: {trust.describe()}")
    print("trusted keys: " + ", ".join(keys))
    if not state.models:
        print("no models installed")
    for name, model in state.models.items():
        print(name)
        print(*_model_lines(model), *_drift_lines(reports[name]), sep="\n")
    return ExitCode.OK


def _drift_report(store: Store, name: str, model: ModelState) -> DriftReport | str | None:
    """The drift a server last reported for the active version (a report of an older version
    says nothing about the one running now), or why it cannot be read: an unreadable report
    must not hide the rest of the status."""
    try:
        report = load_report(store.root, name)
    except StoreError as e:
        return str(e)
    if report is None or model.active is None or report.version != str(model.active):
        return None
    return report


def _drift_lines(report: DriftReport | str | None) -> list[str]:
    if report is None:
        return [f"  {'drift:':<10}no report yet (a server writes one while it serves)"]
    if isinstance(report, str):
        return [f"  {'drift:':<10}{report}"]
    return [
        f"  {'drift:':<10}reported {report.generated}",
        f"    {'recent:':<13}{window_summary(report, report.recent)}",
        f"    {'since start:':<13}{window_summary(report, report.since_start)}"
        f" (since {report.started})",
    ]


def _model_lines(model: ModelState) -> list[str]:
    lines = []
    for role, version in (("active", model.active), ("previous", model.previous)):
        record = None if version is None else model.record(version)
        lines.append(f"  {role + ':':<10}{_version_line(version, record)}")
    if model.highest_seen is None:
        lines.append(f"  {'highest:':<10}none (no version installed yet)")
    else:
        highest = f"{model.highest_seen} (anti-rollback: nothing lower installs)"
        lines.append(f"  {'highest:':<10}{highest}")
    lines.append(f"  {'bad:':<10}" + (", ".join(map(str, model.bad)) or "none"))
    return lines


def _version_line(version: Version | None, record: InstalledVersion | None) -> str:
    if version is None or record is None:
        return text_of(None)
    outcome = "passed" if record.selftest.passed else "FAILED"
    return (
        f"{version} ({record.precision}, installed {record.installed_at}, "
        f"selftest {outcome}: {record.selftest.detail})"
    )


def _audit(args: argparse.Namespace) -> int:
    store = Store.open(args.store, limits=LIMITS)
    events = _filtered(_readable(store.audit()), args)
    if args.last is not None:
        events = iter(_tail(events, args.last))
    for event in events:
        if args.json:
            print(json.dumps(event.to_dict(), sort_keys=True))
        else:
            print(_audit_line(event))
    return ExitCode.OK


def _readable(entries: Iterable[AuditEvent | str]) -> Iterator[AuditEvent]:
    for entry in entries:
        if isinstance(entry, str):
            print(f"warning: {entry}", file=sys.stderr)
        else:
            yield entry


def _filtered(events: Iterable[AuditEvent], args: argparse.Namespace) -> Iterator[AuditEvent]:
    for event in events:
        if args.model is not None and event.model != args.model:
            continue
        if args.event and event.event not in args.event:
            continue
        # The log's timestamps are all one fixed-width UTC format: text order is time order.
        if args.since is not None and event.time < args.since:
            continue
        yield event


def _tail(events: Iterable[AuditEvent], count: int) -> list[AuditEvent]:
    return list(collections.deque(events, maxlen=count))


def _audit_line(event: AuditEvent) -> str:
    what = " ".join(part for part in (event.model, event.version) if part) or "-"
    origin = f" (from {event.origin})" if event.origin else ""
    return f"{event.time}  {event.event:<12} {what:<24} {event.reason}{origin}"
