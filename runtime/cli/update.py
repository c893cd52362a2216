"""``bundle-runtime update``: one pass of over-the-air updates from a channel."""

from __future__ import annotations

import argparse

from edgebundle.runtime.cli.exits import CHANNEL, ExitCode, blame
from edgebundle.runtime.cli.help import MEANINGS, document
from edgebundle.runtime.cli.options import LIMITS, add_json_option, add_store_option, emit
from edgebundle.runtime.ota.updater import UpdateReport, update_once
from edgebundle.runtime.progress import download_meters
from edgebundle.runtime.store import Store


def add_update(update: argparse.ArgumentParser) -> None:
    document(
        update,
        "Follow the channel's key chain, fetch its signed index, then download, verify and "
        "install the newest version of each model it lists (a failed selftest marks it bad).",
        examples=[
            "bundle-runtime update --store /var/lib/edgebundle "
            "--channel https://models.example.com/stable/",
            "bundle-runtime update --store /var/lib/edgebundle --channel /media/usb/channel",
        ],
        exits={
            ExitCode.OK: "done: everything listed is installed or up to date",
            ExitCode.USAGE: "bad arguments, or the store cannot be used",
            ExitCode.REJECTED: "a listed bundle was refused (audited; the pass went on)",
            ExitCode.CHANNEL_UNREACHABLE: MEANINGS[ExitCode.CHANNEL_UNREACHABLE],
            ExitCode.CHANNEL_REJECTED: MEANINGS[ExitCode.CHANNEL_REJECTED],
        },
    )
    add_store_option(update)
    update.add_argument(
        "--channel",
        required=True,
        metavar="URL",
        help="the channel: an http:// or https:// URL, a file:// URL or a directory",
    )
    update.add_argument(
        "--device-id",
        metavar="ID",
        help="this device's id, which decides whether it takes part in a staged rollout "
        "(without: it installs a version once it is released to 100%%)",
    )
    add_json_option(update)
    update.set_defaults(run=_update)


COMMANDS = {"update": add_update}


def _update(args: argparse.Namespace) -> int:
    with blame(CHANNEL):
        report = update_once(
            Store.open(args.store, limits=LIMITS),
            args.channel,
            device=args.device_id,
            meters=download_meters(),
        )
    return emit(args, report.to_dict(), report.lines(), _code(report))


def _code(report: UpdateReport) -> ExitCode:
    return ExitCode.REJECTED if report.failed else ExitCode.OK
