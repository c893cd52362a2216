"""What the broker holds for the fleet: every device's retained status, and the telemetry
queued for the workstation's persistent session since it last looked.

The workstation subscribes with QoS 1 under a fixed client id and a session the broker keeps
(clean session off), so the broker queues each telemetry report for it between two runs of
``bundle fleet status`` (Mosquitto: up to ``max_queued_messages``); the first run opens that
session, and reports from before it are not kept anywhere.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgebundle.builder.fleet.broker import connected
from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.fleet.address import BrokerAddress, Credentials, Topics
from edgebundle.runtime.fleet.documents import DeviceStatus, Telemetry, parse

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage

QUIET = 0.5  # seconds with no message: the broker has sent what it holds


@dataclass
class Collected:
    statuses: dict[str, DeviceStatus] = field(default_factory=dict)  # by device id
    reports: list[Telemetry] = field(default_factory=list)  # in arrival order
    refused: list[str] = field(default_factory=list)  # documents that did not parse


def collect(
    address: BrokerAddress, creds: Credentials, client_id: str, wait: float, *, keep: bool = True
) -> Collected:
    """Statuses and queued telemetry, until the broker has been quiet for a moment (at most
    ``wait`` seconds). ``keep``: the broker keeps the session (and queues telemetry for it)."""
    topics = Topics(address.fleet)
    found = Collected()
    lock = threading.Lock()
    last = [time.monotonic()]

    def on_message(client: Client, userdata: Any, message: MQTTMessage) -> None:
        device = topics.device_of(message.topic)
        if device is None or not message.payload:
            return
        kind = message.topic.rsplit("/", 1)[1]
        with lock:
            last[0] = time.monotonic()
            try:
                if kind == "status":
                    status = parse(DeviceStatus, bytes(message.payload), message.topic)
                    found.statuses[device] = status
                elif kind == "telemetry":
                    found.reports.append(parse(Telemetry, bytes(message.payload), message.topic))
            except BundleError as e:
                found.refused.append(str(e))

    def subscribe(client: Client) -> None:
        client.on_message = on_message
        client.subscribe([(topics.all_status, 1), (topics.all_telemetry, 1)])

    with connected(address, creds, client_id, clean=not keep, on_connect=subscribe):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with lock:
                quiet = time.monotonic() - last[0]
            if quiet >= QUIET:
                break
            time.sleep(0.05)
    return found
