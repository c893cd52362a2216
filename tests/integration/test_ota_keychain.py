"""Key rotation over the air: the chain a device follows, and one test per attack on it, each
asserting the refusal and that the store did not change (python-tuf's
``test_updater_top_level_update.py`` is the model). Channels are served on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.keys import generate_keypair
from edgebundle.builder.publish import publish, resign_bundle, rotate_keys
from edgebundle.runtime.errors import ChannelError, ManifestError, SignatureError
from edgebundle.runtime.ota.channel import Envelope
from edgebundle.runtime.ota.fetch import FetchLimits
from edgebundle.runtime.ota.keychain import KEYS_CONTEXT, STATEMENT_FORMAT, KeySet
from edgebundle.runtime.ota.updater import update_once
from edgebundle.runtime.signing import keyid, load_private_key, public_pem
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.channelkit import Channel, entry_for, served, write_index
from tests.support.store_helpers import Spec, build_bundles, snapshot
from tests.support.xgbmodels import run, train

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)
V100, V110, V120, V130 = (Spec("credit", v) for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"))


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    """Key pairs by role: k0 provisioned, k1 and k2 the keys of two rotations, x an attacker's,
    k3 and k4 spares for k-of-n sets."""
    pairs = {}
    for name in ("k0", "k1", "k2", "k3", "k4", "x"):
        private, public = generate_keypair(tmp_path_factory.mktemp(name), None)
        pairs[name] = KeyFiles(private=private, public=public)
    return pairs


@pytest.fixture(scope="module")
def built(k: dict[str, KeyFiles], tmp_path_factory: pytest.TempPathFactory) -> dict[Spec, bytes]:
    """Every version built once, signed by k0; tests re-sign them as each case needs."""
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=6).path
    specs = [V100, V110, V120, V130]
    paths = build_bundles(model, specs, {"keys": k["k0"]}, tmp_path_factory.mktemp("bundles"))
    return {spec: path.read_bytes() for spec, path in paths.items()}


def private(*files: KeyFiles) -> list[Ed25519PrivateKey]:
    return [load_private_key(f.private, None) for f in files]


def signed(built: dict[Spec, bytes], spec: Spec, *signers: KeyFiles) -> bytes:
    return resign_bundle(built[spec], private(*signers))


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Channel]:
    with served(tmp_path / "channel") as c:
        yield c


@pytest.fixture
def store(tmp_path: Path, k: dict[str, KeyFiles], built: dict[Spec, bytes]) -> Store:
    """A device provisioned with k0, running 1.0.0."""
    store = Store.init(tmp_path / "store", [k["k0"].public])
    store.install(built[V100], origin="factory")
    return store


def put(channel: Channel, data: bytes, signers: Sequence[KeyFiles], tmp: Path) -> None:
    path = tmp / f"upload-{len(list(tmp.glob('upload-*')))}.bundle"
    path.write_bytes(data)
    publish(path, channel.directory, private(*signers), DAY, NOW)


def rotate(
    channel: Channel,
    current: Sequence[KeyFiles],
    new: Sequence[KeyFiles],
    threshold: int = 1,
    expires: timedelta = timedelta(days=365),
    now: datetime = NOW,
) -> KeySet:
    return rotate_keys(channel.directory, private(*current), private(*new), threshold, expires, now)


def active(store: Store) -> str:
    return str(store.state().models["credit"].active)


def refused(store: Store, url: str, error: type[Exception], match: str, **kwargs: Any) -> None:
    """The pass raises ``error`` and the store is exactly as it was (trust.json included)."""
    before = snapshot(store.root), (store.root / "trust.json").read_bytes()
    with pytest.raises(error, match=match):
        update_once(store, url, **kwargs)
    assert (snapshot(store.root), (store.root / "trust.json").read_bytes()) == before


# --- what the chain is for -------------------------------------------------------------------


def test_a_device_passes_three_updates_after_a_rotation(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    """The fleet lock-out this design fixes: the pass after a rotation, and every one after."""
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    first = update_once(store, channel.url)
    assert first.key_rotation == 1 and active(store) == "1.1.0" and not first.failed
    for _ in range(3):
        again = update_once(store, channel.url)
        assert again.key_rotation is None and again.outcomes == () and not again.failed
    assert store.trust().keyids() == [keyid(private(k["k1"])[0].public_key())]


def test_a_device_follows_two_rotations_in_a_row(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    assert update_once(store, channel.url).key_rotation == 1
    rotate(channel, [k["k1"]], [k["k2"]])
    put(channel, signed(built, V120, k["k2"]), [k["k2"]], tmp_path)
    report = update_once(store, channel.url)
    assert report.key_rotation == 2 and active(store) == "1.2.0"
    assert update_once(store, channel.url).outcomes == ()


def test_a_device_offline_across_two_rotations_catches_up_in_one_pass(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    rotate(channel, [k["k1"]], [k["k2"]])
    put(channel, signed(built, V120, k["k2"]), [k["k2"]], tmp_path)
    report = update_once(store, channel.url)
    assert report.key_rotation == 2 and active(store) == "1.2.0" and not report.failed
    assert store.trust().version == 2


def test_bundles_published_before_a_rotation_are_installable_after_it(
    tmp_path: Path, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    """rotate-keys re-signs the listed bundles: a device new to the model gets it."""
    put(channel, built[V110], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    fresh = Store.init(tmp_path / "fresh", [k["k0"].public])
    report = update_once(fresh, channel.url)
    assert [(o.version, o.installed) for o in report.outcomes] == [("1.1.0", True)]


def test_a_bundle_signed_by_a_rotated_out_key_still_loads_once_installed(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    update_once(store, channel.url)
    store.rollback("credit")  # 1.0.0, signed by k0 alone, is pinned by its sha256
    assert str(store.load_active("credit").version) == "1.0.0"


def test_a_device_provisioned_with_todays_key_joins_the_chain_there(
    tmp_path: Path, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    rotate(channel, [k["k1"]], [k["k2"]])
    put(channel, signed(built, V120, k["k2"]), [k["k2"]], tmp_path)
    device = Store.init(tmp_path / "new-device", [k["k2"].public])
    report = update_once(device, channel.url)
    assert report.key_rotation == 2 and active(device) == "1.2.0"


def test_a_device_provisioned_from_a_key_statement_is_anchored_at_it(
    tmp_path: Path, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    rotate(channel, [k["k1"]], [k["k2"], k["k3"], k["k4"]], threshold=2)
    put(channel, signed(built, V120, k["k2"], k["k3"]), [k["k2"], k["k4"]], tmp_path)
    device = Store.init(tmp_path / "new-device", [channel.directory / "keys" / "2.json"])
    assert (device.trust().version, device.trust().threshold) == (2, 2)
    report = update_once(device, channel.url)
    assert report.key_rotation is None and active(device) == "1.2.0"


def test_a_legacy_channel_and_store_migrate_with_one_rotate_keys(
    tmp_path: Path, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    """Before the chain: a single keys.json on the channel; on the device, keys/<keyid>.pub
    and ota.json carrying the key set version it adopted from it."""
    device = Store.init(tmp_path / "legacy", [k["k1"].public])
    device.install(signed(built, V100, k["k1"]), origin="factory")
    (device.root / "trust.json").unlink()
    legacy_keys = device.root / "keys"
    legacy_keys.mkdir()
    k1 = private(k["k1"])[0].public_key()
    (legacy_keys / f"{keyid(k1)}.pub").write_bytes(public_pem(k1))
    ota = {"format": "edgebundle.ota/1", "last_serial": 0, "key_version": 1}
    (device.root / "ota.json").write_text(json.dumps(ota))
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    (channel.directory / "keys.json").write_text("{}")  # what the single-file rotation left

    rotate(channel, [k["k1"]], [k["k1"]])  # the chain starts with the keys devices trust
    assert not (channel.directory / "keys.json").exists()
    report = update_once(device, channel.url)
    assert report.key_rotation == 1 and active(device) == "1.1.0"
    assert not legacy_keys.exists() and device.trust().version == 1
    assert json.loads((device.root / "ota.json").read_text())["format"] == "edgebundle.ota/2"


# --- attacks ---------------------------------------------------------------------------------


def forged_index(
    channel: Channel, signers: Sequence[KeyFiles], bundles: dict[Spec, bytes], serial: int
) -> None:
    files = [(entry_for(s.name, s.version, data), data) for s, data in bundles.items()]
    write_index(channel.directory, private(*signers), files, serial)


def forged_statement(
    channel: Channel, version: int, listed: Sequence[KeyFiles], signers: Sequence[KeyFiles]
) -> None:
    statement = KeySet(
        version=version,
        threshold=1,
        keys=tuple(key.public_key() for key in private(*listed)),
        expires=(NOW + DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    data = Envelope.signed(statement.to_bytes(STATEMENT_FORMAT), private(*signers), KEYS_CONTEXT)
    path = channel.directory / "keys" / f"{version}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data.to_bytes())


@pytest.fixture
def rotated(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> Store:
    """A device that followed one rotation, k0 → k1, and runs 1.1.0."""
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)
    assert update_once(store, channel.url).key_rotation == 1
    return store


def test_rotated_out_key_cannot_sign_an_index(
    rotated: Store, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    forged_index(channel, [k["k0"]], {V130: built[V130]}, serial=99)
    refused(rotated, channel.url, SignatureError, "no valid signature by a trusted key")


def test_rotated_out_key_cannot_sign_a_bundle_the_device_installs(
    rotated: Store, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    forged_index(channel, [k["k1"]], {V130: built[V130]}, serial=99)  # 1.3.0: signed by k0
    before = snapshot(rotated.root).state
    report = update_once(rotated, channel.url)
    assert report.failed and "no valid signature" in report.outcomes[0].detail
    assert snapshot(rotated.root).state == before and active(rotated) == "1.1.0"
    with pytest.raises(SignatureError):
        rotated.install(built[V130], origin="by hand")


def test_rotated_out_key_cannot_write_a_statement_the_device_accepts(
    rotated: Store, channel: Channel, k: dict[str, KeyFiles]
) -> None:
    forged_statement(channel, 2, [k["x"]], [k["k0"], k["x"]])
    refused(rotated, channel.url, SignatureError, "no valid signature by a trusted key")


def test_rotated_out_key_cannot_roll_the_chain_back(
    rotated: Store, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    """The old owner rewrites the chain from the start and signs an index with k0: the device
    never walks backwards, and trusts k1 alone."""
    forged_statement(channel, 1, [k["k0"]], [k["k0"]])
    forged_index(channel, [k["k0"]], {V130: built[V130]}, serial=99)
    refused(rotated, channel.url, SignatureError, "no valid signature by a trusted key")
    assert rotated.trust().version == 1


def test_a_statement_removed_from_the_channel_is_not_forgotten(
    rotated: Store, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    (channel.directory / "keys" / "1.json").unlink()
    forged_index(channel, [k["k0"]], {V130: built[V130]}, serial=99)
    refused(rotated, channel.url, SignatureError, "no valid signature")


def test_a_statement_without_proof_of_possession_is_refused(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    forged_statement(channel, 1, [k["x"]], [k["k0"]])  # nobody proved to hold x's key
    refused(store, channel.url, SignatureError, "not signed by its own new keys")


def test_a_statement_out_of_place_is_refused(rotated: Store, channel: Channel) -> None:
    keys_dir = channel.directory / "keys"
    (keys_dir / "2.json").write_bytes((keys_dir / "1.json").read_bytes())
    refused(rotated, channel.url, ChannelError, "states version 1")


def test_an_expired_newest_statement_freezes_nothing(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]], expires=timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    refused(store, channel.url, ChannelError, "key set version 1 expired", now=lambda: later)


def test_a_threshold_not_met_is_refused(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"], k["k2"], k["k3"]], threshold=2)
    update_once(store, channel.url)
    assert store.trust().threshold == 2
    forged_index(channel, [k["k1"]], {V130: signed(built, V130, k["k1"], k["k2"])}, serial=50)
    refused(store, channel.url, SignatureError, "signed by 1 of the 2 trusted keys required")
    forged_index(channel, [k["k1"], k["k3"]], {V130: signed(built, V130, k["k2"])}, serial=51)
    report = update_once(store, channel.url)
    assert report.failed and "signed by 1 of the 2" in report.outcomes[0].detail
    forged_index(
        channel, [k["k2"], k["k3"]], {V130: signed(built, V130, k["k1"], k["k3"])}, serial=52
    )
    assert update_once(store, channel.url).outcomes[0].installed


def test_an_endless_key_chain_stops_at_the_cap(
    store: Store,
    channel: Channel,
    k: dict[str, KeyFiles],
    built: dict[Spec, bytes],
    tmp_path: Path,
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    for _ in range(4):
        rotate(channel, [k["k0"]], [k["k0"]])
    limits = FetchLimits(max_key_statements=3)
    refused(store, channel.url, ChannelError, "goes on past 3 statements", limits=limits)
    assert update_once(store, channel.url).key_rotation == 4


# --- the publisher refuses what devices would refuse -----------------------------------------


def test_publish_refuses_an_index_signed_by_a_rotated_out_key(
    channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes], tmp_path: Path
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    rotate(channel, [k["k0"]], [k["k1"]])
    index = (channel.directory / "index.json").read_bytes()
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        put(channel, built[V110], [k["k0"]], tmp_path)  # the bundle, signed by k0, first
    with pytest.raises(ChannelError, match="devices would refuse it"):
        put(channel, signed(built, V110, k["k1"]), [k["k0"]], tmp_path)
    assert (channel.directory / "index.json").read_bytes() == index


def test_publish_refuses_a_new_signer_on_a_channel_that_never_rotated(
    channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes], tmp_path: Path
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    with pytest.raises(ChannelError, match="change keys with `bundle rotate-keys`"):
        put(channel, signed(built, V110, k["k1"]), [k["k1"]], tmp_path)


def test_rotate_keys_refuses_statements_devices_would_refuse(
    channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes], tmp_path: Path
) -> None:
    put(channel, built[V100], [k["k0"]], tmp_path)
    before = snapshot(channel.directory)
    with pytest.raises(ChannelError, match="the key devices trust now"):
        rotate(channel, [k["k1"]], [k["k2"]])  # not the key devices trust
    public_only = [load_private_key(k["k2"].private, None).public_key()]
    with pytest.raises(ChannelError, match="not signed by its own new keys"):
        rotate_keys(channel.directory, private(k["k0"]), public_only, 1, DAY, NOW)
    half = [*private(k["k1"]), public_only[0]]
    with pytest.raises(ChannelError, match="signed by 1 of the 2"):
        rotate_keys(channel.directory, private(k["k0"]), half, 2, DAY, NOW)
    with pytest.raises(ManifestError, match="threshold: must be between 1 and the 1 key"):
        rotate(channel, [k["k0"]], [k["k1"]], threshold=2)
    assert snapshot(channel.directory) == before


# --- the README's procedure, through the CLIs ------------------------------------------------


def test_readme_rotation_procedure_and_exit_codes(
    tmp_path: Path, channel: Channel, k: dict[str, KeyFiles], built: dict[Spec, bytes]
) -> None:
    store_dir = tmp_path / "device"
    v100, v110 = tmp_path / "v100.bundle", tmp_path / "v110.bundle"
    v100.write_bytes(built[V100])
    v110.write_bytes(signed(built, V110, k["k1"]))
    ch = str(channel.directory)
    steps = [
        ("bundle", ["publish", str(v100), "--channel", ch, "--key", str(k["k0"].private)]),
        ("bundle-runtime", ["init", "--store", str(store_dir), "--trust", str(k["k0"].public)]),
        ("bundle-runtime", ["update", "--store", str(store_dir), "--channel", channel.url]),
        (
            "bundle",
            [
                "rotate-keys",
                "--channel",
                ch,
                "--key",
                str(k["k0"].private),
                "--new-key",
                str(k["k1"].private),
            ],
        ),
        ("bundle", ["publish", str(v110), "--channel", ch, "--key", str(k["k1"].private)]),
    ]
    for tool, args in steps:
        proc = run(tool, args)
        assert proc.returncode == 0, (args, proc.stderr)
    for _ in range(3):
        proc = run("bundle-runtime", ["update", "--store", str(store_dir), "--channel", ch])
        assert proc.returncode == 0, proc.stderr
    assert active(Store.open(store_dir)) == "1.1.0"

    down = run(
        "bundle-runtime", ["update", "--store", str(store_dir), "--channel", "http://127.0.0.1:9/"]
    )
    assert down.returncode == 5, down.stderr
    assert down.stderr.startswith("error: channel unreachable: ") and down.stderr.count("\n") == 1
    forged_index(channel, [k["x"]], {}, serial=99)
    forged = run("bundle-runtime", ["update", "--store", str(store_dir), "--channel", ch])
    assert forged.returncode == 6, forged.stderr
    assert forged.stderr.startswith("error: channel rejected: ")
