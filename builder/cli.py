"""``bundle``: the workstation CLI. Domain errors become one-line ClickExceptions here only, with
the exit code ``EXIT_CODES`` gives their class."""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.build import BudgetMissedError, BuildOptions, build, write_atomic
from edgebundle.builder.compare.bundles import compare_bundles
from edgebundle.builder.compare.text import format_comparison
from edgebundle.builder.drift.analysis import WINDOWS, analyse, read_report
from edgebundle.builder.drift.page import format_html
from edgebundle.builder.drift.summary import summary_dict
from edgebundle.builder.drift.text import format_text
from edgebundle.builder.drill import make_broken
from edgebundle.builder.errors import ParityError
from edgebundle.builder.fleet.broker import broker_options, credentials
from edgebundle.builder.fleet.broker import notify as notify_fleet
from edgebundle.builder.fleet.command import fleet_group
from edgebundle.builder.fleet.rollout_command import rollout_command, share_option
from edgebundle.builder.inspect import inspect_bundle
from edgebundle.builder.keys import generate_keypair, load_any_key
from edgebundle.builder.kit.command import device_kit_command
from edgebundle.builder.publish import parse_duration, publish, rotate_keys
from edgebundle.builder.publish import refresh as refresh_channel
from edgebundle.builder.report import candidate_dict, format_candidates, format_report, report_dict
from edgebundle.runtime.bundle import Limits, check_bundle, read_bundle_file
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.ota.keychain import load_trust
from edgebundle.runtime.ota.rollout import SHARE_SCALE as SCALE
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key


@enum.unique
class ExitCode(enum.IntEnum):
    """``bundle``'s exit codes. 2 means usage to both tools, and 3 refuses the model here as it
    refuses a bundle to ``bundle-runtime``; 1 is this tool's error, not a scored row's."""

    ERROR = 1  # a bad model, key or data; `verify`: every problem listed
    USAGE = 2  # bad arguments: click's own code
    BUDGET_MISSED = 3  # build: the converted model misses its error budget; nothing signed


# Each domain error class's code; the nearest class with an entry decides.
EXIT_CODES: Mapping[type[BundleError], ExitCode] = MappingProxyType(
    {BundleError: ExitCode.ERROR, ParityError: ExitCode.BUDGET_MISSED}
)

_PASSPHRASE_HELP = "Name of an environment variable holding the key's passphrase."
_TRUST_HELP = (
    "Trusted public key (repeatable), or one key statement of a channel (keys/N.json: its "
    "keys and threshold)."
)


@contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except BundleError as exc:
        error = click.ClickException(str(exc))
        # click types exit_code a ClassVar, yet reads it from the exception it caught.
        error.exit_code = _exit_code(exc)  # type: ignore[misc]
        raise error from None


def _exit_code(error: BundleError) -> ExitCode:
    """The code of the nearest class in ``EXIT_CODES``: BudgetMissedError is a ParityError."""
    return next(EXIT_CODES[cls] for cls in type(error).__mro__ if cls in EXIT_CODES)


def _passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise click.ClickException(f"environment variable {env_name} is not set or empty")
    return value.encode()


def _private_keys(
    paths: tuple[Path, ...], passphrase_env: str | None
) -> tuple[Ed25519PrivateKey, ...]:
    passphrase = _passphrase(passphrase_env)
    return tuple(load_private_key(path, passphrase) for path in paths)


def _version(_ctx: click.Context, _param: click.Parameter, value: str) -> Version:
    try:
        return Version.parse(value)
    except BundleError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
@click.version_option(package_name="edgebundle")
def main() -> None:
    """Convert XGBoost models into signed, int8-quantized ONNX bundles for devices."""


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for signing.key (0600) and signing.pub.",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP + " Encrypts the key.")
def keygen(out_dir: Path, passphrase_env: str | None) -> None:
    """Create an Ed25519 signing key pair; never overwrites an existing key."""
    with _domain_errors():
        private, public = generate_keypair(out_dir, _passphrase(passphrase_env))
    click.echo(f"wrote {private} (keep it secret) and {public} (copy it to devices)")


