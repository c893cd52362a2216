"""``bundle keygen``."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import (
    PASSPHRASE_HELP,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
    passphrase,
)


@click.command(
    epilog=help_epilog(
        [
            "bundle keygen --out keys",
            "SECRET=... bundle keygen --out keys --passphrase-env SECRET   # encrypted key",
        ]
    )
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for signing.key (0600) and signing.pub.",
)
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP + " Encrypts the key.")
@json_option
def keygen(out_dir: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Create an Ed25519 signing key pair; never overwrites an existing key.

    --json: {"private_key": PATH, "public_key": PATH, "keyid": HEX}.
    """
    from edgebundle.builder.keys import generate_keypair
    from edgebundle.runtime.signing import keyid, load_public_key

    with domain_errors():
        private, public = generate_keypair(out_dir, passphrase(passphrase_env))
        key_id = keyid(load_public_key(public))
    if as_json:
        echo_json({"private_key": str(private), "public_key": str(public), "keyid": key_id})
    else:
        click.echo(f"wrote {private} (keep it secret) and {public} (copy it to devices)")
        click.echo(f"key id {key_id}")
