"""``serve --fleet``'s options, and the fleet agent started with the server (imported, with
paho, only when ``--fleet`` is given)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgebundle.runtime.cli.exits import ARGUMENTS, blame
from edgebundle.runtime.fleet.address import (
    PASSWORD_ENV,
    BrokerAddress,
    Credentials,
    check_level,
    read_password,
)
from edgebundle.runtime.fleet.config import (
    DEFAULT_MAX_REPORTS,
    DEFAULT_NOTICE_JITTER,
    DEFAULT_TELEMETRY_INTERVAL,
    FleetConfig,
)
from edgebundle.runtime.store import Store

if TYPE_CHECKING:
    from edgebundle.runtime.ota.updater import Poller
    from edgebundle.runtime.serve.server import Companion, RunningServer



def add_fleet_options(
    parser: argparse.ArgumentParser,
    positive_float: Callable[[str], float],
    positive_int: Callable[[str], int],
) -> None:
    group = parser.add_argument_group(
        "fleet", "status, telemetry and update notices over MQTT (needs edgebundle[fleet])"
    )
    group.add_argument(
        "--fleet",
        metavar="URL",
        help="the fleet's MQTT broker: mqtt://HOST[:PORT][/FLEET] or mqtts:// (TLS); "
        "FLEET names the topics edgebundle/FLEET/... (default 'default')",
    )
    group.add_argument(
        "--device-id",
        metavar="ID",
        help="this device's name in the fleet, which also decides whether it takes part in a "
        "staged rollout (default with --fleet: the hostname; without: none, so it installs "
        "a version only once it is released to 100%%)",
    )
    group.add_argument("--fleet-ca", type=Path, metavar="FILE", help="CA certificates (PEM)")
    group.add_argument("--fleet-cert", type=Path, metavar="FILE", help="client certificate")
    group.add_argument("--fleet-key", type=Path, metavar="FILE", help="client certificate's key")
    group.add_argument("--fleet-username", metavar="NAME", help="broker user name")
    group.add_argument(
        "--fleet-password-file",
        type=Path,
        metavar="FILE",
        help=f"broker password (first line); otherwise ${PASSWORD_ENV}, if set",
    )
    group.add_argument(
        "--telemetry-interval",
        type=positive_float,
        default=DEFAULT_TELEMETRY_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between telemetry reports (default {DEFAULT_TELEMETRY_INTERVAL:g})",
    )
    group.add_argument(
        "--telemetry-buffer",
        type=positive_int,
        default=DEFAULT_MAX_REPORTS,
        metavar="N",
        help="reports kept on disk while the broker is unreachable; the oldest go beyond N "
        f"(default {DEFAULT_MAX_REPORTS})",
    )
    group.add_argument(
        "--notice-jitter",
        type=positive_float,
        default=DEFAULT_NOTICE_JITTER,
        metavar="SECONDS",
        help="after an update notice, start the update pass within a random delay up to "
        f"SECONDS (default {DEFAULT_NOTICE_JITTER:g})",
    )


def device_id(args: argparse.Namespace) -> str | None:
    """``--device-id``, or with ``--fleet`` the hostname; checked as a topic level."""
    text = args.device_id or (socket.gethostname() if args.fleet else None)
    if text is None:
        return None
    with blame(ARGUMENTS):
        return check_level(text, "device id")


def fleet_companion(args: argparse.Namespace, store: Store, poller: Poller | None) -> Companion:
    """What starts the fleet agent beside the server; every option is checked here, before
    the server binds."""
    from edgebundle.runtime.fleet.agent import FleetAgent, ServedView
    from edgebundle.runtime.fleet.session import new_client

    with blame(ARGUMENTS):
        device = device_id(args)
        assert device is not None  # --fleet gives one
        config = FleetConfig(
            address=BrokerAddress.parse(args.fleet),
            credentials=Credentials(
                ca=args.fleet_ca,
                cert=args.fleet_cert,
                key=args.fleet_key,
                username=args.fleet_username,
                password=read_password(args.fleet_password_file),
            ),
            device=device,
            telemetry_interval=args.telemetry_interval,
            notice_jitter=args.notice_jitter,
            max_reports=args.telemetry_buffer,
        )
        new_client(config.address, config.credentials, "check")  # paho there, TLS files read

    def start(running: RunningServer) -> Callable[[], None]:
        agent = FleetAgent(
            config,
            store,
            ServedView(config.device, running.metrics, running.models),
            wake_update=None if poller is None else poller.wake,
            log=running.log,
        )
        if poller is not None:
            poller.observer = agent.observe_update
        agent.start()
        return agent.stop

    return start