@main.command(name="build")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", required=True, help="Model name, e.g. credit-score.")
@click.option(
    "--version",
    "version",
    required=True,
    callback=_version,
    help="Semantic version MAJOR.MINOR.PATCH of this bundle.",
)
@click.option(
    "--key",
    "keys",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    required=True,
    help="Private signing key (from `bundle keygen`); repeat to sign with several "
    "(a channel whose key set needs k of n signatures).",
)
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("bundles"),
    show_default=True,
    help="Output directory.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV (with a header of feature names) or .npy rows added to the parity check.",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "float"]),
    default="int8",
    show_default=True,
    help="int8: binned thresholds + int8 leaves (int16 if needed).",
)
@click.option(
    "--max-error",
    type=click.FloatRange(min=0),
    default=None,
    help="Error budget: max |error| in probability (classifiers) or as a fraction of "
    "the prediction range (regressors). Default 0.01 / 0.005.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=None,
    help="Minimum share of identical labels for classifiers. Default 0.995.",
)
@click.option(
    "--all-trees",
    is_flag=True,
    help="Use every tree even if the model has a best_iteration from early stopping.",
)
@click.option("--force", is_flag=True, help="Replace an existing bundle of the same version.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def build_command(
    model: Path,
    name: str,
    version: Version,
    keys: tuple[Path, ...],
    passphrase_env: str | None,
    out_dir: Path,
    data: Path | None,
    precision: str,
    max_error: float | None,
    min_agreement: float | None,
    all_trees: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Convert MODEL, prove parity with XGBoost, and write a signed NAME-VERSION.bundle."""
    with _domain_errors():
        options = BuildOptions(
            model=model,
            name=name,
            version=version,
            keys=_private_keys(keys, passphrase_env),
            out_dir=out_dir,
            data=data,
            precision=precision,
            max_error=max_error,
            min_label_agreement=min_agreement,
            use_best_iteration=not all_trees,
            force=force,
        )
        try:
            result = build(options)
        except BudgetMissedError as exc:
            _show_missed(exc, as_json)
            raise
    click.echo(json.dumps(report_dict(result), indent=2) if as_json else format_report(result))


def _show_missed(exc: BudgetMissedError, as_json: bool) -> None:
    if as_json:
        doc = {"error": str(exc), "candidates": [candidate_dict(c, False) for c in exc.candidates]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_candidates(exc.candidates, None), err=True)


@main.command(name="inspect")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect_command(bundle: Path, as_json: bool) -> None:
    """Show a bundle's manifest, files, signature key ids and report (does not verify)."""
    with _domain_errors():
        doc = inspect_bundle(read_bundle_file(bundle, Limits()))
    click.echo(json.dumps(doc, indent=2) if as_json else _format_inspect(doc))


def _format_inspect(doc: dict[str, Any]) -> str:
    m = doc["manifest"]
    lines = [
        f"{m['name']} {m['version']} ({m['precision']}, {m['task']}, created {m['created']})",
        f"source: {m['source']['objective']}, {m['source']['num_trees']} trees, "
        f"sha256 {m['source']['sha256'][:16]}…",
        "signed by: " + (", ".join(doc["signatures"]) or "nobody") + " (not verified here;"
        " use `bundle verify`)",
        "files:",
        *(
            f"  {n:<16}{f['size']:>12,} bytes  sha256 {f['sha256'][:16]}…"
            for n, f in m["files"].items()
        ),
        "inputs: " + ", ".join(f["name"] for f in m["inputs"]["features"]),
        "outputs: " + ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in m["outputs"]),
        "parity: " + json.dumps(m["parity"]),
        "quantization: " + json.dumps(m["quantization"]),
        "requires: " + json.dumps(m["requirements"]),
    ]
    return "\n".join(lines)


@main.command(name="verify")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    required=True,
    help=_TRUST_HELP,
)
def verify_command(bundle: Path, trust: tuple[Path, ...]) -> None:
    """Check BUNDLE as a device would; exit 1 listing every problem found."""
    with _domain_errors():
        trusted = load_trust(trust).trusted()
        problems = check_bundle(read_bundle_file(bundle, Limits()), trusted, Limits())
    if problems:
        for problem in problems:
            click.echo(f"✗ {problem}", err=True)
        sys.exit(ExitCode.ERROR)
    click.echo(f"✓ {bundle}: valid, signed by a trusted key")


@main.command(name="compare")
@click.argument("old", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("new", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="CSV (header of feature names, extra columns ignored) or .npy rows to score with both.",
)
@click.option(
    "--labels",
    "label_column",
    metavar="COL",
    help="CSV column of true values: adds AUC, log-loss, accuracy (classifiers) or RMSE, MAE.",
)
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    required=True,
    help=_TRUST_HELP + " Both bundles must verify.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compare_command(
    old: Path,
    new: Path,
    data: Path,
    label_column: str | None,
    trust: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Score OLD and NEW on the same rows through the device's scorer; report what changed."""
    with _domain_errors():
        result = compare_bundles(old, new, data, load_trust(trust).trusted(), label_column)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_comparison(result))


@main.command(name="drift")
@click.argument("stats", type=click.Path(path_type=Path))
@click.option(
    "--window",
    type=click.Choice(WINDOWS),
    default=None,
    help="Window to show. Default: recent if it has rows, else since_start.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML page with a chart per feature.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def drift_command(stats: Path, window: str | None, html_path: Path | None, as_json: bool) -> None:
    """Show the drift in STATS, a device's answer to GET /v2/models/NAME/stats."""
    try:
        data = stats.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {stats}: {exc.strerror}") from None
    with _domain_errors():
        drift = analyse(read_report(data, str(stats)), window)
        if html_path is not None:
            write_durably(html_path, format_html(drift).encode())
    click.echo(json.dumps(summary_dict(drift), indent=2) if as_json else format_text(drift))
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)


