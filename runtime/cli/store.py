"""The commands that change a store: ``init``, ``install``, ``rollback`` and ``remove``.

Each prints one line for people, or with ``--json`` one JSON object whose keys are documented in
the README (absent values are null there and "none" in the text).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgebundle.runtime.bundle import read_bundle_file
from edgebundle.runtime.cli.exits import STORED_BUNDLE, ExitCode, blame
from edgebundle.runtime.cli.help import document
from edgebundle.runtime.cli.options import LIMITS, add_json_option, add_store_option, emit, text_of
from edgebundle.runtime.store import Store

_STORE = "/var/lib/edgebundle"


def add_init(init: argparse.ArgumentParser) -> None:
    document(
        init,
        "Create a model store in a new or empty directory, trusting the given keys.",
        examples=[
            f"bundle-runtime init --store {_STORE} --trust signing.pub",
            f"bundle-runtime init --store {_STORE} --trust keys/3.json   # a channel's key set",
        ],
        exits=[ExitCode.USAGE],
    )
    add_store_option(init)
    init.add_argument(
        "--trust",
        required=True,
        action="append",
        type=Path,
        metavar="FILE",
        help="a trusted Ed25519 public key (PEM; repeat for several, any one signs), or one "
        "key statement from the channel (keys/N.json: its keys and threshold)",
    )
    add_json_option(init)
    init.set_defaults(run=_init)


def add_install(install: argparse.ArgumentParser) -> None:
    document(
        install,
        "Verify BUNDLE with the store's keys, refuse older or already-seen versions "
        "(anti-rollback), run its selftest in the real scorer, then make it the active version "
        "of its model; the version it replaces stays as the rollback target. Installing the "
        "active version's exact bytes again changes nothing.",
        examples=[f"bundle-runtime install credit-score-1.4.0.bundle --store {_STORE}"],
        exits=[ExitCode.USAGE, ExitCode.REJECTED, ExitCode.ROLLBACK_REFUSED],
    )
    install.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .bundle file")
    add_store_option(install)
    add_json_option(install)
    install.set_defaults(run=_install)


def add_rollback(rollback: argparse.ArgumentParser) -> None:
    document(
        rollback,
        "Make the previous version active; the active one becomes previous, so a second "
        "rollback undoes the first (it then goes forward, and says so).",
        examples=[f"bundle-runtime rollback --model credit-score --store {_STORE}"],
        exits={
            ExitCode.USAGE: "no such model, no previous version, or the store cannot be used",
            ExitCode.REJECTED: "the previous version's file changed on disk since its install",
        },
    )
    add_store_option(rollback)
    rollback.add_argument("--model", required=True, metavar="NAME", help="the model to roll back")
    add_json_option(rollback)
    rollback.set_defaults(run=_rollback)


def add_remove(remove: argparse.ArgumentParser) -> None:
    document(
        remove,
        "Delete a model's bundle files (active and previous). The store still remembers the "
        "highest version it installed and the bad ones, so anti-rollback holds if the model "
        "comes back: only a higher version installs. Removing the only model the store serves "
        "needs --force.",
        examples=[f"bundle-runtime remove credit-score --store {_STORE}"],
        exits={
            ExitCode.USAGE: "no such model, nothing installed, or the only served model "
            "without --force",
        },
    )
    remove.add_argument("model", metavar="NAME", help="the model to remove")
    add_store_option(remove)
    remove.add_argument(
        "--force", action="store_true", help="remove it even when it is the only model served"
    )
    add_json_option(remove)
    remove.set_defaults(run=_remove)


def _init(args: argparse.Namespace) -> int:
    store = Store.init(args.store, args.trust, limits=LIMITS)
    trust = store.trust()
    doc: dict[str, Any] = {
        "store": str(store.root),
        "key_set": {"version": trust.version, "threshold": trust.threshold},
        "trusted_keys": trust.keyids(),
    }
    lines = [f"initialized store {store.root}, trusting {trust.describe()}"]
    lines += [f"trusted key {key_id}" for key_id in trust.keyids()]
    return emit(args, doc, lines)


def _install(args: argparse.Namespace) -> int:
    store = Store.open(args.store, limits=LIMITS)
    data = read_bundle_file(args.bundle, LIMITS)
    with blame(STORED_BUNDLE):
        result = store.install(data, origin=str(args.bundle.absolute()))
    doc = {
        "model": result.name,
        "version": str(result.version),
        "previous": None if result.previous is None else str(result.previous),
        "sha256": result.sha256,
        "changed": not result.already_installed,
        "selftest": {"passed": result.selftest.passed, "rows": result.selftest.rows},
    }
    if result.already_installed:
        line = f"{result.name} {result.version} is already installed and active; nothing changed"
    else:
        line = (
            f"installed {result.name} {result.version} (previous: {text_of(result.previous)})"
            f" — selftest passed ({result.selftest.rows} rows)"
        )
    return emit(args, doc, [line])


def _rollback(args: argparse.Namespace) -> int:
    with blame(STORED_BUNDLE):
        result = Store.open(args.store, limits=LIMITS).rollback(args.model)
    direction = "forward" if result.forward else "back"
    doc = {
        "model": result.name,
        "active": str(result.active),
        "previous": str(result.previous),
        "direction": direction,
    }
    if result.forward:
        line = (
            f"rolled {result.name} forward to {result.active}, undoing the last rollback "
            f"(previous: {result.previous})"
        )
    else:
        line = (
            f"rolled back {result.name} to {result.active} (previous: {result.previous}; "
            "roll back again to undo)"
        )
    return emit(args, doc, [line])


def _remove(args: argparse.Namespace) -> int:
    result = Store.open(args.store, limits=LIMITS).remove(args.model, force=args.force)
    doc = {
        "model": result.name,
        "removed": [str(v) for v in result.removed],
        "highest_seen": None if result.highest_seen is None else str(result.highest_seen),
    }
    line = (
        f"removed {result.name} "
        + ", ".join(map(str, result.removed))
        + f"; only versions above {text_of(result.highest_seen)} install from now on"
    )
    return emit(args, doc, [line])


COMMANDS = {
    "init": add_init,
    "install": add_install,
    "rollback": add_rollback,
    "remove": add_remove,
}
