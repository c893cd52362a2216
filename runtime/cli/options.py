"""What several commands share: the device's caps, ``--store`` and ``--threads``' type."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebundle.runtime.bundle import Limits

# The device's caps; a later --store configuration can make them tunable.
LIMITS = Limits()


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path, metavar="DIR", help="store directory")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
