"""``bundle publish`` and ``bundle rotate-keys``: the OTA channel's signed index and key chain."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from edgebundle.builder.cli._common import (
    PASSPHRASE_HELP,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
    passphrase,
    private_keys,
)
from edgebundle.builder.cli.fleet import broker_options, credentials, share_option

_FILE = click.Path(path_type=Path, dir_okay=False)
_DIRECTORY = click.Path(path_type=Path, file_okay=False)


@click.command(
    name="publish",
    epilog=help_epilog(
        [
            "bundle publish bundles/credit-score-1.4.0.bundle --channel channel/ "
            "--key keys/signing.key",
            "bundle publish --refresh --channel channel/ --key keys/signing.key --expires 30d",
            "bundle publish bundles/credit-score-1.5.0.bundle --channel channel/ "
            "--key keys/signing.key --rollout 10% --notify mqtt://broker.local/shops",
        ]
    ),
)
@click.argument("bundle", required=False, type=_FILE)
@click.option("--channel", type=_DIRECTORY, required=True,
              help="Channel directory to serve with any static HTTP server.")
@click.option("--key", "keys", type=_FILE, multiple=True, required=True,
              help="Private key that signs the channel index (repeatable: a threshold of the "
              "channel's newest key set must sign).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--expires", "expires", default="30d", show_default=True,
              help="How long the signed index stays valid: 30d, 12h, 90m, 3600s.")
@click.option("--trust", type=_FILE, multiple=True,
              help="Key the bundle must be signed by (default: the channel's newest key set, "
              "or the signing keys on a channel that never rotated).")
@click.option("--refresh", is_flag=True, help="Re-sign the index with a new expiry, no bundle.")
@click.option("--rollout", "share", metavar="P%", callback=share_option,
              help="Stage it for P% of the devices (grow it with `bundle rollout`).")
@click.option("--notify", metavar="URL", help="Then announce the new serial on the fleet's "
              "MQTT broker, mqtt[s]://HOST[:PORT][/FLEET]: devices update within seconds.")
@broker_options
@json_option
def publish_command(
    bundle: Path | None,
    channel: Path,
    keys: tuple[Path, ...],
    passphrase_env: str | None,
    expires: str,
    trust: tuple[Path, ...],
    refresh: bool,
    share: int | None,
    notify: str | None,
    as_json: bool,
    **broker: Any,
) -> None:
    """Add BUNDLE to a static OTA channel and re-sign its index (serial + 1).

    Refuses to write an index the devices would refuse (not signed by a threshold of the
    channel's newest key set). --json: {"index": PATH, "serial": N, "expires": TIME,
    "bundles": [{"name", "version", "file"}, ...], "notified": URL or null}.
    """
    from edgebundle.builder.fleet.broker import notify as notify_fleet
    from edgebundle.builder.publish import parse_duration, publish
    from edgebundle.builder.publish import refresh as refresh_channel
    from edgebundle.runtime.ota.keychain import load_trust
    from edgebundle.runtime.ota.rollout import SHARE_SCALE

    if (bundle is None) != refresh:
        raise click.UsageError("give either BUNDLE or --refresh")
    if refresh and share is not None:
        raise click.UsageError("--rollout stages a BUNDLE; --refresh publishes none")
    with domain_errors():
        private = private_keys(keys, passphrase_env)
        duration = parse_duration(expires)
        now = datetime.now(timezone.utc)
        if bundle is None:
            index = refresh_channel(channel, private, duration, now)
        else:
            trusted = load_trust(trust).trusted() if trust else None
            index = publish(bundle, channel, private, duration, now, trusted, share or SHARE_SCALE)
        notified = None
        if notify is not None:
            notified = notify_fleet(notify, credentials(broker), index.serial)
    path = channel / "index.json"
    if as_json:
        entries = [
            {"name": e.name, "version": str(e.version), "file": e.file} for e in index.bundles
        ]
        echo_json(
            {"index": str(path), "serial": index.serial, "expires": index.expires,
             "bundles": entries, "notified": None if notified is None else str(notified)}
        )  # fmt: skip
    else:
        click.echo(
            f"{path}: serial {index.serial}, expires {index.expires}, "
            f"{len(index.bundles)} bundle(s)"
        )
        if notified is not None:
            click.echo(f"notified {notified}: serial {index.serial}")


@click.command(
    name="rotate-keys",
    epilog=help_epilog(
        [
            "bundle keygen --out keys-2027",
            "bundle rotate-keys --channel channel/ --key keys/signing.key "
            "--new-key keys-2027/signing.key",
            "bundle publish NEW.bundle --channel channel/ --key keys-2027/signing.key",
        ]
    ),
)
@click.option("--channel", type=_DIRECTORY, required=True, help="Channel directory.")
@click.option("--key", "keys", type=_FILE, multiple=True, required=True,
              help="A CURRENT private key (repeatable): a threshold of the key set devices "
              "trust now must sign the rotation.")
@click.option("--new-key", "new_keys", type=_FILE, multiple=True, required=True,
              help="A key of the NEXT set (repeatable): a private key signs too (a threshold "
              "of the new set must), a public key (.pub) is only listed.")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many keys of the new set must sign an index, bundle or the next rotation.")
@click.option("--expires", "expires", default="365d", show_default=True,
              help="How long the new key statement stays valid; rotate again (even to the same "
              "keys) before then.")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP + " For --key.")
@click.option("--new-passphrase-env", metavar="VAR", help=PASSPHRASE_HELP + " For --new-key.")
@json_option
def rotate_keys_command(
    channel: Path,
    keys: tuple[Path, ...],
    new_keys: tuple[Path, ...],
    threshold: int,
    expires: str,
    passphrase_env: str | None,
    new_passphrase_env: str | None,
    as_json: bool,
) -> None:
    """Publish the channel's next key statement, keys/N.json.

    Devices follow the chain keys/1.json, keys/2.json, ... from the version they trust, so
    a device offline across several rotations catches up in one pass. The listed bundles are
    re-signed by the new keys and the index by the old and the new ones; afterwards publish
    with the new keys. Refuses to write a statement devices would refuse. --json:
    {"statement": PATH, "version": N, "threshold": K, "expires": TIME, "keyids": [HEX, ...]}.
    """
    from edgebundle.builder.keys import load_any_key
    from edgebundle.builder.publish import parse_duration, rotate_keys

    with domain_errors():
        duration = parse_duration(expires)
        new_passphrase = passphrase(new_passphrase_env)
        key_set = rotate_keys(
            channel,
            private_keys(keys, passphrase_env),
            [load_any_key(path, new_passphrase) for path in new_keys],
            threshold,
            duration,
            datetime.now(timezone.utc),
        )
    path = channel / "keys" / f"{key_set.version}.json"
    if as_json:
        echo_json(
            {"statement": str(path), "version": key_set.version, "threshold": key_set.threshold,
             "expires": key_set.expires, "keyids": key_set.keyids()}
        )  # fmt: skip
    else:
        click.echo(f"{path}: {key_set.describe()}: " + ", ".join(key_set.keyids()))
