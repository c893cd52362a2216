"""Connecting to the fleet's broker from the workstation, and the update notice (the
commands' broker options are ``builder.cli.fleet``'s)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from edgebundle.runtime.errors import FleetError
from edgebundle.runtime.fleet.address import BrokerAddress, Credentials, Topics
from edgebundle.runtime.fleet.documents import NOTICE_FORMAT, Notice, to_bytes
from edgebundle.runtime.fleet.session import KEEPALIVE, new_client

if TYPE_CHECKING:
    from paho.mqtt.client import Client

CONNECT_TIMEOUT = 10.0


@contextmanager
def connected(
    address: BrokerAddress,
    creds: Credentials,
    client_id: str = "",
    *,
    clean: bool = True,
    on_connect: Callable[[Client], None] | None = None,
) -> Iterator[Client]:
    """A client connected to the broker (``on_connect`` runs first, on paho's thread, so
    subscriptions are in place before anything retained arrives), disconnected at the end."""
    client = new_client(address, creds, client_id, clean=clean)
    ready = threading.Event()
    refused: list[str] = []

    def connect(client: Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        elif on_connect is not None:
            on_connect(client)
        ready.set()

    client.on_connect = connect
    try:
        client.connect(address.host, address.port, keepalive=KEEPALIVE)
    except OSError as e:
        raise FleetError(f"cannot reach the broker {address}: {e.strerror or e}") from None
    client.loop_start()
    try:
        if not ready.wait(CONNECT_TIMEOUT):
            raise FleetError(f"the broker {address} did not answer in {CONNECT_TIMEOUT:g} s")
        if refused:
            raise FleetError(f"the broker {address} refused the connection: {refused[0]}")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def notify(url: str, creds: Credentials, serial: int) -> BrokerAddress:
    """Announce index ``serial`` on the fleet's channel topic, retained, so a device that
    connects later learns of it at once."""
    address = BrokerAddress.parse(url)
    notice = to_bytes(Notice(format=NOTICE_FORMAT, serial=serial))
    with connected(address, creds) as client:
        info = client.publish(Topics(address.fleet).channel, notice, qos=1, retain=True)
        try:
            info.wait_for_publish(CONNECT_TIMEOUT)
        except RuntimeError as e:
            raise FleetError(f"the notice did not reach {address}: {e}") from None
        if not info.is_published():
            raise FleetError(f"the broker {address} did not acknowledge the notice")
    return address
