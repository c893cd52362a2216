"""The model store through its API, with real bundles from `bundle build`: one test per
behaviour or attack, each checking the exact refusal and that the store on disk did not move."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebundle.runtime.bundle import read_members_unverified
from edgebundle.runtime.errors import (
    BundleError,
    IntegrityError,
    KeyFileError,
    ManifestError,
    RollbackError,
    SelftestError,
    SignatureError,
    StoreError,
)
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import keyid, load_public_key
from edgebundle.runtime.store import ModelState, Store, StoreState
from tests.conftest import KeyFiles
from tests.support.store_helpers import (
    Spec,
    audit_events,
    build_bundles,
    snapshot,
    with_wrong_selftest,
)
from tests.support.xgbmodels import train

V100 = Spec("credit", "1.0.0")
V110 = Spec("credit", "1.1.0")
V120 = Spec("credit", "1.2.0")
V110_FLOAT = Spec("credit", "1.1.0", precision="float")
FRAUD = Spec("fraud", "2.0.0")
FOREIGN = Spec("credit", "1.3.0", signer="other_keys")


@pytest.fixture(scope="module")
def bundles(
    keys: KeyFiles, other_keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory
) -> dict[Spec, bytes]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8).path
    specs = [V100, V110, V120, V110_FLOAT, FRAUD, FOREIGN]
    paths = build_bundles(
        model, specs, {"keys": keys, "other_keys": other_keys}, tmp_path_factory.mktemp("out")
    )
    return {spec: path.read_bytes() for spec, path in paths.items()}


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles) -> Store:
    return Store.init(tmp_path / "store", [keys.public])


def install(store: Store, bundles: dict[Spec, bytes], *specs: Spec) -> None:
    for spec in specs:
        store.install(bundles[spec], origin=spec.label)


def version(text: str) -> Version:
    return Version.parse(text)


# --- init and open ---------------------------------------------------------------------------


def test_init_creates_the_layout(tmp_path: Path, keys: KeyFiles) -> None:
    store = Store.init(tmp_path / "new" / "store", [keys.public])
    root = store.root
    key_id = keyid(load_public_key(keys.public))
    assert sorted(p.name for p in root.iterdir()) == [
        "audit.log",
        "bundles",
        "lock",
        "store.json",
        "trust.json",
    ]
    assert json.loads((root / "store.json").read_text()) == {"format": "edgebundle.store/1"}
    trust = json.loads((root / "trust.json").read_text())
    assert (trust["format"], trust["version"], trust["threshold"]) == ("edgebundle.trust/1", 0, 1)
    assert trust["expires"] is None and len(trust["keys"]) == 1
    assert list(store.trusted_keys()) == [key_id]
    assert store.state() == StoreState()
    assert store.state_token() == (0, 0, 0)
    [event] = audit_events(root)
    assert event.event == "init" and key_id in event.reason


def test_init_refuses_a_non_empty_directory_that_is_not_a_store(
    tmp_path: Path, keys: KeyFiles
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="is not empty and is not an edgebundle store"):
        Store.init(tmp_path, [keys.public])
    assert snapshot(tmp_path) == before


def test_init_refuses_an_existing_store(store: Store, keys: KeyFiles) -> None:
    before = snapshot(store.root)
    with pytest.raises(StoreError, match="is already an edgebundle store"):
        Store.init(store.root, [keys.public])
    assert snapshot(store.root) == before


def test_init_refuses_a_private_key_as_trust_and_creates_nothing(
    tmp_path: Path, keys: KeyFiles
) -> None:
    with pytest.raises(KeyFileError, match="holds a private key"):
        Store.init(tmp_path / "store", [keys.private])
    assert not (tmp_path / "store").exists()


def test_open_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as e:
        Store.open(tmp_path)
    assert str(e.value) == f"{tmp_path} is not an edgebundle store (run bundle-runtime init)"


def test_open_refuses_another_store_format(store: Store) -> None:
    (store.root / "store.json").write_text('{"format": "edgebundle.store/2"}')
    with pytest.raises(StoreError, match=r"unsupported store format 'edgebundle\.store/2'"):
        Store.open(store.root)


def test_a_store_from_before_the_key_chain_trusts_its_key_files(
    store: Store, keys: KeyFiles
) -> None:
    (store.root / "trust.json").unlink()
    (store.root / "keys").mkdir()
    key_id = keyid(load_public_key(keys.public))
    shutil.copy(keys.public, store.root / "keys" / f"{key_id}.pub")
    trust = Store.open(store.root).trust()
    assert (trust.version, trust.threshold, trust.keyids()) == (0, 1, [key_id])


def test_a_legacy_key_file_named_for_another_key_is_refused(
    store: Store, other_keys: KeyFiles
) -> None:
    (store.root / "trust.json").unlink()
    (store.root / "keys").mkdir()
    shutil.copy(other_keys.public, store.root / "keys" / f"{'0' * 64}.pub")
    with pytest.raises(KeyFileError, match="not the key its name says"):
        Store.open(store.root).trusted_keys()


def test_a_corrupt_trust_file_is_a_store_error(store: Store) -> None:
    (store.root / "trust.json").write_text('{"format": "edgebundle.trust/1", "version": 0}')
    with pytest.raises(StoreError, match=r"trust\.json is corrupt: .*threshold: missing"):
        Store.open(store.root).trusted_keys()


# --- install ---------------------------------------------------------------------------------


def test_install_then_load_active(store: Store, bundles: dict[Spec, bytes]) -> None:
    result = store.install(bundles[V100], origin="/media/usb/credit-1.0.0.bundle")
    assert (result.name, result.version, result.previous) == ("credit", version("1.0.0"), None)
    assert not result.already_installed and result.selftest.passed and result.selftest.rows > 0
    loaded = store.load_active("credit")
    assert loaded.version == version("1.0.0") and loaded.sha256 == result.sha256
    assert loaded.manifest.name == "credit"
    x = np.zeros((2, loaded.scorer.num_features), dtype=np.float32)
    assert loaded.scorer.predict(x)["probability"].shape == (2,)
    model = store.state().models["credit"]
    record = model.installed["1.0.0"]
    assert (model.active, model.previous, model.highest_seen) == (
        version("1.0.0"),
        None,
        version("1.0.0"),
    )
    assert record.size == len(bundles[V100]) and record.precision == "int8"
    assert record.keyid == next(iter(store.trusted_keys()))
    event = audit_events(store.root)[-1]
    assert (event.event, event.model, event.version) == ("installed", "credit", "1.0.0")
    assert event.origin == "/media/usb/credit-1.0.0.bundle" and event.sha256 == result.sha256
    assert (store.root / "bundles" / "credit" / "1.0.0.bundle").read_bytes() == bundles[V100]


def test_loading_an_installed_bundle_needs_no_cryptography(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    """A server loads by the sha256 pinned at install: the signature verified then."""
    store.install(bundles[V100], origin="direct")
    program = (
        "import sys; from pathlib import Path; from edgebundle.runtime.store import Store; "
        f"m = Store.open(Path({str(store.root)!r})).load_active('credit'); "
        "print(m.version, sorted(n for n in sys.modules if n.startswith('cryptography')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "1.0.0 []"), proc.stderr


def test_a_changed_installed_file_is_refused_at_load(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    store.install(bundles[V100], origin="direct")
    path = store.root / "bundles" / "credit" / "1.0.0.bundle"
    data = bytearray(path.read_bytes())
    data[-2000] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="the store recorded"):
        store.load_active("credit")


def test_upgrades_keep_only_the_active_and_previous_files(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110)
    result = store.install(bundles[V120], origin="x")
    assert result.previous == version("1.1.0")
    model = store.state().models["credit"]
    assert (model.active, model.previous) == (version("1.2.0"), version("1.1.0"))
    assert sorted(model.installed) == ["1.1.0", "1.2.0"]
    files = sorted(p.name for p in (store.root / "bundles" / "credit").iterdir())
    assert files == ["1.1.0.bundle", "1.2.0.bundle"]


def test_state_token_changes_with_each_switch(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    first = store.state_token()
    install(store, bundles, V110)
    assert first != store.state_token() != (0, 0, 0)


def test_same_bytes_again_is_an_idempotent_no_op(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    before = snapshot(store.root)
    result = store.install(bundles[V100], origin="again")
    assert result.already_installed and result.version == version("1.0.0")
    assert snapshot(store.root) == before


def test_lower_version_is_refused_by_anti_rollback(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110)
    before = snapshot(store.root)
    with pytest.raises(RollbackError) as e:
        store.install(bundles[V100], origin="old")
    assert str(e.value) == (
        "refusing credit 1.0.0: version 1.1.0 was already installed (anti-rollback)"
    )
    assert snapshot(store.root) == before
    event = audit_events(store.root)[-1]
    assert (event.event, event.model, event.version) == ("refused", "credit", "1.0.0")
    assert event.reason == str(e.value)


def test_same_version_other_content_is_refused(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V110)
    before = snapshot(store.root)
    with pytest.raises(
        RollbackError,
        match=r"^refusing credit 1\.1\.0: version 1\.1\.0 is "
        r"already installed with other content .*same version, other content",
    ):
        store.install(bundles[V110_FLOAT], origin="float build")
    assert snapshot(store.root) == before
    assert store.load_active("credit").manifest.precision == "int8"


def test_bundle_signed_by_an_untrusted_key_is_refused(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100)
    before = snapshot(store.root)
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        store.install(bundles[FOREIGN], origin="forged")
    assert snapshot(store.root) == before
    event = audit_events(store.root)[-1]
    # Nothing in an unverified manifest is believed, not even its name.
    assert (event.event, event.model, event.version) == ("refused", None, None)
    assert event.reason.startswith("no valid signature")


def test_tampered_bundle_is_refused(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    data = bytearray(bundles[V110])
    model = read_members_unverified(bundles[V110])["model.onnx"]
    data[data.index(model) + len(model) // 2] ^= 0x01
    before = snapshot(store.root)
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256 is [0-9a-f]+, manifest says"):
        store.install(bytes(data), origin="tampered")
    assert snapshot(store.root) == before
    assert store.load_active("credit").version == version("1.0.0")


def test_failing_selftest_is_refused_and_the_old_version_stays_active(
    store: Store, bundles: dict[Spec, bytes], keys: KeyFiles
) -> None:
    install(store, bundles, V100)
    broken = with_wrong_selftest(bundles[V100], keys, "1.5.0")
    before = snapshot(store.root)
    with pytest.raises(
        SelftestError,
        match=r"^selftest failed for credit 1\.5\.0: output "
        r"'probability' row 0: got .*, expected .*\(tolerance",
    ):
        store.install(broken, origin="broken")
    assert snapshot(store.root) == before  # the written file is gone again
    assert store.load_active("credit").version == version("1.0.0")
    event = audit_events(store.root)[-1]
    assert event.event == "refused" and event.reason.startswith("selftest failed")


def test_failing_selftest_on_a_first_install_leaves_nothing(
    store: Store, bundles: dict[Spec, bytes], keys: KeyFiles
) -> None:
    broken = with_wrong_selftest(bundles[V100], keys, "1.5.0")
    before = snapshot(store.root)
    with pytest.raises(SelftestError):
        store.install(broken, origin="broken")
    assert snapshot(store.root) == before


def test_several_models_in_one_store(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100, FRAUD)
    assert store.load_active("credit").version == version("1.0.0")
    assert store.load_active("fraud").version == version("2.0.0")
    with pytest.raises(StoreError) as e:
        store.default_model()
    assert str(e.value) == "the store holds several models (credit, fraud); name one"
    with pytest.raises(
        StoreError,
        match=r"no model named 'loans' in the store \(installed: "
        r"credit, fraud\)",
    ):
        store.load_active("loans")


def test_default_model(store: Store, bundles: dict[Spec, bytes]) -> None:
    with pytest.raises(StoreError, match="no model is installed in"):
        store.default_model()
    install(store, bundles, FRAUD)
    assert store.default_model() == "fraud"


# --- rollback and bad versions ---------------------------------------------------------------


def test_rollback_and_rollback_twice(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100, V110)
    first = store.rollback("credit")
    assert (first.active, first.previous) == (version("1.0.0"), version("1.1.0"))
    assert store.load_active("credit").version == version("1.0.0")
    assert store.state().models["credit"].highest_seen == version("1.1.0")
    second = store.rollback("credit")
    assert (second.active, second.previous) == (version("1.1.0"), version("1.0.0"))
    assert store.load_active("credit").version == version("1.1.0")
    events = [(e.event, e.version, e.reason) for e in audit_events(store.root)[-2:]]
    assert events == [
        ("rollback", "1.0.0", "rolled back from 1.1.0"),
        ("rollback", "1.1.0", "rolled forward from 1.0.0"),
    ]


def test_rollback_without_previous_is_refused(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    before = snapshot(store.root)
    with pytest.raises(StoreError) as e:
        store.rollback("credit")
    assert str(e.value) == "credit has no previous version to roll back to"
    assert snapshot(store.root) == before


def test_rollback_refuses_a_previous_file_that_changed_on_disk(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110)
    (store.root / "bundles" / "credit" / "1.0.0.bundle").write_bytes(bundles[V120])
    before = snapshot(store.root)
    with pytest.raises(IntegrityError, match=r"1\.0\.0\.bundle changed on disk"):
        store.rollback("credit")
    assert snapshot(store.root) == before


def test_after_a_rollback_the_newer_version_can_be_reinstalled_but_not_an_older_one(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110, V120)
    store.rollback("credit")  # active 1.1.0, previous 1.2.0
    before = snapshot(store.root)
    with pytest.raises(RollbackError, match=r"version 1\.2\.0 was already installed"):
        store.install(bundles[V100], origin="older")
    assert snapshot(store.root) == before
    result = store.install(bundles[V120], origin="same bytes as the rolled-back version")
    assert not result.already_installed and result.previous == version("1.1.0")
    assert store.load_active("credit").version == version("1.2.0")


def test_mark_bad_active_rolls_back_and_the_version_never_installs_again(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110)
    store.mark_bad("credit", version("1.1.0"), "crashes the scorer on device X")
    model = store.state().models["credit"]
    assert (model.active, model.previous, model.bad) == (
        version("1.0.0"),
        None,
        (version("1.1.0"),),
    )
    assert sorted(p.name for p in (store.root / "bundles" / "credit").iterdir()) == ["1.0.0.bundle"]
    assert store.load_active("credit").version == version("1.0.0")
    event = audit_events(store.root)[-1]
    assert (event.event, event.version) == ("marked-bad", "1.1.0")
    assert event.reason == "crashes the scorer on device X; rolled back to 1.0.0"
    before = snapshot(store.root)
    with pytest.raises(RollbackError) as e:
        store.install(bundles[V110], origin="again")
    assert str(e.value) == "refusing credit 1.1.0: it was marked bad on this device"
    assert snapshot(store.root) == before


def test_mark_bad_a_version_never_installed(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    store.mark_bad("credit", version("1.2.0"), "selftest failed during OTA")
    with pytest.raises(RollbackError, match="marked bad"):
        store.install(bundles[V120], origin="ota")
    assert store.load_active("credit").version == version("1.0.0")
    install(store, bundles, V110)  # others still install
    assert store.load_active("credit").version == version("1.1.0")


def test_mark_bad_without_previous_keeps_scoring(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    store.mark_bad("credit", version("1.0.0"), "suspect")
    assert store.load_active("credit").version == version("1.0.0")
    assert "stays active" in audit_events(store.root)[-1].reason
    result = store.install(bundles[V110], origin="fix")
    assert result.previous == version("1.0.0")
    model = store.state().models["credit"]
    assert model.previous is None  # a bad version is never a rollback target
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("credit")


# --- load-time integrity ---------------------------------------------------------------------


def test_load_active_detects_a_bundle_file_modified_on_disk(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100)
    path = store.root / "bundles" / "credit" / "1.0.0.bundle"
    data = bytearray(path.read_bytes())
    data[700] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as e:
        store.load_active("credit")
    recorded = store.state().models["credit"].installed["1.0.0"].sha256
    assert str(e.value).startswith(f"{path} changed on disk: its sha256 is ")
    assert str(e.value).endswith(f"the store recorded {recorded}")


def test_load_active_detects_a_swapped_valid_bundle(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100, V110)
    shutil.copy(
        store.root / "bundles" / "credit" / "1.0.0.bundle",
        store.root / "bundles" / "credit" / "1.1.0.bundle",
    )
    with pytest.raises(IntegrityError, match=r"1\.1\.0\.bundle changed on disk"):
        store.load_active("credit")


def test_load_active_reports_a_missing_bundle_file(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    install(store, bundles, V100)
    (store.root / "bundles" / "credit" / "1.0.0.bundle").unlink()
    with pytest.raises(BundleError, match=r"cannot read .*1\.0\.0\.bundle: No such file"):
        store.load_active("credit")


# --- state.json ------------------------------------------------------------------------------


def test_state_round_trips(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100, V110, FRAUD)
    data = json.loads((store.root / "state.json").read_bytes())
    assert StoreState.from_dict(data).to_dict() == data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(extra=1), "unknown key 'extra'"),
        (lambda m: m.update(active="1.9.0"), "must be exactly the active and previous ones"),
        (lambda m: m.update(highest_seen="0.1.0"), "is above highest_seen"),
        (lambda m: m.update(bad=["1.0.0"]), "previous version 1.0.0 is marked bad"),
        (lambda m: m.update(active="v1.1.0"), "is not a semantic version"),
        (lambda m: m["installed"]["1.1.0"].update(size=True), "expected an integer"),
    ],
    ids=[
        "unknown-key",
        "dangling-active",
        "highest-below-installed",
        "bad-previous",
        "bad-version-text",
        "bool-size",
    ],
)
def test_a_corrupt_state_is_refused_by_name(
    store: Store, bundles: dict[Spec, bytes], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    install(store, bundles, V100, V110)
    path = store.root / "state.json"
    data = json.loads(path.read_bytes())
    edit(data["models"]["credit"])
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match=f"state.json is corrupt: models.credit.*{message}"):
        store.state()


def test_a_state_with_duplicate_keys_is_refused(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    path = store.root / "state.json"
    path.write_text('{"format": "edgebundle.state/1", "models": {}, "models": {}}')
    with pytest.raises(StoreError, match="duplicate key 'models'"):
        store.load_active("credit")


def test_model_state_cannot_be_built_with_an_active_version_it_holds_no_file_for() -> None:
    with pytest.raises(ManifestError, match="must be exactly the active and previous ones"):
        ModelState(
            active=version("1.0.0"),
            previous=None,
            highest_seen=version("1.0.0"),
            bad=(),
            installed={},
        )


# --- locking and crash leftovers --------------------------------------------------------------


@pytest.fixture
def held_lock(store: Store) -> Iterator[None]:
    fd = os.open(store.root / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
    os.close(fd)


@pytest.mark.usefixtures("held_lock")
def test_a_locked_store_times_out_with_a_clear_error(
    store: Store, bundles: dict[Spec, bytes]
) -> None:
    impatient = Store.open(store.root, lock_timeout=0.2)
    before = snapshot(store.root)
    with pytest.raises(
        StoreError,
        match=r"^store is locked by another process \(.*lock; "
        r"waited 0.2 s\)$",
    ):
        impatient.install(bundles[V100], origin="x")
    assert snapshot(store.root) == before


def test_install_sweeps_leftovers_of_a_crash(store: Store, bundles: dict[Spec, bytes]) -> None:
    install(store, bundles, V100)
    leftovers = [
        store.root / ".state.json.0123456789abcdef.tmp",
        store.root / "bundles" / "credit" / ".1.1.0.bundle.0123456789abcdef.tmp",
        store.root / "bundles" / "credit" / "0.9.0.bundle",
        store.root / "bundles" / "ghost" / "1.0.0.bundle",
    ]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    install(store, bundles, V110)
    assert not any(path.exists() for path in leftovers)
    assert not (store.root / "bundles" / "ghost").exists()
    files = sorted(p.name for p in (store.root / "bundles" / "credit").iterdir())
    assert files == ["1.0.0.bundle", "1.1.0.bundle"]
