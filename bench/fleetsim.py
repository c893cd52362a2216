"""``make fleet-sim``: N simulated devices against a static channel and a real broker.

Each device is a real store, the real update client (``Poller``: key chain, signed index,
bundle download, verification, selftest, atomic switch) and the real fleet agent with its own
MQTT session; what it does not have is an HTTP server (its view of itself is the store's
active versions). Devices run many per process, on threads, in a few worker processes. The
channel is a directory behind the standard library's HTTP server, which counts the bytes it
serves; the broker is Debian's Mosquitto on 127.0.0.1 (persistence in a temporary directory, so
a restart keeps retained messages and sessions), whose ``$SYS`` counters give messages/s.

Scenarios, each a publish of the next version, timed from the publish to the status documents
that show it (the monitor subscribes to every device's status):

1. notice: ``publish --notify``: devices wake within the notice jitter;
2. poll only: no notice: devices find it on their next jittered poll;
3. broker restart: a notice, then the broker restarts a second later;
4. 20% offline: a fifth of the devices are stopped, a notice goes out, they come back later.
"""

from __future__ import annotations

import argparse
import http.server
import json
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from edgebundle.builder.api import build
from edgebundle.builder.fleet.broker import notify
from edgebundle.builder.keys import generate_keypair
from edgebundle.builder.publish import publish
from edgebundle.runtime.fleet.address import BrokerAddress, Credentials
from edgebundle.runtime.fleet.agent import FleetAgent
from edgebundle.runtime.fleet.config import FleetConfig
from edgebundle.runtime.fleet.documents import (
    TELEMETRY_FORMAT,
    ActiveModel,
    Telemetry,
)
from edgebundle.runtime.monitor.report import timestamp
from edgebundle.runtime.ota.updater import Poller
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import Store

HOST = "127.0.0.1"
FLEET = "sim"
MODEL = "sim-model"
RESULTS = Path(__file__).resolve().parent / "fleetsim.json"


# --- the simulated device ------------------------------------------------------------------


class StoreView:
    """A device without a server: its models are the store's active versions."""

    def __init__(self, store: Store, device: str) -> None:
        self._store = store
        self._device = device
        self._sequence = 0

    def models(self) -> tuple[ActiveModel, ...]:
        return tuple(
            ActiveModel(name=name, version=str(model.active))
            for name, model in self._store.state().models.items()
            if model.active is not None
        )

    def ready(self) -> bool:
        return bool(self.models())

    def report(self, dropped: int) -> Telemetry:
        self._sequence += 1
        now = timestamp(time.time())
        return Telemetry(
            format=TELEMETRY_FORMAT, device=self._device, session="sim", sequence=self._sequence,
            start=now, end=now, dropped=dropped, models=(),
        )  # fmt: skip


class Device:
    def __init__(self, root: Path, name: str, channel: str, broker: str, args: Any) -> None:
        self.store = Store.open(root)
        self.name = name
        self.channel = channel
        self.broker = broker
        self.args = args
        self._parts: tuple[Poller, FleetAgent] | None = None

    def start(self) -> None:
        quiet = lambda line: None  # noqa: E731
        poller = Poller(store_root=self.store.root, channel=self.channel,
                        interval=self.args.poll, log=quiet, device=self.name)  # fmt: skip
        agent = FleetAgent(
            FleetConfig(
                address=BrokerAddress.parse(self.broker),
                credentials=Credentials(),
                device=self.name,
                telemetry_interval=self.args.telemetry,
                notice_jitter=self.args.jitter,
            ),
            self.store,
            StoreView(self.store, self.name),
            wake_update=poller.wake,
            log=quiet,
        )
        poller.observer = agent.observe_update
        agent.start()
        poller.start()
        self._parts = (poller, agent)

    def stop(self) -> None:
        if self._parts is not None:
            poller, agent = self._parts
            poller.stop()
            agent.stop()
            self._parts = None


def worker(names: Sequence[str], roots: Sequence[str], channel: str, broker: str,
           args: Any, commands: Any, done: Any) -> None:  # fmt: skip
    devices = {
        name: Device(Path(root), name, channel, broker, args)
        for name, root in zip(names, roots, strict=True)
    }
    for device in devices.values():
        device.start()
    done.put("started")
    while True:
        command, which = commands.get()
        if command == "quit":
            break
        for name in which:
            if name in devices:
                getattr(devices[name], command)()
        done.put(command)
    for device in devices.values():
        device.stop()
    done.put("quit")


