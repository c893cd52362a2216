"""``bundle inspect``, ``verify`` and ``compare``: commands that read bundles."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import (
    TRUST_HELP,
    ExitCode,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
)

_TRUST = click.Path(path_type=Path, dir_okay=False)


@click.command(
    name="inspect",
    epilog=help_epilog(
        [
            "bundle inspect bundles/credit-score-1.4.0.bundle",
            "bundle inspect bundles/credit-score-1.4.0.bundle --trust keys/signing.pub --json",
        ]
    ),
)
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--trust", type=_TRUST, multiple=True, help=TRUST_HELP + " Verifies first.")
@json_option
def inspect_command(bundle: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Summarize a bundle: model, parity, precision, files and who signed it.

    Without --trust nothing is verified (the summary says so); with --trust the bundle is
    verified as a device would, and every problem is listed (exit 1) before anything is shown.
    --json: {"verified", "manifest", "members", "signatures"}.
    """
    from edgebundle.builder.inspect import format_inspect, inspect_bundle
    from edgebundle.runtime.bundle import Limits, check_bundle, read_bundle_file

    with domain_errors():
        data = read_bundle_file(bundle, Limits())
        verified_by = None
        if trust:
            from edgebundle.runtime.ota.keychain import load_trust

            trusted = load_trust(trust).trusted()
            _exit_on_problems(check_bundle(data, trusted, Limits()))
        doc = inspect_bundle(data)
        if trust:
            doc["verified"] = True
            verified_by = doc["signatures"]
    if as_json:
        echo_json(doc)
    else:
        click.echo(format_inspect(doc, verified_by))


def _exit_on_problems(problems: list[str]) -> None:
    if problems:
        for problem in problems:
            click.echo(f"✗ {problem}", err=True)
        raise SystemExit(ExitCode.ERROR)


@click.command(
    name="verify",
    epilog=help_epilog(
        ["bundle verify bundles/credit-score-1.4.0.bundle --trust keys/signing.pub"]
    ),
)
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--trust", type=_TRUST, multiple=True, required=True, help=TRUST_HELP)
@json_option
def verify_command(bundle: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Check BUNDLE as a device would; exit 1 listing every problem found.

    --json: {"bundle": PATH, "valid": BOOL, "problems": [TEXT, ...]} (exit 1 when invalid).
    """
    from edgebundle.runtime.bundle import Limits, check_bundle, read_bundle_file
    from edgebundle.runtime.ota.keychain import load_trust

    with domain_errors():
        trusted = load_trust(trust).trusted()
        problems = check_bundle(read_bundle_file(bundle, Limits()), trusted, Limits())
    if as_json:
        echo_json({"bundle": str(bundle), "valid": not problems, "problems": problems})
        if problems:
            raise SystemExit(ExitCode.ERROR)
        return
    _exit_on_problems(problems)
    click.echo(f"✓ {bundle}: valid, signed by a trusted key")


@click.command(
    name="compare",
    epilog=help_epilog(
        [
            "bundle compare bundles/m-1.0.0.bundle bundles/m-1.1.0.bundle --data holdout.csv "
            "--labels default --trust keys/signing.pub"
        ]
    ),
)
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
    "--trust", type=_TRUST, multiple=True, required=True, help=TRUST_HELP + " Both must verify."
)
@json_option
def compare_command(
    old: Path,
    new: Path,
    data: Path,
    label_column: str | None,
    trust: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Score OLD and NEW on the same rows through the device's scorer; report what changed."""
    from edgebundle.builder.compare.bundles import compare_bundles
    from edgebundle.builder.compare.text import format_comparison
    from edgebundle.runtime.ota.keychain import load_trust

    with domain_errors():
        result = compare_bundles(old, new, data, load_trust(trust).trusted(), label_column)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_comparison(result))
