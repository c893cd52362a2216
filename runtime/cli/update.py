"""``bundle-runtime update``: one pass of over-the-air updates from a channel."""

from __future__ import annotations

import argparse

from edgebundle.runtime.cli.exits import CHANNEL, ExitCode, blame
from edgebundle.runtime.cli.options import LIMITS, add_store_option
from edgebundle.runtime.ota.updater import update_once
from edgebundle.runtime.store import Store


def add_update(update: argparse.ArgumentParser) -> None:
    update.description = (
        "Follow the channel's key chain, fetch its signed index, then download, verify and "
        "install the newest version of each model it lists (a failed selftest marks it bad). "
        "Exit codes: 0 done, 2 usage or store error, 3 a listed bundle was refused (audited; "
        "the pass went on), 5 channel unreachable (retry later), 6 channel rejected (forged, "
        "expired, replayed, broken key chain)."
    )
    add_store_option(update)
    update.add_argument(
        "--channel",
        required=True,
        metavar="URL",
        help="the channel: an http:// or https:// URL, a file:// URL or a directory",
    )
    update.set_defaults(run=_update)


COMMANDS = {"update": add_update}


def _update(args: argparse.Namespace) -> int:
    with blame(CHANNEL):
        report = update_once(Store.open(args.store, limits=LIMITS), args.channel)
    for line in report.lines():
        print(line)
    return ExitCode.REJECTED if report.failed else ExitCode.OK
