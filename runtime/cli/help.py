"""Every command's ``--help`` in one shape: what it does, then examples, then its exit codes.

The exit codes come from ``exits.ExitCode`` with the meaning each has for that command, so the
help cannot name a code the command does not use, or a number that means something else.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence

from edgebundle.runtime.cli.exits import ExitCode

# What each code means when a command does not say more (exits.py's comments, in words).
MEANINGS: Mapping[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.ROW_ERRORS: "some rows got an error record; the others were scored",
    ExitCode.USAGE: "bad arguments, a store that cannot be used, or input that cannot be read",
    ExitCode.REJECTED: "a bundle was refused: signature, integrity, selftest, or cannot run here",
    ExitCode.ROLLBACK_REFUSED: "anti-rollback: a version lower than one seen, or marked bad",
    ExitCode.CHANNEL_UNREACHABLE: "the channel could not be read (an outage: retry later)",
    ExitCode.CHANNEL_REJECTED: "the channel was refused: forged, expired, replayed, broken chain",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs to the terminal; keeps a paragraph with indented lines (examples,
    the exit code table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(lines), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
        return "\n\n".join(paragraphs)


def document(
    parser: argparse.ArgumentParser,
    description: str,
    *,
    examples: Sequence[str],
    exits: Sequence[ExitCode] | Mapping[ExitCode, str],
) -> None:
    """Give ``parser`` its description and the epilog of examples and exit codes."""
    parser.formatter_class = HelpFormatter
    parser.description = description
    parser.epilog = epilog(examples, exits)


def epilog(examples: Sequence[str], exits: Sequence[ExitCode] | Mapping[ExitCode, str]) -> str:
    meanings = exits if isinstance(exits, Mapping) else {code: MEANINGS[code] for code in exits}
    codes = {ExitCode.OK: MEANINGS[ExitCode.OK], **meanings}
    return sections(examples, {int(code): text for code, text in codes.items()})


def sections(examples: Sequence[str], codes: Mapping[int, str]) -> str:
    """The two sections as text; ``bundle`` (click) lays out its own exit codes with it too."""
    example_lines = [f"  {example}" for example in examples]
    code_lines = [f"  {code:<3} {text}" for code, text in sorted(codes.items())]
    return "\n".join(["Examples:", *example_lines, "", "Exit codes:", *code_lines])
