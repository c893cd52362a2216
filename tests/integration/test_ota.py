"""Over-the-air updates: one test per attack or fault, each asserting the exact refusal and
that the store did not change. Channels are served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import http.server
import json
import random
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgebundle.builder.publish import publish
from edgebundle.runtime.bundle import read_members_unverified
from edgebundle.runtime.container import write_bundle
from edgebundle.runtime.errors import ChannelError, RollbackError, SignatureError
from edgebundle.runtime.ota.channel import ChannelEntry, ChannelIndex, bundle_file
from edgebundle.runtime.ota.fetch import FetchLimits
from edgebundle.runtime.ota.updater import Poller, update_once
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.channelkit import entry_for, served, write_index
from tests.support.store_helpers import (
    Spec,
    audit_events,
    build_bundles,
    snapshot,
    with_wrong_selftest,
)
from tests.support.xgbmodels import run, train

NOW = datetime.now(timezone.utc)
V100, V110, V120, V130 = (Spec("credit", v) for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"))
V110_FLOAT = Spec("credit", "1.1.0", precision="float")
V110_NEW_KEY = Spec("credit", "1.1.0", signer="other_keys")


@pytest.fixture(scope="module")
def bundles(
    keys: KeyFiles, other_keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory
) -> dict[Spec, Path]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8).path
    specs = [V100, V110, V120, V130, V110_FLOAT, V110_NEW_KEY]
    signers = {"keys": keys, "other_keys": other_keys}
    return build_bundles(model, specs, signers, tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """A channel directory and its URL on a real loopback HTTP server."""
    with served(tmp_path / "channel") as c:
        yield c.directory, c.url, c.behaviours


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path]) -> Store:
    store = Store.init(tmp_path / "store", [keys.public])
    store.install(bundles[V100].read_bytes(), origin="factory")
    return store


def put(
    bundle: Path, channel: Path, keys: KeyFiles, expires: timedelta = timedelta(days=1)
) -> None:
    publish(bundle, channel, [load_private_key(keys.private, None)], expires, NOW)


def active(store: Store) -> str:
    return str(store.state().models["credit"].active)


# --- the happy paths -----------------------------------------------------------------------


def test_update_installs_newer_version(
    store: Store, channel: Any, keys: KeyFiles, bundles: dict[Spec, Path]
) -> None:
    directory, url, _ = channel
    put(bundles[V100], directory, keys)
    put(bundles[V110], directory, keys)
    report = update_once(store, url)
    assert active(store) == "1.1.0" and not report.failed
    assert store.ota_state().last_serial == 2
    assert update_once(store, url).outcomes == ()  # up to date: nothing fetched


def test_device_offline_for_months_installs_only_the_newest(
    store: Store, channel: Any, keys: KeyFiles, bundles: dict[Spec, Path]
) -> None:
    directory, url, _ = channel
    for spec in (V110, V120, V130):
        put(bundles[spec], directory, keys)
    report = update_once(store, url)
    assert [(o.version, o.installed) for o in report.outcomes] == [("1.3.0", True)]
    installed = [e.version for e in audit_events(store.root) if e.event == "installed"]
    assert installed == ["1.0.0", "1.3.0"]


def test_update_cli_over_file_url(
    store: Store, tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path]
) -> None:
    directory = tmp_path / "file-channel"
    put(bundles[V120], directory, keys)
    proc = run(
        "bundle-runtime", ["update", "--store", str(store.root), "--channel", directory.as_uri()]
    )
    assert proc.returncode == 0, proc.stderr
    assert "credit 1.2.0: installed (previous: 1.0.0), selftest passed" in proc.stdout
    assert active(store) == "1.2.0"
    again = run(
        "bundle-runtime",
        ["update", "--store", str(store.root), "--channel", directory.as_uri(), "--json"],
    )
    assert json.loads(again.stdout) == {
        "serial": store.ota_state().last_serial,
        "key_set_adopted": None,
        "outcomes": [],
        "revoked": [],
    }


# --- attacks and faults on the index ---------------------------------------------------------


def refused(store: Store, url: str, error: type[Exception], match: str, **kwargs: Any) -> None:
    before = snapshot(store.root)
    with pytest.raises(error, match=match):
        update_once(store, url, **kwargs)
    assert snapshot(store.root) == before
    assert active(store) == "1.0.0"


def test_unsigned_index(store: Store, channel: Any, keys: KeyFiles, bundles: Any) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys)
    doc = json.loads((directory / "index.json").read_bytes())
    doc["signatures"] = []
    (directory / "index.json").write_text(json.dumps(doc))
    refused(store, url, SignatureError, "malformed index.json")


def test_index_with_forged_payload(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys)
    doc = json.loads((directory / "index.json").read_bytes())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["serial"] = 99
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (directory / "index.json").write_text(json.dumps(doc))
    refused(store, url, SignatureError, "no valid signature")


def test_index_signed_by_unknown_key(
    store: Store, channel: Any, other_keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    data = bundles[V110].read_bytes()
    _write_channel(directory, other_keys, [(_entry(V110, data), data)], serial=1)
    refused(store, url, SignatureError, "no valid signature by a trusted key")


def test_replayed_older_index(store: Store, channel: Any, keys: KeyFiles, bundles: Any) -> None:
    directory, url, _ = channel
    put(bundles[V100], directory, keys)
    old_index = (directory / "index.json").read_bytes()
    put(bundles[V110], directory, keys)
    update_once(store, url)
    store.rollback("credit")  # back on 1.0.0; the device has seen serial 2
    (directory / "index.json").write_bytes(old_index)
    refused(store, url, RollbackError, "replayed index")


def test_expired_index(store: Store, channel: Any, keys: KeyFiles, bundles: Any) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys, expires=timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    refused(store, url, ChannelError, "expired", now=lambda: later)


def test_oversized_index(store: Store, channel: Any, keys: KeyFiles, bundles: Any) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys)
    refused(store, url, ChannelError, "cap", limits=FetchLimits(max_index_bytes=100))


def test_unreachable_channel(store: Store) -> None:
    refused(store, "http://127.0.0.1:9/", ChannelError, "cannot fetch")


def test_slow_server_times_out(store: Store, channel: Any, keys: KeyFiles, bundles: Any) -> None:
    directory, url, behaviours = channel
    put(bundles[V110], directory, keys)

    def stall(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(3)

    behaviours["/index.json"] = stall
    refused(store, url, ChannelError, "cannot fetch", limits=FetchLimits(read_timeout=0.5))


# --- attacks and faults on the bundle --------------------------------------------------------


def bundle_refused(store: Store, url: str, match: str) -> None:
    before = snapshot(store.root)
    report = update_once(store, url)
    assert report.failed and match in report.outcomes[0].detail, report.lines()
    after = snapshot(store.root)
    # the index itself was valid: only its serial is recorded (ota.json)
    assert after.state == before.state
    assert set(after.files) - {"ota.json"} == set(before.files) - {"ota.json"}
    assert active(store) == "1.0.0"


def test_bundle_bytes_differ_from_index(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys)
    path = directory / bundle_file("credit", Version.parse("1.1.0"))
    data = bytearray(path.read_bytes())
    data[600] ^= 1
    path.write_bytes(bytes(data))
    bundle_refused(store, url, "differs from the index")


def test_endless_download_is_cut_at_declared_size(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, behaviours = channel
    put(bundles[V110], directory, keys)

    def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the body never ends
        try:
            while True:
                handler.wfile.write(b"\0" * 65536)
        except OSError:
            pass

    behaviours["/" + bundle_file("credit", Version.parse("1.1.0"))] = endless
    bundle_refused(store, url, "sent more than")


def test_valid_older_bundle_offered_after_newer(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    put(bundles[V120], directory, keys)
    update_once(store, url)
    assert active(store) == "1.2.0"
    # the attacker (with a valid older index entry) offers 1.1.0 as the newest
    new_channel = directory.parent / "replay"
    put(bundles[V110], new_channel, keys)
    shutil.rmtree(directory)
    shutil.copytree(new_channel, directory)
    _resign(directory, keys, serial=5)
    before = snapshot(store.root)
    assert update_once(store, url).outcomes == ()  # never a downgrade
    assert snapshot(store.root).state == before.state and active(store) == "1.2.0"
    with pytest.raises(RollbackError, match="already installed"):
        store.install(bundles[V110].read_bytes(), origin="direct")


def test_same_version_other_content(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    put(bundles[V110], directory, keys)
    update_once(store, url)
    store.rollback("credit")  # 1.1.0 is now previous, 1.0.0 active
    other = directory.parent / "other"
    put(bundles[V110_FLOAT], other, keys)  # another 1.1.0, other bytes
    shutil.rmtree(directory)
    shutil.copytree(other, directory)
    _resign(directory, keys, serial=5)
    bundle_refused(store, url, "same version, other content")


def test_mix_and_match_model_of_one_version_with_manifest_of_another(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    v110 = read_members_unverified(bundles[V110].read_bytes())
    v110_float = read_members_unverified(bundles[V110_FLOAT].read_bytes())
    payload = {"model.onnx": v110_float["model.onnx"], "selftest.json": v110["selftest.json"]}
    mixed = write_bundle(v110["manifest.json"], v110["manifest.sig"], payload, mtime=0)
    _write_channel(directory, keys, [(_entry(V110, mixed), mixed)], serial=1)
    bundle_refused(store, url, "model.onnx")


def test_index_entry_pointing_at_another_versions_bundle(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, _ = channel
    data = bundles[V110].read_bytes()
    _write_channel(directory, keys, [(_entry(V130, data), data)], serial=1)
    bundle_refused(store, url, "mix-and-match")


def test_bundle_failing_selftest_is_marked_bad_and_not_retried(
    store: Store, channel: Any, keys: KeyFiles, bundles: Any
) -> None:
    directory, url, behaviours = channel
    broken = with_wrong_selftest(bundles[V110].read_bytes(), keys, "1.4.0")
    path = directory.parent / "credit-1.4.0.bundle"
    path.write_bytes(broken)
    put(path, directory, keys)
    report = update_once(store, url)
    assert "marked bad" in report.outcomes[0].detail and active(store) == "1.0.0"
    assert [str(v) for v in store.state().models["credit"].bad] == ["1.4.0"]
    events = [(e.event, e.version) for e in audit_events(store.root)]
    assert ("refused", "1.4.0") in events and ("marked-bad", "1.4.0") in events
    fetched: list[str] = []

    def record(handler: http.server.BaseHTTPRequestHandler) -> None:
        fetched.append(handler.path)
        handler.send_error(404)

    behaviours["/" + bundle_file("credit", Version.parse("1.4.0"))] = record
    assert update_once(store, url).outcomes == () and fetched == []


def _entry(spec: Spec, data: bytes) -> ChannelEntry:
    return entry_for(spec.name, spec.version, data)


def _write_channel(
    directory: Path, signer: KeyFiles, files: list[tuple[ChannelEntry, bytes]], serial: int
) -> None:
    write_index(directory, [load_private_key(signer.private, None)], files, serial)


def _resign(directory: Path, keys: KeyFiles, serial: int) -> None:
    doc = json.loads((directory / "index.json").read_bytes())
    index = ChannelIndex.from_dict(json.loads(base64.b64decode(doc["payload"])))
    files = [(e, (directory / e.file).read_bytes()) for e in index.bundles]
    _write_channel(directory, keys, files, serial)


def test_poll_interval_is_jittered_and_backs_off_with_full_jitter(tmp_path: Path) -> None:
    poller = Poller(
        store_root=tmp_path,
        channel="file:///nowhere",
        interval=10.0,
        max_backoff=60.0,
        rng=random.Random(7),
    )
    calm = [poller.next_delay(0) for _ in range(500)]
    # spread over the whole band, so a fleet does not poll in lockstep after a publish
    assert 5.0 <= min(calm) < 6.0 and 14.0 < max(calm) < 15.0
    for failures, ceiling in ((1, 20.0), (2, 40.0), (3, 60.0), (50, 60.0)):
        waits = [poller.next_delay(failures) for _ in range(500)]
        # full jitter: anywhere from the floor up to the doubled, capped ceiling
        assert 1.0 <= min(waits) < 0.2 * ceiling and 0.8 * ceiling < max(waits) <= ceiling
