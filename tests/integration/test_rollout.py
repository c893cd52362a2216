"""Staged rollouts and revocations through the real CLIs: `bundle publish --rollout`,
`bundle rollout --to/--halt/--revoke/--halt-if-failures`, devices updating with
`bundle-runtime update --device-id` and serving with `--fleet` against a real Mosquitto."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgebundle.runtime.ota.channel import INDEX_NAME, read_index
from edgebundle.runtime.ota.revocation import candidates
from edgebundle.runtime.ota.rollout import ROLLOUT_NAME, bucket, read_rollout
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys, load_public_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.broker import Broker, running_broker
from tests.support.mqttkit import listening
from tests.support.serverkit import Built, build, init_store, serve_process
from tests.support.xgbmodels import run

DEVICES = [f"shop-{i:03d}" for i in range(200)]
V2 = Version.parse("2.0.0")


@pytest.fixture(scope="module")
def versions(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    workdir = tmp_path_factory.mktemp("rollout-bundles")
    return {v: build(keys, workdir, "credit", v, rounds=4 + n) for n, v in
            enumerate(("1.0.0", "2.0.0", "3.0.0"))}  # fmt: skip


def bundle(*args: str) -> str:
    proc = run("bundle", list(args))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def publish(built: Built, channel: Path, keys: KeyFiles, *extra: str) -> str:
    return bundle("publish", str(built.bundle), "--channel", str(channel), "--key",
                  str(keys.private), *extra)  # fmt: skip


def rollout(channel: Path, keys: KeyFiles, version: str, *extra: str) -> str:
    return bundle("rollout", "credit", version, "--channel", str(channel), "--key",
                  str(keys.private), *extra)  # fmt: skip


def taking(channel: Path, keys: KeyFiles, version: Version) -> set[str]:
    """The simulated devices that would install ``version`` from the channel as it is."""
    trusted = TrustedKeys([load_public_key(keys.public)])
    now = datetime.now(timezone.utc)
    index = read_index((channel / INDEX_NAME).read_bytes(), trusted, last_serial=0, now=now)
    path = channel / ROLLOUT_NAME
    staged = read_rollout(path.read_bytes(), trusted) if path.exists() else None
    assert staged is None or staged.serial == index.serial
    return {
        d for d in DEVICES if any(e.version == version for e in candidates(index, staged, d))
    }


def test_a_10_percent_rollout_reaches_about_10_percent_and_growing_only_adds(
    keys: KeyFiles, tmp_path: Path, versions: dict[str, Built]
) -> None:
    channel = tmp_path / "channel"
    publish(versions["1.0.0"], channel, keys)
    publish(versions["2.0.0"], channel, keys, "--rollout", "10%")
    # The index itself, which devices of the previous release read alone, does not list it.
    envelope = json.loads((channel / INDEX_NAME).read_text())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    assert payload["format"] == "edgebundle.channel/1"
    assert [b["version"] for b in payload["bundles"]] == ["1.0.0"]
    ten = taking(channel, keys, V2)
    assert 10 <= len(ten) <= 30, len(ten)
    assert "50%" in rollout(channel, keys, "2.0.0", "--to", "50%")
    fifty = taking(channel, keys, V2)
    assert ten < fifty and 80 <= len(fifty) <= 120
    refused = run("bundle", ["rollout", "credit", "2.0.0", "--channel", str(channel), "--key",
                             str(keys.private), "--to", "20%"])  # fmt: skip
    assert refused.returncode == 1 and "only grows" in refused.stderr
    rollout(channel, keys, "2.0.0", "--halt")
    assert taking(channel, keys, V2) == set()  # no further device starts it
    rollout(channel, keys, "2.0.0", "--to", "100%")
    assert taking(channel, keys, V2) == set(DEVICES)
    assert not (channel / ROLLOUT_NAME).exists()


def update(store: Path, channel: Path, device: str) -> dict[str, object]:
    proc = run("bundle-runtime", ["update", "--store", str(store), "--channel", str(channel),
                                  "--device-id", device, "--json"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def active(store: Path) -> str:
    return str(Store.open(store).state().models["credit"].active)


def test_a_revoked_version_is_left_by_every_device_running_it_and_never_fetched_again(
    keys: KeyFiles, tmp_path: Path, versions: dict[str, Built]
) -> None:
    channel = tmp_path / "channel"
    inside = next(d for d in DEVICES if bucket(d, "credit", V2) < 1000)
    outside = next(d for d in DEVICES if bucket(d, "credit", V2) >= 1000)
    stores = {d: init_store(keys, tmp_path / d) for d in (inside, outside)}
    publish(versions["1.0.0"], channel, keys)
    for device, store in stores.items():
        update(store, channel, device)
    publish(versions["2.0.0"], channel, keys, "--rollout", "10%")
    for device, store in stores.items():
        update(store, channel, device)
    assert active(stores[inside]) == "2.0.0" and active(stores[outside]) == "1.0.0"
    assert "revoked" in rollout(channel, keys, "2.0.0", "--revoke", "wrong scores in EU")
    report = update(stores[inside], channel, inside)
    assert report["revoked"] == [
        "credit 2.0.0: revoked (wrong scores in EU); rolled back to 1.0.0"
    ]
    assert active(stores[inside]) == "1.0.0"
    model = Store.open(stores[inside]).state().models["credit"]
    assert V2 in model.bad
    update(stores[outside], channel, outside)
    assert active(stores[outside]) == "1.0.0"
    again = run("bundle", ["rollout", "credit", "2.0.0", "--channel", str(channel), "--key",
                           str(keys.private), "--to", "50%"])  # fmt: skip
    assert again.returncode == 1 and "not being rolled out" in again.stderr
    publish(versions["3.0.0"], channel, keys)
    for device, store in stores.items():
        update(store, channel, device)
        assert active(store) == "3.0.0"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as broker:
        yield broker


def test_a_failure_share_above_the_threshold_halts_the_rollout(
    keys: KeyFiles, tmp_path: Path, versions: dict[str, Built], broker: Broker
) -> None:
    channel = tmp_path / "channel"
    publish(versions["1.0.0"], channel, keys)
    v3 = Version.parse("3.0.0")
    chosen = [d for d in DEVICES if bucket(d, "credit", v3) < 5000][:2]
    bundle("make-broken", str(versions["2.0.0"].bundle), "--version", "3.0.0",
                    "--key", str(keys.private), "--out", str(tmp_path / "broken"))  # fmt: skip
    statuses = "edgebundle/default/devices/+/status"
    with ExitStack() as stack, listening(broker.port, statuses) as live:
        for device in chosen:
            store = init_store(keys, tmp_path / device)
            stack.enter_context(serve_process(
                store, tmp_path / f"{device}.log", "--channel", str(channel), "--poll", "3600",
                "--fleet", broker.url, "--device-id", device, "--notice-jitter", "0.2",
            ))  # fmt: skip
        for device in chosen:
            live.wait_for(f"edgebundle/default/devices/{device}/status",
                          lambda s: [m["version"] for m in s["models"]] == ["1.0.0"])  # fmt: skip
        out = bundle(
            "publish", str(tmp_path / "broken" / "credit-3.0.0.bundle"), "--channel",
            str(channel), "--key", str(keys.private), "--rollout", "50%",
        )  # fmt: skip
        assert "serial" in out
        watched = bundle(
            "rollout", "credit", "3.0.0", "--channel", str(channel), "--key", str(keys.private),
            "--to", "60%", "--notify", broker.url, "--halt-if-failures", "2%", "--watch", "60",
        )  # fmt: skip
    assert "halting" in watched and "halted at 60%" in watched
    envelope = json.loads((channel / ROLLOUT_NAME).read_text())
    staged = json.loads(base64.b64decode(envelope["payload"]))["staged"]
    assert [s["halted"] for s in staged] == [True]
