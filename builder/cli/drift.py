"""``bundle drift``: a device's drift report read on the workstation."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import (
    ExitCode,
    domain_errors,
    echo_json,
    help_epilog,
    json_option,
)
from edgebundle.builder.drift import WINDOWS


@click.command(
    name="drift",
    epilog=help_epilog(
        [
            "curl -s device:8080/v2/models/credit-score/stats > stats.json",
            "bundle drift stats.json --html drift.html",
            "bundle drift stats.json --fail-on shift --json   # in cron or CI",
        ],
        ExitCode.DRIFT_SHIFT,
    ),
)
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
@click.option(
    "--fail-on",
    type=click.Choice(["shift"]),
    default=None,
    help=f"Exit {ExitCode.DRIFT_SHIFT.value} when a feature shifted, naming them on stderr.",
)
@json_option
def drift_command(
    stats: Path, window: str | None, html_path: Path | None, fail_on: str | None, as_json: bool
) -> None:
    """Show the drift in STATS, a device's answer to GET /v2/models/NAME/stats (or
    `bundle-runtime score --drift-report`'s file).

    Each feature gets a verdict: shift (PSI above 0.2 and a chi-square test says it is not
    noise), ok, or too_few_rows (fewer rows than the report's minimum, 200 by default).
    """
    from edgebundle.builder.drift.analysis import analyse, read_report
    from edgebundle.builder.drift.page import format_html
    from edgebundle.builder.drift.summary import summary_dict
    from edgebundle.builder.drift.text import format_text, printable
    from edgebundle.runtime.fsio import write_durably

    try:
        data = stats.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {stats}: {exc.strerror}") from None
    with domain_errors():
        drift = analyse(read_report(data, str(stats)), window)
        if html_path is not None:
            write_durably(html_path, format_html(drift).encode())
    if as_json:
        echo_json(summary_dict(drift))
    else:
        click.echo(format_text(drift))
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)
    if fail_on == "shift" and drift.shifted:
        click.echo("error: shifted: " + ", ".join(map(printable, drift.shifted)), err=True)
        raise SystemExit(ExitCode.DRIFT_SHIFT)
