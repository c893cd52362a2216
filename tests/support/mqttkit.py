"""An MQTT client for the fleet tests' side of the broker: it records what arrives on the
topics it subscribes to (paho-mqtt, as any operator's tool would)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import HOST


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    def __init__(self, port: int, topics: tuple[str, ...]) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = Client(CallbackAPIVersion.VERSION2, client_id="")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._topics = topics
        self._client.connect(HOST, port, keepalive=30)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the listener did not subscribe"

    def _on_connect(self, client: Client, *args: Any) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), message.retain, time.monotonic())
            )

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, test: Callable[[Any], bool], timeout: float = 20.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.on(topic):
                if message.payload and test(message.json()):
                    return message
            assert time.monotonic() < deadline, f"nothing on {topic} passed: {self.on(topic)}"
            time.sleep(0.05)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def listening(port: int, *topics: str) -> Iterator[Listener]:
    listener = Listener(port, topics)
    try:
        yield listener
    finally:
        listener.close()
