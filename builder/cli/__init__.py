"""``bundle``: the workstation CLI, one click group over one module per command family.

Domain errors become one-line ClickExceptions in ``_common`` only, with the exit code
``EXIT_CODES`` gives their class. Every ``--help`` ends with ``Examples:`` and ``Exit
codes:`` (the convention ``runtime.cli.help`` gives both command lines), and every command
that changes or reports state takes ``--json``. Command modules import xgboost, onnx and the
rest of the conversion only inside the commands that convert: ``bundle --help``, ``keygen``,
``verify``, ``inspect``, ``publish`` and ``drift`` never load them.
"""

from __future__ import annotations

import click

from edgebundle.builder.cli._common import EXIT_CODES, ExitCode, help_epilog
from edgebundle.builder.cli.build import build_command, make_broken_command
from edgebundle.builder.cli.bundles import compare_command, inspect_command, verify_command
from edgebundle.builder.cli.channel import publish_command, rotate_keys_command
from edgebundle.builder.cli.drift import drift_command
from edgebundle.builder.cli.fleet import fleet_group, rollout_command
from edgebundle.builder.cli.keygen import keygen
from edgebundle.builder.cli.kit import device_kit_command

__all__ = ["EXIT_CODES", "ExitCode", "main"]


@click.group(
    epilog=help_epilog(
        [
            "bundle keygen --out keys",
            "bundle build model.json --name credit-score --version 1.0.0 --key keys/signing.key",
            "bundle COMMAND --help    # each command's options, examples and exit codes",
        ],
        ExitCode.BUDGET_MISSED,
        ExitCode.DRIFT_SHIFT,
    )
)
@click.version_option(package_name="edgebundle")
def main() -> None:
    """Convert XGBoost models into signed, int8-quantized ONNX bundles for devices."""


for _command in (
    keygen,
    build_command,
    inspect_command,
    verify_command,
    compare_command,
    drift_command,
    publish_command,
    rotate_keys_command,
    make_broken_command,
    device_kit_command,
    fleet_group,
    rollout_command,
):
    main.add_command(_command)
