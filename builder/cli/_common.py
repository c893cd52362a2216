"""What ``bundle``'s commands share: the exit codes, domain errors as one-line click errors,
key options, ``--json`` output and the help epilog.

Nothing here imports xgboost, onnx or onnxmltools: the commands that convert a model import
them when they run, so the others start in a fraction of the time.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import click

from edgebundle.builder.errors import ParityError
from edgebundle.runtime.cli.exits import ExitCode as RuntimeExit
from edgebundle.runtime.cli.help import sections
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.semver import Version

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@enum.unique
class ExitCode(enum.IntEnum):
    """``bundle``'s exit codes. 2 means usage to both tools, and 3 refuses the model here as it
    refuses a bundle to ``bundle-runtime``; 1 is this tool's error, not a scored row's."""

    OK = 0
    ERROR = 1  # a bad model, key or data; `verify`: every problem listed
    USAGE = 2  # bad arguments: click's own code
    BUDGET_MISSED = 3  # build: the converted model misses its error budget; nothing signed
    # drift --fail-on shift: a feature shifted; the number is bundle-runtime's table's
    DRIFT_SHIFT = RuntimeExit.DRIFT_SHIFT.value


# Each domain error class's code; the nearest class with an entry decides.
EXIT_CODES: Mapping[type[BundleError], ExitCode] = MappingProxyType(
    {BundleError: ExitCode.ERROR, ParityError: ExitCode.BUDGET_MISSED}
)

# What each code means, as every --help lists it.
MEANINGS: Mapping[ExitCode, str] = MappingProxyType(
    {
        ExitCode.OK: "done",
        ExitCode.ERROR: "error (a bad model, key, data or bundle), one line on stderr",
        ExitCode.USAGE: "usage: a bad option or argument",
        ExitCode.BUDGET_MISSED: "the model misses its error budget; nothing was signed",
        ExitCode.DRIFT_SHIFT: "--fail-on shift: a feature shifted (named on stderr)",
    }
)

PASSPHRASE_HELP = "Name of an environment variable holding the key's passphrase."
TRUST_HELP = (
    "Trusted public key (repeatable), or one key statement of a channel (keys/N.json: its "
    "keys and threshold)."
)
JSON_HELP = "Print JSON (the shape is in the README, 'Command line')."


def help_epilog(examples: Sequence[str], *extra: ExitCode) -> str:
    """The ``Examples:`` and ``Exit codes:`` sections: 0, 1 and 2 for every command, and the
    codes only this command uses."""
    codes = (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, *extra)
    text = sections(examples, {int(code): MEANINGS[code] for code in codes})
    # click re-wraps a paragraph unless its first line is \b
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.split("\n\n"))


def json_option(function: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(function)


def echo_json(doc: Mapping[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2))


@contextmanager
def domain_errors() -> Iterator[None]:
    try:
        yield
    except BundleError as exc:
        error = click.ClickException(str(exc))
        # click types exit_code a ClassVar, yet reads it from the exception it caught.
        error.exit_code = exit_code(exc)  # type: ignore[misc]
        raise error from None


def exit_code(error: BundleError) -> ExitCode:
    """The code of the nearest class in ``EXIT_CODES``: BudgetMissedError is a ParityError."""
    return next(EXIT_CODES[cls] for cls in type(error).__mro__ if cls in EXIT_CODES)


def passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise click.ClickException(f"environment variable {env_name} is not set or empty")
    return value.encode()


def private_keys(
    paths: tuple[Path, ...], passphrase_env: str | None
) -> tuple[Ed25519PrivateKey, ...]:
    from edgebundle.runtime.signing import load_private_key

    secret = passphrase(passphrase_env)
    return tuple(load_private_key(path, secret) for path in paths)


def version(_ctx: click.Context, _param: click.Parameter, value: str) -> Version:
    try:
        return Version.parse(value)
    except BundleError as exc:
        raise click.BadParameter(str(exc)) from None
