"""``bundle rollout NAME VERSION``: the click command, registered on ``bundle`` by
``main.add_command(rollout_command)``; the work is ``builder.rollout``'s."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from edgebundle.builder.fleet.broker import broker_options, credentials
from edgebundle.builder.fleet.broker import notify as notify_fleet
from edgebundle.builder.fleet.collect import collect
from edgebundle.builder.publish import parse_duration
from edgebundle.builder.rollout import Change, change_rollout, watch
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.fleet.address import BrokerAddress
from edgebundle.runtime.ota.rollout import SHARE_SCALE, parse_share
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key


def share_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_share(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(name="rollout")
@click.argument("name")
@click.argument("version")
@click.option("--channel", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Channel directory.")
@click.option("--key", "keys", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              required=True, help="Private key that signs the channel index (repeatable).")
@click.option("--passphrase-env", metavar="VAR",
              help="Name of an environment variable holding the key's passphrase.")
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
    **options: Any,
) -> None:
    """Grow (--to), halt (--halt) or revoke (--revoke) the staged release NAME VERSION.

    A device takes part when a stable hash of (device id, NAME, VERSION) falls below the
    share, so growing it only adds devices.
    """
    if sum((share is not None, halt, revoke is not None)) != 1:
        raise click.UsageError("give exactly one of --to, --halt and --revoke")
    watched = broker or notify
    if threshold is not None and watched is None:
        raise click.UsageError("--halt-if-failures needs --broker or --notify")
    try:
        release = Version.parse(version)
        passphrase = _passphrase(passphrase_env)
        private = tuple(load_private_key(path, passphrase) for path in keys)
        creds = credentials(options)
        duration = parse_duration(expires)

        def apply(change: Change) -> None:
            now = datetime.now(timezone.utc)
            index, said = change_rollout(channel, private, name, release, change, duration, now)
            click.echo(f"{channel}/index.json: serial {index.serial}; {said}")
            if notify is not None:
                notify_fleet(notify, creds, index.serial)

        apply(Change(share=share, halt=halt, revoke=revoke))
        if threshold is not None and watched is not None and (share or 0) < SHARE_SCALE:
            address = BrokerAddress.parse(watched)
            watch(
                lambda: collect(address, creds, "", 2.0, keep=False).statuses,
                name,
                release,
                threshold / SHARE_SCALE,
                seconds,
                lambda: apply(Change(halt=True)),
                click.echo,
            )
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None


def _passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise click.ClickException(f"environment variable {env_name} is not set or empty")
    return value.encode()