# --- the world around them ------------------------------------------------------------------


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    served = 0
    lock = threading.Lock()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        data = source.read()
        outputfile.write(data)
        with CountingHandler.lock:
            CountingHandler.served += len(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def channel_server(directory: Path) -> Iterator[str]:
    def make(*a: Any) -> http.server.BaseHTTPRequestHandler:
        return CountingHandler(*a, directory=str(directory))

    server = http.server.ThreadingHTTPServer((HOST, 0), make)
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        (directory / "data").mkdir()
        self.config.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {directory / 'data'}/\n"
            "sys_interval 1\nmax_queued_messages 100000\nmax_connections -1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if binary is None:
            raise SystemExit("mosquitto is not installed: make broker")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


class Monitor:
    """Every device's newest status, and the broker's message counters."""

    def __init__(self, port: int) -> None:
        self.versions: dict[str, tuple[str, float]] = {}  # device -> (version, first seen)
        self.online: dict[str, bool] = {}
        self.sys: dict[str, int] = {}
        self.before_restarts: dict[str, int] = {}  # counts of earlier broker processes
        self.lock = threading.Lock()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(f"edgebundle/{FLEET}/devices/+/status", 1), ("$SYS/broker/messages/#", 0)]
        )
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(HOST, port)
        self.client.loop_start()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        now = time.monotonic()
        with self.lock:
            if message.topic.startswith("$SYS/"):
                key, value = message.topic.rsplit("/", 1)[1], int(message.payload)
                if value < self.sys.get(key, 0):  # a new broker process counts from zero
                    self.before_restarts[key] = self.before_restarts.get(key, 0) + self.sys[key]
                self.sys[key] = value
                return
            status = json.loads(message.payload)
            device = status["device"]
            self.online[device] = status["online"]
            version = next((m["version"] for m in status["models"]), "")
            if self.versions.get(device, ("", 0.0))[0] != version:
                self.versions[device] = (version, now)

    def messages(self) -> int:
        with self.lock:
            return sum(
                self.sys.get(k, 0) + self.before_restarts.get(k, 0) for k in ("received", "sent")
            )

    def reached(self, version: str, devices: Sequence[str]) -> list[float]:
        with self.lock:
            return sorted(
                self.versions[d][1] for d in devices if self.versions.get(d, ("", 0))[0] == version
            )


# --- the run --------------------------------------------------------------------------------


@dataclass
class World:
    work: Path
    channel: Path
    key: Path
    bundles: dict[str, Path]
    broker: Mosquitto
    monitor: Monitor
    url: str
    devices: list[str]


def make_bundles(work: Path, key: Path, versions: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4}, xgb.DMatrix(x, y), 20)
    model = work / "model.json"
    booster.save_model(model)
    bundles = {}
    for n in range(1, versions + 1):
        version = f"{n}.0.0"
        result = build(model, name=MODEL, version=version, key=key, out_dir=work / "bundles")
        bundles[version] = result.path
    return bundles


@dataclass(frozen=True)
class Mark:
    """When a publish began, and the broker's and channel's counters then."""

    start: float
    messages: int
    served: int


def publish_version(world: World, version: str, notice: bool) -> Mark:
    start = Mark(time.monotonic(), world.monitor.messages(), CountingHandler.served)
    signing = load_private_key(world.key, None)
    index = publish(world.bundles[version], world.channel, [signing], timedelta(days=1),
                    datetime.now(timezone.utc))  # fmt: skip
    if notice:
        notify(f"mqtt://{HOST}:{world.broker.port}/{FLEET}", Credentials(), index.serial)
    return start


def converge(world: World, version: str, devices: Sequence[str], mark: Mark,
             timeout: float) -> dict[str, Any]:  # fmt: skip
    start = mark.start
    deadline = time.monotonic() + timeout
    while len(world.monitor.reached(version, devices)) < len(devices):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    times = [t - start for t in world.monitor.reached(version, devices)]
    elapsed = time.monotonic() - start
    time.sleep(1.5)  # the broker's $SYS counters are published every second

    def at(share: float) -> float | None:
        needed = max(1, int(np.ceil(share * len(devices))))
        return round(times[needed - 1], 2) if len(times) >= needed else None

    return {
        "devices": len(devices),
        "converged": len(times),
        "p50_s": at(0.5),
        "p99_s": at(0.99),
        "p100_s": at(1.0),
        "broker_msgs_per_s": round(
            (world.monitor.messages() - mark.messages) / (elapsed + 1.5), 1
        ),
        "channel_bytes": CountingHandler.served - mark.served,
    }


