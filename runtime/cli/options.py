"""What several commands share: the device's caps, ``--store``, ``--json`` and how a result is
printed, and ``--threads``' type."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from edgebundle.runtime.bundle import Limits
from edgebundle.runtime.cli.exits import ExitCode

# The device's caps; a later --store configuration can make them tunable.
LIMITS = Limits()


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path, metavar="DIR", help="store directory")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (shape in the README)"
    )


def emit(
    args: argparse.Namespace,
    doc: Mapping[str, Any],
    lines: Sequence[str],
    code: ExitCode = ExitCode.OK,
) -> int:
    """Print a command's result: ``doc`` as JSON with ``--json``, else ``lines`` for people."""
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(*lines, sep="\n")
    return code


def text_of(value: object) -> str:
    """How the text output writes a value: absent is "none", everywhere."""
    return "none" if value is None else str(value)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def utc_time(text: str) -> str:
    """A UTC time as the store's files write it; a date alone means its midnight."""
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"not a UTC time like 2026-12-01T08:00:00Z: {text!r}")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value
