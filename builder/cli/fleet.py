"""``bundle fleet status`` and ``bundle rollout``: the fleet seen and steered through its MQTT
broker and the channel's signed index; the broker options ``bundle publish --notify`` shares.

paho-mqtt, the channel code and the drift pages load only when a command runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgebundle.builder.cli._common import (
    PASSPHRASE_HELP,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
    private_keys,
)

if TYPE_CHECKING:
    from edgebundle.builder.fleet.view import Baselines
    from edgebundle.runtime.fleet.address import Credentials
    from edgebundle.runtime.signing import TrustedKeys
    from edgebundle.runtime.stats import Baseline

F = TypeVar("F", bound=Callable[..., Any])
_FILE = click.Path(path_type=Path, dir_okay=False)
_DIRECTORY = click.Path(path_type=Path, file_okay=False)
_PASSWORD_ENV = "EDGEBUNDLE_FLEET_PASSWORD"  # runtime.fleet.address.PASSWORD_ENV, read lazily


def broker_options(command: F) -> F:
    """``--broker-ca``, ``--broker-cert``, ``--broker-key``, ``--broker-user``,
    ``--broker-password-file`` (never a password in argv): gathered by ``credentials``."""
    for option in reversed(
        (
            click.option("--broker-ca", type=_FILE,
                         help="CA certificates (PEM) for an mqtts:// broker."),
            click.option("--broker-cert", type=_FILE,
                         help="Client certificate for an mqtts:// broker."),
            click.option("--broker-key", type=_FILE, help="The client certificate's key."),
            click.option("--broker-user", help="Broker user name."),
            click.option("--broker-password-file", type=_FILE,
                         help=f"Broker password (else ${_PASSWORD_ENV})."),
        )
    ):  # fmt: skip
        command = option(command)
    return command


def credentials(options: dict[str, Any]) -> Credentials:
    """The ``broker_options`` values (popped from ``options``) as ``Credentials``."""
    from edgebundle.runtime.fleet.address import Credentials, read_password

    return Credentials(
        ca=options.pop("broker_ca"),
        cert=options.pop("broker_cert"),
        key=options.pop("broker_key"),
        username=options.pop("broker_user"),
        password=read_password(options.pop("broker_password_file")),
    )


def share_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``10%`` as the index's integer share (``runtime.ota.rollout.SHARE_SCALE`` is 100%)."""
    if value is None:
        return None
    from edgebundle.runtime.ota.rollout import parse_share

    try:
        return parse_share(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(
    name="fleet",
    epilog=help_epilog(
        [
            "bundle fleet status --broker mqtt://broker.local/shops",
            "bundle fleet status --broker mqtts://broker.example.com/shops --broker-ca ca.pem "
            "--channel channel/ --html fleet-drift/ --json",
        ]
    ),
)
def fleet_group() -> None:
    """The fleet seen through its MQTT broker (devices run `bundle-runtime serve --fleet`).

    Its one command, status, takes --json.
    """


@fleet_group.command(
    name="status",
    epilog=help_epilog(
        [
            "bundle fleet status --broker mqtt://broker.local/shops",
            "bundle fleet status --broker mqtts://broker.example.com/shops --broker-ca ca.pem "
            "--channel channel/ --html fleet-drift/ --json",
        ]
    ),
)
@click.option("--broker", "url", required=True, metavar="URL",
              help="The fleet's broker: mqtt[s]://HOST[:PORT][/FLEET].")
@click.option("--wait", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Most seconds to wait for what the broker holds.")
@click.option("--ledger", type=_FILE,
              help="Running telemetry totals (default: $XDG_STATE_HOME/edgebundle/"
              "fleet-FLEET.json).")
@click.option("--client-id", metavar="ID",
              help="The broker session that collects telemetry between runs (default: "
              "edgebundle-fleet-status-FLEET); one per ledger.")
@click.option("--channel", type=_DIRECTORY,
              help="The channel directory: its bundles' baselines judge the fleet's drift.")
@click.option("--trust", type=_FILE, multiple=True,
              help="Key the channel's bundles are signed by (default: the channel's newest "
              "key set).")
@click.option("--html", "html_dir", type=_DIRECTORY,
              help="Write a drift page per model version here (as `bundle drift --html`).")
@broker_options
@json_option
def status_command(
    url: str,
    wait: float,
    ledger: Path | None,
    client_id: str | None,
    channel: Path | None,
    trust: tuple[Path, ...],
    html_dir: Path | None,
    as_json: bool,
    **broker: Any,
) -> None:
    """Devices per model and version, offline devices, failed updates, traffic and drift.

    Statuses are retained by the broker; telemetry is queued by it for this command's session
    between runs and added to the ledger, so counts grow from the first run on.
    """
    from edgebundle.builder.drift.page import format_html
    from edgebundle.builder.fleet.collect import collect
    from edgebundle.builder.fleet.ledger import add_reports, read_ledger, write_ledger
    from edgebundle.builder.fleet.view import fleet_view, format_view, view_dict
    from edgebundle.runtime.fleet.address import BrokerAddress
    from edgebundle.runtime.fsio import write_durably

    with domain_errors():
        address = BrokerAddress.parse(url)
        collected = collect(
            address,
            credentials(broker),
            client_id or f"edgebundle-fleet-status-{address.fleet}",
            wait,
        )
        path = ledger or _default_ledger(address.fleet)
        totals, problems = add_reports(read_ledger(path), collected.reports)
        write_ledger(path, totals)
        view = fleet_view(address.fleet, collected.statuses, totals, _baselines(channel, trust))
        if html_dir is not None:
            for drift in view.drift:
                report = drift.report
                html_dir.mkdir(parents=True, exist_ok=True)
                page = html_dir / f"{report.model}-{report.version}.html"
                write_durably(page, format_html(drift).encode())
    for line in [*collected.refused, *problems]:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        echo_json(view_dict(view))
    else:
        click.echo(format_view(view))


def _default_ledger(fleet: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgebundle" / f"fleet-{fleet}.json"


def _baselines(channel: Path | None, trust: tuple[Path, ...]) -> Baselines:
    from edgebundle.builder.publish import channel_trust
    from edgebundle.runtime.errors import FleetError
    from edgebundle.runtime.ota.keychain import load_trust

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
    from edgebundle.runtime.bundle import open_bundle, read_bundle_file
    from edgebundle.runtime.errors import BundleError
    from edgebundle.runtime.ota.channel import bundle_file
    from edgebundle.runtime.semver import Version
    from edgebundle.runtime.stats import baseline_of

    try:
        path = channel / bundle_file(name, Version.parse(version))
    except BundleError:  # a version a device reported that is no version at all
        return None
    if not path.exists():
        return None
    return baseline_of(open_bundle(read_bundle_file(path), trusted))


@click.command(
    name="rollout",
    epilog=help_epilog(
        [
            "bundle publish bundles/credit-score-1.5.0.bundle --channel channel/ "
            "--key keys/signing.key --rollout 10% --notify mqtt://broker.local/shops",
            "bundle rollout credit-score 1.5.0 --channel channel/ --key keys/signing.key "
            "--to 50% --notify mqtt://broker.local/shops --halt-if-failures 5%",
            "bundle rollout credit-score 1.5.0 --channel channel/ --key keys/signing.key "
            '--revoke "wrong scores for new shops"',
        ]
    ),
)
@click.argument("name")
@click.argument("version")
@click.option("--channel", type=_DIRECTORY, required=True, help="Channel directory.")
@click.option("--key", "keys", type=_FILE, multiple=True, required=True,
              help="Private key that signs the channel index (repeatable).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--to", "share", metavar="P%", callback=share_option,
              help="Grow the share of devices (10%, 50%; 100% releases it to every device).")
@click.option("--halt", is_flag=True, help="No further device starts this version.")
@click.option("--revoke", metavar="REASON", help="Devices running it go back to the version "
              "they had before and never fetch it again.")
@click.option("--expires", default="30d", show_default=True, help="The index's validity.")
@click.option("--notify", metavar="URL", help="Announce the new serial on the fleet's broker.")
@click.option("--halt-if-failures", "threshold", metavar="P%", callback=share_option,
              help="Then watch the fleet's statuses and halt once more than P% of the devices "
              "that tried the version failed it (needs --notify or --broker).")
@click.option("--broker", metavar="URL", help="The broker to watch (default: --notify's).")
@click.option("--watch", "seconds", type=click.FloatRange(min=1), default=600.0,
              show_default=True, help="How long --halt-if-failures watches, in seconds.")
@broker_options
@json_option
def rollout_command(
    name: str,
    version: str,
    channel: Path,
    keys: tuple[Path, ...],
    passphrase_env: str | None,
    share: int | None,
    halt: bool,
    revoke: str | None,
    expires: str,
    notify: str | None,
    threshold: int | None,
    broker: str | None,
    seconds: float,
    as_json: bool,
    **options: Any,
) -> None:
    """Grow (--to), halt (--halt) or revoke (--revoke) the staged release NAME VERSION.

    A device takes part when a stable hash of (device id, NAME, VERSION) falls below the
    share, so growing it only adds devices. --json: {"index", "serial", "changes": [text],
    "notified": URL or null, "halted": true/false or null (not watched)}; the watch's lines go
    to stderr then.
    """
    from edgebundle.builder.fleet.broker import notify as notify_fleet
    from edgebundle.builder.fleet.collect import collect
    from edgebundle.builder.publish import parse_duration
    from edgebundle.builder.rollout import Change, change_rollout, watch
    from edgebundle.runtime.fleet.address import BrokerAddress
    from edgebundle.runtime.ota.rollout import SHARE_SCALE
    from edgebundle.runtime.semver import Version

    if sum((share is not None, halt, revoke is not None)) != 1:
        raise click.UsageError("give exactly one of --to, --halt and --revoke")
    watched = broker or notify
    if threshold is not None and watched is None:
        raise click.UsageError("--halt-if-failures needs --broker or --notify")
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    doc: dict[str, Any] = {"changes": [], "notified": None, "halted": None}
    with domain_errors():
        release = Version.parse(version)
        private = private_keys(keys, passphrase_env)
        creds = credentials(options)
        duration = parse_duration(expires)

        def apply(change: Change) -> None:
            now = datetime.now(timezone.utc)
            index, said = change_rollout(channel, private, name, release, change, duration, now)
            doc.update(index=str(channel / "index.json"), serial=index.serial)
            doc["changes"].append(said)
            say(f"{channel}/index.json: serial {index.serial}; {said}")
            if notify is not None:
                doc["notified"] = str(notify_fleet(notify, creds, index.serial))

        apply(Change(share=share, halt=halt, revoke=revoke))
        if threshold is not None and watched is not None and (share or 0) < SHARE_SCALE:
            address = BrokerAddress.parse(watched)
            doc["halted"] = watch(
                lambda: collect(address, creds, "", 2.0, keep=False).statuses,
                name,
                release,
                threshold / SHARE_SCALE,
                seconds,
                lambda: apply(Change(halt=True)),
                say,
            )
    if as_json:
        echo_json(doc)