def scenarios(world: World, args: Any, command: Any) -> dict[str, Any]:
    devices = world.devices
    results: dict[str, Any] = {}
    poll_timeout = args.poll * 3 + 60
    print("1. notice", file=sys.stderr)
    start = publish_version(world, "2.0.0", notice=True)
    results["notice"] = converge(world, "2.0.0", devices, start, 120)
    print("2. poll only", file=sys.stderr)
    start = publish_version(world, "3.0.0", notice=False)
    results["poll only"] = converge(world, "3.0.0", devices, start, poll_timeout)
    print("3. broker restart 1 s after the notice", file=sys.stderr)
    start = publish_version(world, "4.0.0", notice=True)
    time.sleep(1.0)
    world.broker.stop()
    world.broker.start()
    results["broker restart"] = converge(world, "4.0.0", devices, start, poll_timeout)
    print("4. 20% of devices offline", file=sys.stderr)
    offline = devices[:: max(1, round(1 / args.offline))] if args.offline else []
    command("stop", offline)
    online = [d for d in devices if d not in offline]
    start = publish_version(world, "5.0.0", notice=True)
    results["20% offline: the online ones"] = converge(world, "5.0.0", online, start, 120)
    back = Mark(time.monotonic(), world.monitor.messages(), CountingHandler.served)
    command("start", offline)
    results["20% offline: back online"] = converge(world, "5.0.0", offline, back, 120)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="make fleet-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--poll", type=float, default=20.0, help="mean poll period, seconds")
    parser.add_argument("--jitter", type=float, default=2.0, help="notice jitter, seconds")
    parser.add_argument("--telemetry", type=float, default=30.0)
    parser.add_argument("--offline", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetsim-") as tmp:
        work = Path(tmp)
        key, public = generate_keypair(work / "keys", None)
        bundles = make_bundles(work, key, 5)
        broker = Mosquitto(work)
        broker.start()
        channel = work / "channel"
        try:
            with channel_server(channel) as url:
                monitor = Monitor(broker.port)
                names = [f"dev-{i:05d}" for i in range(args.devices)]
                roots = [str(work / "devices" / name) for name in names]
                for root in roots:
                    Store.init(Path(root), [public])
                world = World(work, channel, key, bundles, broker, monitor, url, names)
                start = publish_version(world, "1.0.0", notice=False)
                results = run_workers(world, args, roots, start)
        finally:
            broker.stop()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, args)


def run_workers(world: World, args: Any, roots: list[str], start: Mark) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    broker_url = f"mqtt://{HOST}:{world.broker.port}/{FLEET}"
    workers = []
    for w in range(args.workers):
        queue = context.Queue()
        mine = (world.devices[w :: args.workers], roots[w :: args.workers])
        process = context.Process(
            target=worker, args=(*mine, world.url, broker_url, args, queue, done)
        )
        process.start()
        workers.append((process, queue))

    def command(name: str, devices: Sequence[str]) -> None:
        for _, queue in workers:
            queue.put((name, list(devices)))
        for _ in workers:
            done.get(timeout=120)

    try:
        for _ in workers:
            done.get(timeout=300)
        first = converge(world, "1.0.0", world.devices, start, 300)
        results = {"start-up: spawn, first install": first, **scenarios(world, args, command)}
    finally:
        for _, queue in workers:
            queue.put(("quit", []))
        for process, _ in workers:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    return results


def print_table(results: dict[str, Any], args: Any) -> None:
    print(f"\n{args.devices} devices in {args.workers} processes; poll {args.poll:g} s (0.5-1.5x), "
          f"notice jitter {args.jitter:g} s")  # fmt: skip
    head = f"{'scenario':<32}{'devices':>8}{'done':>6}{'50%':>8}{'99%':>8}{'100%':>8}"
    print(head + f"{'broker msg/s':>14}{'channel bytes':>15}")
    for name, r in results.items():
        cells = [r[k] for k in ("p50_s", "p99_s", "p100_s")]
        text = "".join(f"{'-' if c is None else f'{c:.1f} s':>8}" for c in cells)
        print(f"{name:<32}{r['devices']:>8}{r['converged']:>6}{text}"
              f"{r['broker_msgs_per_s']:>14.1f}{r['channel_bytes']:>15,}")  # fmt: skip
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
