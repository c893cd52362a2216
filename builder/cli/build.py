"""``bundle build`` and ``bundle make-broken``: the commands that convert or re-sign a model.
xgboost and onnx load only when they run."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import (
    PASSPHRASE_HELP,
    ExitCode,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
    passphrase,
    private_keys,
    version,
)
from edgebundle.runtime.semver import Version


@click.command(
    name="build",
    epilog=help_epilog(
        [
            "bundle build model.json --name credit-score --version 1.4.0 --key keys/signing.key",
            "bundle build model.json --name credit-score --version 1.4.0 --key keys/signing.key"
            " --data holdout.csv --precision float --json",
            "bundle build model.json --name credit-score --version 1.4.0 --key keys/signing.key"
            " --optimize size",
        ],
        ExitCode.BUDGET_MISSED,
    ),
)
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", required=True, help="Model name, e.g. credit-score.")
@click.option(
    "--version",
    "version",
    required=True,
    callback=version,
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
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
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
    type=click.Choice(["auto", "int8", "float"]),
    default="auto",
    show_default=True,
    help="int8: binned thresholds + int8 leaves (int16 if needed); float: the lossless "
    "tree op; auto: builds both and ships the better one for --optimize.",
)
@click.option(
    "--optimize",
    type=click.Choice(["latency", "size", "memory"]),
    default="latency",
    show_default=True,
    help="What --precision auto chooses for: one-row latency measured in this build "
    "(int8 unless float is >5% faster), the smaller model, or the model that adds less "
    "resident memory.",
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
@json_option
def build_command(
    model: Path,
    name: str,
    version: Version,
    keys: tuple[Path, ...],
    passphrase_env: str | None,
    out_dir: Path,
    data: Path | None,
    precision: str,
    optimize: str,
    max_error: float | None,
    min_agreement: float | None,
    all_trees: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Convert MODEL, prove parity with XGBoost, and write a signed NAME-VERSION.bundle.

    On a terminal, each stage is shown on stderr with its time. --json prints the report
    (README, "Command line"); a missed budget prints {"error", "candidates"} and exits 3.
    """
    from edgebundle.builder.build import BudgetMissedError, BuildOptions, build
    from edgebundle.builder.progress import Progress
    from edgebundle.builder.report import (
        candidate_dict,
        format_candidates,
        format_report,
        report_dict,
    )

    with domain_errors():
        options = BuildOptions(
            model=model,
            name=name,
            version=version,
            keys=private_keys(keys, passphrase_env),
            out_dir=out_dir,
            data=data,
            precision=precision,
            optimize=optimize,
            max_error=max_error,
            min_label_agreement=min_agreement,
            use_best_iteration=not all_trees,
            force=force,
        )
        try:
            result = build(options, Progress.to_stderr())
        except BudgetMissedError as exc:
            if as_json:
                candidates = [candidate_dict(c, False) for c in exc.candidates]
                echo_json({"error": str(exc), "candidates": candidates})
            else:
                click.echo(format_candidates(exc.candidates, None), err=True)
            raise
    if as_json:
        echo_json(report_dict(result))
    else:
        click.echo(format_report(result))


@click.command(
    name="make-broken",
    epilog=help_epilog(
        ["bundle make-broken bundles/m-1.0.0.bundle --version 1.0.1 --key keys/signing.key"]
    ),
)
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--version", "version", required=True, callback=version,
              help="Version of the broken copy (publish it above the current one).")
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Private signing key.")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("bundles"), show_default=True, help="Output directory.")
@json_option
def make_broken_command(
    bundle: Path,
    version: Version,
    key: Path,
    passphrase_env: str | None,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Fire drill: a validly signed copy of BUNDLE whose selftest fails on every device.

    --json: {"bundle": PATH, "name": NAME, "version": VERSION}.
    """
    from edgebundle.builder.drill import make_broken
    from edgebundle.builder.files import write_atomic
    from edgebundle.builder.inspect import inspect_bundle
    from edgebundle.runtime.bundle import Limits, read_bundle_file
    from edgebundle.runtime.signing import load_private_key

    with domain_errors():
        data = read_bundle_file(bundle, Limits())
        name = inspect_bundle(data)["manifest"]["name"]
        broken = make_broken(data, version, load_private_key(key, passphrase(passphrase_env)))
        path = out_dir / f"{name}-{version}.bundle"
        write_atomic(path, broken, force=False)
    if as_json:
        echo_json({"bundle": str(path), "name": name, "version": str(version)})
    else:
        click.echo(f"wrote {path}: signed, but its selftest fails; devices must refuse it")
