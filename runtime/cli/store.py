"""The store commands: ``init``, ``install``, ``status`` and ``rollback``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgebundle.runtime.bundle import read_bundle_file
from edgebundle.runtime.cli.exits import STORED_BUNDLE, ExitCode, blame
from edgebundle.runtime.cli.options import LIMITS, add_store_option
from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.monitor.report import DriftReport
from edgebundle.runtime.monitor.saved import load_report
from edgebundle.runtime.monitor.statistics import verdict
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store import InstalledVersion, ModelState, Store


def add_init(init: argparse.ArgumentParser) -> None:
    init.description = "Create a model store in a new or empty directory, trusting the given keys."
    add_store_option(init)
    init.add_argument(
        "--trust",
        required=True,
        action="append",
        type=Path,
        metavar="FILE",
        help="a trusted Ed25519 public key (PEM; repeat for several, any one signs), or one "
        "key statement from the channel (keys/N.json: its keys and threshold)",
    )
    init.set_defaults(run=_init)


def add_install(install: argparse.ArgumentParser) -> None:
    install.description = (
        "Verify BUNDLE with the store's keys, refuse older or already-seen versions "
        "(anti-rollback), run its selftest in the real scorer, then make it the active version "
        "of its model; the version it replaces stays as the rollback target."
    )
    install.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .bundle file")
    add_store_option(install)
    install.set_defaults(run=_install)


def add_status(status: argparse.ArgumentParser) -> None:
    status.description = "Show each model's versions."
    add_store_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)


def add_rollback(rollback: argparse.ArgumentParser) -> None:
    rollback.description = (
        "Make the previous version active; the active one becomes previous, so a second "
        "rollback undoes the first."
    )
    add_store_option(rollback)
    rollback.add_argument("--model", required=True, metavar="NAME", help="the model to roll back")
    rollback.set_defaults(run=_rollback)


COMMANDS = {
    "init": add_init,
    "install": add_install,
    "status": add_status,
    "rollback": add_rollback,
}


def _init(args: argparse.Namespace) -> int:
    store = Store.init(args.store, args.trust, limits=LIMITS)
    trust = store.trust()
    print(f"initialized store {store.root}, trusting {trust.describe()}")
    for key_id in trust.keyids():
        print(f"trusted key {key_id}")
    return ExitCode.OK


def _install(args: argparse.Namespace) -> int:
    store = Store.open(args.store, limits=LIMITS)
    data = read_bundle_file(args.bundle, LIMITS)
    with blame(STORED_BUNDLE):
        result = store.install(data, origin=str(args.bundle.absolute()))
    if result.already_installed:
        print(f"{result.name} {result.version} is already installed and active; nothing changed")
    else:
        print(
            f"installed {result.name} {result.version} (previous: {result.previous or 'none'})"
            f" — selftest passed ({result.selftest.rows} rows)"
        )
    return ExitCode.OK


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
    recent = f"last {report.recent.rows} rows"
    since = f"{report.since_start.rows} rows since {report.started}"
    return [
        f"  {'drift:':<10}reported {report.generated}",
        f"    {recent + ':':<24}{verdict(report.recent, report.baseline)}",
        f"    {since + ':':<24}{verdict(report.since_start, report.baseline)}",
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
        return "none"
    outcome = "passed" if record.selftest.passed else "FAILED"
    return (
        f"{version} ({record.precision}, installed {record.installed_at}, "
        f"selftest {outcome}: {record.selftest.detail})"
    )


def _rollback(args: argparse.Namespace) -> int:
    with blame(STORED_BUNDLE):
        result = Store.open(args.store, limits=LIMITS).rollback(args.model)
    print(
        f"rolled back {result.name} to {result.active} (previous: {result.previous};"
        " roll back again to undo)"
    )
    return ExitCode.OK
