"""``serve --fleet`` against a real Mosquitto (tests/support/broker.py): the retained status and
the last will when the device is SIGKILLed, update notices, telemetry through a broker outage,
and TLS with client certificates."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KeyFiles
from tests.support.broker import Broker, running_broker
from tests.support.channelkit import served
from tests.support.mqttkit import listening
from tests.support.serverkit import (
    Built,
    build,
    infer_body,
    init_store,
    install,
    post_json,
    serve_process,
)
from tests.support.xgbmodels import features, run

STATUS = "edgebundle/default/devices/{}/status"
TELEMETRY = "edgebundle/default/devices/{}/telemetry"
INFER = "/v2/models/credit/infer"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture(scope="module")
def bundles(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Built]:
    workdir = tmp_path_factory.mktemp("fleet-bundles")
    v1 = build(keys, workdir, "credit", "1.0.0", rounds=5, baseline=True)
    v2 = build(keys, workdir, "credit", "2.0.0", rounds=8, baseline=True)
    return v1, v2


def device(keys: KeyFiles, root: Path, bundle: Path | None = None) -> Path:
    store = init_store(keys, root)
    if bundle is not None:
        install(store, bundle)
    return store


def models_of(status: dict[str, object]) -> dict[str, str]:
    return {m["name"]: m["version"] for m in status["models"]}  # type: ignore[attr-defined,index]


def test_status_is_retained_and_the_last_will_marks_a_killed_device_offline(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    store = device(keys, tmp_path / "store", bundles[0].bundle)
    topic = STATUS.format("shop-7")
    with serve_process(
        store, tmp_path / "serve.log", "--fleet", broker.url, "--device-id", "shop-7"
    ) as server:
        with listening(broker.port, topic) as live:
            status = live.wait_for(topic, lambda s: s["online"]).json()
        assert models_of(status) == {"credit": "1.0.0"}
        assert status["health"] == "ready" and status["device"] == "shop-7"
        assert status["runtime"] and status["onnxruntime"]
        # A client that subscribes later gets the retained document at once.
        with listening(broker.port, topic) as late:
            retained = late.wait_for(topic, lambda s: s["online"], timeout=5)
        assert retained.retain
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        with listening(broker.port, topic) as after:
            will = after.wait_for(topic, lambda s: not s["online"], timeout=10).json()
        assert will["device"] == "shop-7" and models_of(will) == {"credit": "1.0.0"}
        assert will["health"] == "stopped"


def test_sigterm_says_offline_too(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    store = device(keys, tmp_path / "store", bundles[0].bundle)
    topic = STATUS.format("shop-8")
    with listening(broker.port, topic) as live:
        with serve_process(
            store, tmp_path / "serve.log", "--fleet", broker.url, "--device-id", "shop-8"
        ) as server:
            live.wait_for(topic, lambda s: s["online"])
            server.proc.terminate()
            assert server.proc.wait(timeout=20) == 0
        live.wait_for(topic, lambda s: not s["online"], timeout=10)


def publish(bundle: Path, channel: Path, keys: KeyFiles, *extra: str) -> str:
    args = ["publish", str(bundle), "--channel", str(channel), "--key", str(keys.private)]
    proc = run("bundle", [*args, *extra])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_notice_makes_the_device_update_within_5_seconds(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    v1, v2 = bundles
    topic = STATUS.format("till-1")
    with served(tmp_path / "channel") as channel:
        publish(v1.bundle, channel.directory, keys)
        store = device(keys, tmp_path / "store")
        with (
            listening(broker.port, topic) as live,
            serve_process(
                store,
                tmp_path / "serve.log",
                "--channel", channel.url,
                "--poll", "3600",  # the first pass at start, the next one in 30-90 minutes
                "--fleet", broker.url,
                "--device-id", "till-1",
                "--notice-jitter", "0.5",
            ),
        ):  # fmt: skip
            live.wait_for(topic, lambda s: models_of(s) == {"credit": "1.0.0"})
            out = publish(v2.bundle, channel.directory, keys, "--notify", broker.url)
            assert "notified" in out
            published = time.monotonic()
            updated = live.wait_for(topic, lambda s: models_of(s) == {"credit": "2.0.0"})
            assert updated.at - published < 5.0
            last = updated.json()["last_update"]
            assert last["result"] == "installed" and last["serial"] == 2


def test_with_the_broker_down_scoring_goes_on_and_telemetry_follows_bounded(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    store = device(keys, tmp_path / "store", bundles[0].bundle)
    topic = TELEMETRY.format("van-3")
    body = infer_body(features(4, seed=3))
    with serve_process(
        store,
        tmp_path / "serve.log",
        "--fleet", broker.url,
        "--device-id", "van-3",
        "--telemetry-interval", "0.5",
        "--telemetry-buffer", "4",
    ) as server:  # fmt: skip
        with listening(broker.port, topic) as live:
            assert post_json(server.port, INFER, body).status == 200
            first = live.wait_for(topic, lambda t: t["models"][0]["requests"] > 0).json()
        assert first["models"][0]["drift"]["rows"] == 4
        broker.stop()
        answered = [post_json(server.port, INFER, body).status for _ in range(30)]
        assert answered == [200] * 30
        outbox = store / "fleet" / "outbox"
        deadline = time.monotonic() + 20
        while len(list(outbox.glob("*.json"))) < 4:
            assert time.monotonic() < deadline, "reports did not pile up in the outbox"
            time.sleep(0.1)
        time.sleep(2.0)  # several more reports: the oldest go
        assert len(list(outbox.glob("*.json"))) <= 4
        broker.start()
        with listening(broker.port, topic) as after:
            # The buffer kept the newest reports; the one after the loss counts it.
            report = after.wait_for(topic, lambda t: t["dropped"] > 0, timeout=40).json()
            assert report["device"] == "van-3"
            time.sleep(1.5)
            sequences = [m.json()["sequence"] for m in after.on(topic)]
        assert sequences == sorted(set(sequences))
        assert len(list(outbox.glob("*.json"))) <= 2
        assert "lost the broker" in server.stderr()


def test_tls_with_a_client_certificate(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    store = device(keys, tmp_path / "store", bundles[0].bundle)
    certs = broker.certificates
    topic = STATUS.format("kiosk-2")
    with listening(broker.port, topic) as live, serve_process(
        store,
        tmp_path / "serve.log",
        "--fleet", broker.tls_url,
        "--device-id", "kiosk-2",
        "--fleet-ca", str(certs.ca),
        "--fleet-cert", str(certs.client_cert),
        "--fleet-key", str(certs.client_key),
    ):  # fmt: skip
        live.wait_for(topic, lambda s: s["online"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fleet", "mqtt://user:secret@127.0.0.1"], "must not hold a password"),
        (["--fleet", "http://127.0.0.1"], "must start with mqtt://"),
        (["--fleet", "mqtt://127.0.0.1/a/b"], "fleet name"),
        (["--fleet", "mqtt://127.0.0.1", "--device-id", "a/b"], "device id"),
        (["--fleet", "mqtts://127.0.0.1", "--fleet-ca", "/nonexistent.pem"], "TLS files"),
    ],
)
def test_bad_fleet_options_are_one_line_usage_errors(
    keys: KeyFiles, tmp_path: Path, args: list[str], message: str
) -> None:
    store = device(keys, tmp_path / "store")
    proc = run("bundle-runtime", ["serve", "--store", str(store), "--port", "0", *args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_status_json_shape_is_the_declared_document(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    from edgebundle.runtime.fleet.documents import DeviceStatus, Telemetry, parse

    store = device(keys, tmp_path / "store", bundles[0].bundle)
    status_topic, telemetry_topic = STATUS.format("d-1"), TELEMETRY.format("d-1")
    with listening(broker.port, status_topic, telemetry_topic) as live, serve_process(
        store, tmp_path / "serve.log", "--fleet", broker.url, "--device-id", "d-1",
        "--telemetry-interval", "0.3",
    ):  # fmt: skip
        status = live.wait_for(status_topic, lambda s: s["online"])
        telemetry = live.wait_for(telemetry_topic, lambda t: True)
    assert parse(DeviceStatus, status.payload, "status").models[0].version == "1.0.0"
    assert parse(Telemetry, telemetry.payload, "telemetry").device == "d-1"
    assert json.loads(telemetry.payload)["models"][0]["latency"] is None  # no request yet


def fleet_status(broker: Broker, ledger: Path, *extra: str) -> dict[str, Any]:
    args = ["fleet", "status", "--broker", broker.url, "--ledger", str(ledger), "--json"]
    proc = run("bundle", [*args, "--wait", "3", *extra])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_fleet_status_versions_offline_failures_traffic_and_drift(
    keys: KeyFiles, tmp_path: Path, broker: Broker, bundles: tuple[Built, Built]
) -> None:
    v1, v2 = bundles
    ledger = tmp_path / "ledger.json"
    assert fleet_status(broker, ledger)["devices"] == []  # opens the collecting session
    broken = run(
        "bundle",
        ["make-broken", str(v2.bundle), "--version", "3.0.0", "--key", str(keys.private),
         "--out", str(tmp_path / "broken")],
    )  # fmt: skip
    assert broken.returncode == 0, broken.stderr
    x = features(20, seed=11)
    with served(tmp_path / "channel") as channel, listening(broker.port, "#") as live:
        publish(v1.bundle, channel.directory, keys)
        publish(v2.bundle, channel.directory, keys)
        common = ("--fleet", broker.url, "--telemetry-interval", "0.3")
        with (
            serve_process(
                device(keys, tmp_path / "a", v1.bundle), tmp_path / "a.log", *common,
                "--device-id", "a",
            ) as a,
            serve_process(
                device(keys, tmp_path / "b"), tmp_path / "b.log", *common, "--device-id", "b",
                "--channel", channel.url, "--poll", "3600", "--notice-jitter", "0.2",
            ),
            serve_process(
                device(keys, tmp_path / "c", v1.bundle), tmp_path / "c.log", *common,
                "--device-id", "c",
            ) as c,
        ):  # fmt: skip
            assert post_json(a.port, INFER, infer_body(x)).status == 200
            live.wait_for(TELEMETRY.format("a"), lambda t: t["models"][0]["requests"] == 1)
            live.wait_for(STATUS.format("b"), lambda s: models_of(s) == {"credit": "2.0.0"})
            publish(
                tmp_path / "broken" / "credit-3.0.0.bundle", channel.directory, keys,
                "--notify", broker.url,
            )  # fmt: skip
            live.wait_for(
                STATUS.format("b"), lambda s: (s["last_update"] or {}).get("result") == "failed"
            )
            live.wait_for(STATUS.format("c"), lambda s: s["online"])
            c.proc.send_signal(signal.SIGKILL)
            live.wait_for(STATUS.format("c"), lambda s: not s["online"])
            view = fleet_status(
                broker, ledger, "--channel", str(channel.directory), "--trust", str(keys.public),
                "--html", str(tmp_path / "html"),
            )  # fmt: skip
            again = fleet_status(broker, ledger)
            text = run("bundle", ["fleet", "status", "--broker", broker.url, "--ledger",
                                  str(ledger), "--wait", "1"])  # fmt: skip
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    assert "fleet default: 3 device(s), 2 online, 1 offline" in text.stdout
    assert "  b: credit 3.0.0: refused and marked bad" in text.stdout
    versions = {(v["name"], v["version"]): (v["devices"], v["online"]) for v in view["versions"]}
    assert versions == {("credit", "1.0.0"): (2, 1), ("credit", "2.0.0"): (1, 1)}
    assert view["offline"] == ["c"]
    [failed] = view["failed_updates"]
    assert (failed["device"], failed["name"], failed["version"]) == ("b", "credit", "3.0.0")
    assert "selftest" in failed["detail"]
    totals = {(t["name"], t["version"]): t for t in view["telemetry"]["versions"]}
    assert totals["credit", "1.0.0"]["requests"] == 1
    assert totals["credit", "1.0.0"]["drift"]["rows"] == 20
    [drift] = [d for d in view["drift"] if d["version"] == "1.0.0"]
    assert drift["rows"]["since_start"] == 20 and drift["baseline"] and drift["features"]
    assert (tmp_path / "html" / "credit-1.0.0.html").read_text().startswith("<!DOCTYPE html>")
    # The ledger counts each report once, across runs.
    totals = {(t["name"], t["version"]): t for t in again["telemetry"]["versions"]}
    assert totals["credit", "1.0.0"]["requests"] == 1
    assert totals["credit", "1.0.0"]["drift"]["rows"] == 20