@main.command(name="publish")
@click.argument("bundle", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--channel", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Channel directory to serve with any static HTTP server.")
@click.option("--key", "keys", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              required=True, help="Private key that signs the channel index (repeatable: a "
              "threshold of the channel's newest key set must sign).")
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option("--expires", "expires", default="30d", show_default=True,
              help="How long the signed index stays valid: 30d, 12h, 90m, 3600s.")
@click.option("--trust", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              help="Key the bundle must be signed by (default: the channel's newest key set, "
              "or the signing keys on a channel that never rotated).")
@click.option("--refresh", is_flag=True, help="Re-sign the index with a new expiry, no bundle.")
@click.option("--rollout", "share", metavar="P%", callback=share_option, help="Stage it for P% of "
              "the devices (grow it with `bundle rollout`).")
@click.option("--notify", metavar="URL", help="Then announce the new serial on the fleet's "
              "MQTT broker, mqtt[s]://HOST[:PORT][/FLEET]: devices update within seconds.")
@broker_options
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
    **broker: Any,
) -> None:
    """Add BUNDLE to a static OTA channel and re-sign its index (serial + 1).

    Refuses to write an index the devices would refuse (not signed by a threshold of the
    channel's newest key set).
    """
    if (bundle is None) != refresh:
        raise click.UsageError("give either BUNDLE or --refresh")
    with _domain_errors():
        private = _private_keys(keys, passphrase_env)
        duration = parse_duration(expires)
        now = datetime.now(timezone.utc)
        if bundle is None:
            index = refresh_channel(channel, private, duration, now)
        else:
            trusted = load_trust(trust).trusted() if trust else None
            index = publish(bundle, channel, private, duration, now, trusted, share or SCALE)
    click.echo(
        f"{channel}/index.json: serial {index.serial}, expires {index.expires}, "
        f"{len(index.bundles)} bundle(s)"
    )
    if notify is not None:
        with _domain_errors():
            address = notify_fleet(notify, credentials(broker), index.serial)
        click.echo(f"notified {address}: serial {index.serial}")


@main.command(name="rotate-keys")
@click.option("--channel", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Channel directory.")
@click.option("--key", "keys", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              required=True, help="A CURRENT private key (repeatable): a threshold of the key "
              "set devices trust now must sign the rotation.")
@click.option("--new-key", "new_keys", type=click.Path(path_type=Path, dir_okay=False),
              multiple=True, required=True, help="A key of the NEXT set (repeatable): a "
              "private key signs too (a threshold of the new set must), a public key (.pub) is "
              "only listed.")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many keys of the new set must sign an index, bundle or the next rotation.")
@click.option("--expires", "expires", default="365d", show_default=True,
              help="How long the new key statement stays valid; rotate again (even to the same "
              "keys) before then.")
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP + " For --key.")
@click.option("--new-passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP + " For --new-key.")
def rotate_keys_command(
    channel: Path,
    keys: tuple[Path, ...],
    new_keys: tuple[Path, ...],
    threshold: int,
    expires: str,
    passphrase_env: str | None,
    new_passphrase_env: str | None,
) -> None:
    """Publish the channel's next key statement, keys/N.json.

    Devices follow the chain keys/1.json, keys/2.json, ... from the version they trust, so
    a device offline across several rotations catches up in one pass. The listed bundles are
    re-signed by the new keys and the index by the old and the new ones; afterwards publish
    with the new keys. Refuses to write a statement devices would refuse.

    \b
    Example:
      bundle keygen --out keys-2026
      bundle rotate-keys --channel channel/ --key keys/signing.key \\
          --new-key keys-2026/signing.key
      bundle publish NEW.bundle --channel channel/ --key keys-2026/signing.key
    """
    with _domain_errors():
        duration = parse_duration(expires)
        new_passphrase = _passphrase(new_passphrase_env)
        key_set = rotate_keys(
            channel,
            _private_keys(keys, passphrase_env),
            [load_any_key(path, new_passphrase) for path in new_keys],
            threshold,
            duration,
            datetime.now(timezone.utc),
        )
    click.echo(
        f"{channel}/keys/{key_set.version}.json: {key_set.describe()}: "
        + ", ".join(key_set.keyids())
    )


@main.command(name="make-broken")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--version", "version", required=True, callback=_version,
              help="Version of the broken copy (publish it above the current one).")
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Private signing key.")
@click.option("--passphrase-env", metavar="VAR", help=_PASSPHRASE_HELP)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("bundles"), show_default=True, help="Output directory.")
def make_broken_command(
    bundle: Path, version: Version, key: Path, passphrase_env: str | None, out_dir: Path
) -> None:
    """Fire drill: a validly signed copy of BUNDLE whose selftest fails on every device."""
    with _domain_errors():
        data = read_bundle_file(bundle, Limits())
        name = inspect_bundle(data)["manifest"]["name"]
        broken = make_broken(data, version, load_private_key(key, _passphrase(passphrase_env)))
        path = out_dir / f"{name}-{version}.bundle"
        write_atomic(path, broken, force=False)
    click.echo(f"wrote {path}: signed, but its selftest fails; devices must refuse it")


main.add_command(device_kit_command)
main.add_command(fleet_group)
main.add_command(rollout_command)
