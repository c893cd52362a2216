"""``bundle-runtime``: the device command line (stdlib argparse, no third-party CLI library).

Every failure is one ``error: ...`` line on stderr and an exit code from ``ExitCode``; a
traceback never reaches the user. Commands raise, and ``main`` alone prints and exits, with the
code ``exits.EXIT_CODES`` gives the error's class (or the ``Blame`` a command's step names).

One module per command group: ``score``, ``store`` (init, install, rollback, remove: the
commands that change a store), ``status`` (status, audit: those that read one), ``serve`` and
``update``; ``help`` gives every command's ``--help`` the same shape.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgebundle.runtime import __version__
from edgebundle.runtime.cli.exits import ExitCode, Failure
from edgebundle.runtime.cli.help import MEANINGS, HelpFormatter, epilog
from edgebundle.runtime.errors import BundleError

__all__ = ["ExitCode", "main"]

if TYPE_CHECKING:  # generic only in typeshed's stubs
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsersAction = argparse._SubParsersAction

# Each command: the module that adds its arguments, and its line in `bundle-runtime --help`.
# The module, and all it imports, loads only when its command is chosen: `score` never loads
# the HTTP server that `serve` describes its defaults with.
_COMMANDS = {
    "score": ("score", "score rows from stdin to stdout"),
    "init": ("store", "create a model store"),
    "install": ("store", "verify, selftest and activate a bundle in a store"),
    "status": ("status", "show a store's models, versions, trust and drift"),
    "rollback": ("store", "switch a model back to its previous version"),
    "remove": ("store", "delete a model's bundles (anti-rollback memory stays)"),
    "audit": ("status", "print the store's audit log"),
    "serve": ("serve", "serve a store's models over HTTP"),
    "update": ("update", "one pass of over-the-air updates from a channel"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return ExitCode.OK if e.code in (0, None) else ExitCode.USAGE
    try:
        code: int = args.run(args)
    except BundleError as e:
        return _fail(Failure.of(e))
    except Failure as e:
        return _fail(e)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


def _fail(failure: Failure) -> int:
    print(f"error: {failure}", file=sys.stderr)
    return failure.code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bundle-runtime",
        description="Verify signed model bundles, keep them in a store, score them, update "
        "them over the air. `bundle-runtime COMMAND --help` shows each command's options, "
        "examples and exit codes.",
        formatter_class=HelpFormatter,
        epilog=epilog(
            [
                "bundle-runtime init --store /var/lib/edgebundle --trust signing.pub",
                "bundle-runtime install credit-score-1.4.0.bundle --store /var/lib/edgebundle",
                "bundle-runtime serve --store /var/lib/edgebundle --port 8080",
            ],
            MEANINGS,
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", action=_LazyCommands
    )
    for name, (_, summary) in _COMMANDS.items():
        commands.add_parser(name, help=summary)
    return parser


class _LazyCommands(_SubParsersAction):
    """Subcommands whose arguments are added once argparse has chosen one."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if values:  # the command's name, then its arguments
            name = values[0]
            module = importlib.import_module(f"{__name__}.{_COMMANDS[name][0]}")
            module.COMMANDS[name](self._name_parser_map[name])
        super().__call__(parser, namespace, values, option_string)
