"""A serving device's MQTT session: its retained status, its telemetry and the channel's
update notices (``bundle-runtime serve --fleet``).

Two threads and no work on a request's path: paho's network thread (connects, reconnects with
backoff, answers the broker, hands notices over) and the agent's own, which every second
publishes the status when it changed and, every telemetry interval, writes a report to the
outbox on disk and publishes what the outbox holds while the broker is there. A notice is a
hint: it only wakes the update poller early (after a random delay, so a fleet does not fetch
the index in the same instant), and the pass verifies everything from the channel as always.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import onnxruntime

from edgebundle.runtime import __version__
from edgebundle.runtime.errors import BundleError, ChannelUnreachableError
from edgebundle.runtime.fleet.address import Topics
from edgebundle.runtime.fleet.config import FleetConfig
from edgebundle.runtime.fleet.documents import (
    STATUS_FORMAT,
    ActiveModel,
    DeviceStatus,
    Failure,
    Notice,
    Telemetry,
    UpdateResult,
    parse,
    to_bytes,
)
from edgebundle.runtime.fleet.outbox import OUTBOX_DIR, Outbox
from edgebundle.runtime.fleet.session import KEEPALIVE, new_client
from edgebundle.runtime.fleet.telemetry import TelemetryCounter
from edgebundle.runtime.monitor.report import timestamp
from edgebundle.runtime.ota.updater import UpdateReport
from edgebundle.runtime.serve.metrics import Metrics
from edgebundle.runtime.serve.serving import ServedModels
from edgebundle.runtime.store import Store

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage, MQTTMessageInfo

_TICK = 1.0  # seconds between the agent's looks at the status and the outbox
_MAX_IN_FLIGHT = 32  # telemetry reports published and not yet acknowledged
_RESEND_AFTER = 300.0  # an unacknowledged report is published again after this long
_CLOSE_TIMEOUT = 2.0


class DeviceView(Protocol):
    """What the agent reports: the models a device runs, whether it is healthy, and its
    telemetry since the previous report."""

    def models(self) -> tuple[ActiveModel, ...]: ...

    def ready(self) -> bool: ...

    def report(self, dropped: int) -> Telemetry: ...


class ServedView:
    """A running server's view: the models it serves (not merely those the store has
    active), and its counters."""

    def __init__(self, device: str, metrics: Metrics, models: ServedModels) -> None:
        self._models = models
        self._counter = TelemetryCounter(device, metrics, models)

    def models(self) -> tuple[ActiveModel, ...]:
        served = self._models.current.models
        return tuple(
            ActiveModel(name=name, version=str(model.version))
            for name, model in sorted(served.items())
        )

    def ready(self) -> bool:
        return self._models.current.ready

    def report(self, dropped: int) -> Telemetry:
        return self._counter.report(dropped=dropped)


def update_result(outcome: UpdateReport | BundleError, now: float) -> UpdateResult:
    """What a status document says about one update pass."""
    if isinstance(outcome, BundleError):
        result = "unreachable" if isinstance(outcome, ChannelUnreachableError) else "rejected"
        return UpdateResult(
            time=timestamp(now),
            result=result,
            serial=None,
            detail=_one_line(str(outcome)),
            failures=(),
        )
    failures = tuple(
        Failure(name=o.name, version=o.version, detail=_one_line(o.detail))
        for o in outcome.outcomes
        if not o.installed
    )
    installed = [o for o in outcome.outcomes if o.installed]
    if failures:
        result = "failed"
    elif installed:
        result = "installed"
    else:
        result = "up-to-date"
    return UpdateResult(
        time=timestamp(now),
        result=result,
        serial=outcome.serial,
        detail=_one_line("; ".join(outcome.lines())),
        failures=failures,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "-"


class FleetAgent:
    """Started with the server (``start``), stopped before it drains (``stop``)."""

    def __init__(
        self,
        config: FleetConfig,
        store: Store,
        view: DeviceView,
        *,
        wake_update: Callable[[], None] | None = None,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._view = view
        self._wake_update = wake_update
        self._log = log
        self._clock = clock
        self._started = clock()
        self._topics = Topics(config.address.fleet)
        self._outbox = Outbox(store.root / OUTBOX_DIR, config.max_reports)
        self._dropped = 0
        self._in_flight: dict[Path, tuple[MQTTMessageInfo, float]] = {}
        self._lock = threading.Lock()  # the fields below, shared with paho's thread
        self._connected = False
        self._last_update: UpdateResult | None = None
        self._published: DeviceStatus | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._client = new_client(config.address, config.credentials, f"edgebundle-{config.device}")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._set_will()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        address = self.config.address
        self._client.connect_async(address.host, address.port, keepalive=KEEPALIVE)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="edgebundle-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Say the device goes offline (a clean disconnect sends no last will), then leave."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._is_connected():
            info = self._client.publish(
                self._topics.status(self.config.device),
                to_bytes(self.status(online=False)),
                qos=1,
                retain=True,
            )
            # The connection may go meanwhile (RuntimeError): then the broker sends the will.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(_CLOSE_TIMEOUT)
        self._client.disconnect()
        self._client.loop_stop()

    # --- what the device says ---------------------------------------------------------------

    def observe_update(self, outcome: UpdateReport | BundleError) -> None:
        """The update poller's observer: the status says how the last pass went."""
        with self._lock:
            self._last_update = update_result(outcome, self._clock())

    def status(self, *, online: bool = True) -> DeviceStatus:
        now = self._clock()
        health = "stopped" if not online else "ready" if self._view.ready() else "degraded"
        with self._lock:
            last_update = self._last_update
        return DeviceStatus(
            format=STATUS_FORMAT,
            device=self.config.device,
            online=online,
            health=health,
            models=self._view.models(),
            last_update=last_update,
            runtime=__version__,
            onnxruntime=str(onnxruntime.__version__),
            started=timestamp(self._started),
            uptime_seconds=int(now - self._started),
            updated=timestamp(now),
        )

    def _set_will(self) -> None:
        """The broker publishes this if the device vanishes: its last status, offline. Set
        again on each change, for the next connection (a will is fixed per connection)."""
        will = self.status(online=False)
        self._client.will_set(
            self._topics.status(self.config.device), to_bytes(will), qos=1, retain=True
        )

    # --- the agent's thread -----------------------------------------------------------------

    def _run(self) -> None:
        next_report = self._clock() + self.config.telemetry_interval
        while not self._stop.wait(_TICK):
            try:
                self._publish_status()
                if self._clock() >= next_report:
                    next_report += self.config.telemetry_interval
                    self._queue_report()
                self._flush()
            except BundleError as e:  # the outbox's disk; say it and carry on
                self._log(f"fleet: {e}")

    def _publish_status(self, force: bool = False) -> None:
        status = self.status()
        with self._lock:
            same = self._published is not None and _same_state(self._published, status)
            if (same and not force) or not self._connected:
                return
            self._published = status
        self._client.publish(
            self._topics.status(self.config.device), to_bytes(status), qos=1, retain=True
        )
        self._set_will()

    def _queue_report(self) -> None:
        report = self._view.report(self._dropped)
        self._dropped = self._outbox.put(to_bytes(report))
        if self._dropped:
            self._log(f"fleet: telemetry buffer full, dropped the {self._dropped} oldest")

    def _flush(self) -> None:
        """Forget what the broker acknowledged; publish more while it is there."""
        now = self._clock()
        for path, (info, sent) in list(self._in_flight.items()):
            if info.is_published():
                path.unlink(missing_ok=True)
                del self._in_flight[path]
            elif now - sent > _RESEND_AFTER:
                del self._in_flight[path]
        if not self._is_connected():
            return
        topic = self._topics.telemetry(self.config.device)
        for path in self._outbox.pending():
            if len(self._in_flight) >= _MAX_IN_FLIGHT:
                break
            if path in self._in_flight:
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # dropped by the bound meanwhile
                continue
            except OSError as e:
                self._log(f"fleet: cannot read {path}: {e.strerror}")
                continue
            self._in_flight[path] = (self._client.publish(topic, data, qos=1), now)

    def _is_connected(self) -> bool:
        with self._lock:
            return self._connected

    # --- paho's thread ----------------------------------------------------------------------

    def _on_connect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._log(f"fleet: the broker refused the connection: {reason}")
            return
        with self._lock:
            self._connected = True
            self._published = None
        client.subscribe(self._topics.channel, qos=1)
        self._log(f"fleet: connected to {self.config.address}")
        self._publish_status(force=True)

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
        if was and not self._stop.is_set():
            self._log(f"fleet: lost the broker ({reason}); reconnecting")

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if message.topic != self._topics.channel or not message.payload:
            return
        try:
            notice = parse(Notice, bytes(message.payload), "update notice")
        except BundleError as e:
            self._log(f"fleet: ignored {e}")
            return
        try:
            seen = self._store.ota_state().last_serial
        except BundleError:
            seen = 0
        if notice.serial <= seen or self._wake_update is None:
            return
        delay = self._rng.uniform(0, self.config.notice_jitter)
        timer = threading.Timer(delay, self._wake_update)
        timer.daemon = True
        timer.start()


def _same_state(a: DeviceStatus, b: DeviceStatus) -> bool:
    """Equal but for the clock: a status is published again only when something changed."""
    return (a.online, a.health, a.models, a.last_update) == (
        b.online,
        b.health,
        b.models,
        b.last_update,
    )
