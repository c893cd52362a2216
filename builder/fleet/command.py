"""``bundle fleet status``: the click group, registered on ``bundle`` by
``main.add_command(fleet_group)``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from edgebundle.builder.drift.page import format_html
from edgebundle.builder.fleet.broker import broker_options, credentials
from edgebundle.builder.fleet.collect import collect
from edgebundle.builder.fleet.ledger import add_reports, read_ledger, write_ledger
from edgebundle.builder.fleet.view import Baselines, fleet_view, format_view, view_dict
from edgebundle.builder.publish import channel_trust
from edgebundle.runtime.bundle import open_bundle, read_bundle_file
from edgebundle.runtime.errors import BundleError, FleetError
from edgebundle.runtime.fleet.address import BrokerAddress
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.ota.channel import bundle_file
from edgebundle.runtime.ota.keychain import load_trust
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys
from edgebundle.runtime.stats import Baseline, baseline_of


def default_ledger(fleet: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgebundle" / f"fleet-{fleet}.json"


@click.group(name="fleet")
def fleet_group() -> None:
    """The fleet seen through its MQTT broker (devices run `bundle-runtime serve --fleet`)."""


@fleet_group.command(name="status")
@click.option(
    "--broker",
    "url",
    required=True,
    metavar="URL",
    help="The fleet's broker: mqtt[s]://HOST[:PORT][/FLEET].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the view as JSON.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Most seconds to wait for what the broker holds.",
)
@click.option(
    "--ledger",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Running telemetry totals (default: $XDG_STATE_HOME/edgebundle/fleet-FLEET.json).",
)
@click.option(
    "--client-id",
    metavar="ID",
    help="The broker session that collects telemetry "
    "between runs (default: edgebundle-fleet-status-FLEET); one per ledger.",
)
@click.option(
    "--channel",
    type=click.Path(path_type=Path, file_okay=False),
    help="The channel directory: its bundles' baselines judge the fleet's drift.",
)
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Key the channel's bundles are signed by (default: the channel's newest key set).",
)
@click.option(
    "--html",
    "html_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write a drift page per model version here (as `bundle drift --html`).",
)
@broker_options
def status_command(
    url: str,
    as_json: bool,
    wait: float,
    ledger: Path | None,
    client_id: str | None,
    channel: Path | None,
    trust: tuple[Path, ...],
    html_dir: Path | None,
    **broker: Any,
) -> None:
    """Devices per model and version, offline devices, failed updates, traffic and drift.

    Statuses are retained by the broker; telemetry is queued by it for this command's session
    between runs and added to the ledger, so counts grow from the first run on.
    """
    try:
        address = BrokerAddress.parse(url)
        collected = collect(
            address,
            credentials(broker),
            client_id or f"edgebundle-fleet-status-{address.fleet}",
            wait,
        )
        path = ledger or default_ledger(address.fleet)
        totals, problems = add_reports(read_ledger(path), collected.reports)
        write_ledger(path, totals)
        view = fleet_view(address.fleet, collected.statuses, totals, _baselines(channel, trust))
        if html_dir is not None:
            for drift in view.drift:
                report = drift.report
                page = html_dir / f"{report.model}-{report.version}.html"
                html_dir.mkdir(parents=True, exist_ok=True)
                write_durably(page, format_html(drift).encode())
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    for line in [*collected.refused, *problems]:
        click.echo(f"warning: {line}", err=True)
    click.echo(json.dumps(view_dict(view), indent=2) if as_json else format_view(view))


def _baselines(channel: Path | None, trust: tuple[Path, ...]) -> Baselines:
    if channel is None:
        return lambda name, version: None
    if trust:
        trusted = load_trust(trust).trusted()
    else:
        chain = channel_trust(channel)
        if chain is None:
            raise FleetError("--channel needs --trust KEY on a channel that never rotated keys")
        trusted = chain.trusted()
    cache: dict[tuple[str, str], Baseline | None] = {}

    def baseline(name: str, version: str) -> Baseline | None:
        if (name, version) not in cache:
            cache[name, version] = _read_baseline(channel, trusted, name, version)
        return cache[name, version]

    return baseline


def _read_baseline(channel: Path, trusted: TrustedKeys, name: str, version: str) -> Baseline | None:
    try:
        path = channel / bundle_file(name, Version.parse(version))
    except BundleError:  # a version a device reported that is no version at all
        return None
    if not path.exists():
        return None
    return baseline_of(open_bundle(read_bundle_file(path), trusted))
