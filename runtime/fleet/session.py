"""A paho-mqtt 2.x client set up for a fleet broker (TLS, login, reconnect backoff): the one
place that imports paho. Callbacks use paho's ``CallbackAPIVersion.VERSION2`` signatures."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from edgebundle.runtime.errors import FleetError
from edgebundle.runtime.fleet.address import BrokerAddress, Credentials

if TYPE_CHECKING:
    from paho.mqtt.client import Client

KEEPALIVE = 30  # seconds: the broker publishes a silent device's last will after 1.5x this
# paho retries a lost connection after a delay doubling from MIN to MAX seconds
RECONNECT_MIN = 1
RECONNECT_MAX = 30


def new_client(
    address: BrokerAddress, credentials: Credentials, client_id: str, *, clean: bool = True
) -> Client:
    """A configured, not yet connected client; ``clean=False`` keeps the session (and the
    QoS 1 messages queued for it) on the broker between connections."""
    try:
        from paho.mqtt.client import Client, MQTTv311
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError:
        raise FleetError("the fleet needs paho-mqtt: pip install 'edgebundle[fleet]'") from None
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=MQTTv311,
    )
    client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
    if address.tls:
        _set_tls(client, credentials)
    elif credentials.cert is not None or credentials.ca is not None:
        raise FleetError("TLS files were given for a plain mqtt:// broker: use mqtts://")
    username = credentials.username or address.username
    if username is not None:
        client.username_pw_set(username, credentials.password)
    elif credentials.password is not None:
        raise FleetError("a broker password needs a user name (mqtt[s]://USER@HOST)")
    return client


def _set_tls(client: Client, credentials: Credentials) -> None:
    if (credentials.cert is None) != (credentials.key is None):
        raise FleetError("a client certificate needs its key, and a key its certificate")
    try:
        context = ssl.create_default_context(
            cafile=None if credentials.ca is None else str(credentials.ca)
        )
        if credentials.cert is not None and credentials.key is not None:
            context.load_cert_chain(str(credentials.cert), str(credentials.key))
    except (OSError, ssl.SSLError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise FleetError(f"cannot read the broker's TLS files: {detail}") from None
    client.tls_set_context(context)
