"""The install transaction's disk steps one by one, on a real directory and without a bundle:
write and read back a kept file, the switch of ``state.json``, the sweep after it, the undo of
a refused write, the audit line, the OTA serial and the store marker.

``tests/runtime/test_store.py`` runs them together through ``Store``; ``test_store_crash.py``
cuts them short at every syscall. Here each step's own contract is checked, with the disk state
it leaves behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgebundle.runtime.bundle import Limits
from edgebundle.runtime.errors import FormatError, IntegrityError, RollbackError, StoreError
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store import (
    AuditEvent,
    InstalledVersion,
    ModelState,
    SelftestSummary,
    StoreState,
)
from edgebundle.runtime.store._audit import AUDIT_FILE, append
from edgebundle.runtime.store._bundles import discard, read_kept, sweep, write_bundle
from edgebundle.runtime.store._marker import STORE_FILE, check_marker, write_marker
from edgebundle.runtime.store._ota import OTA_FILE, read_ota, record_serial
from edgebundle.runtime.store._switch import read_state, state_token, switch

V100, V110, V120 = (Version.parse(f"1.{minor}.0") for minor in range(3))
LIMITS = Limits()


def files(root: Path) -> list[str]:
    """Every file and directory under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def record(data: bytes) -> InstalledVersion:
    return InstalledVersion(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        precision="int8",
        keyid="f" * 64,
        installed_at="2026-12-04T12:00:00Z",
        selftest=SelftestSummary(passed=True, rows=8, max_abs_error=0.0, detail="8 rows match"),
    )


def kept(active: Version, previous: Version | None = None) -> ModelState:
    versions = [v for v in (active, previous) if v is not None]
    return ModelState(
        active=active,
        previous=previous,
        highest_seen=max(versions),
        bad=(),
        installed={str(v): record(str(v).encode()) for v in versions},
    )


# --- the kept bundle files -------------------------------------------------------------------


def test_a_written_bundle_reads_back_while_it_hashes_to_the_record(tmp_path: Path) -> None:
    write_bundle(tmp_path, "credit", V100, b"bundle bytes")
    assert files(tmp_path) == ["bundles", "bundles/credit", "bundles/credit/1.0.0.bundle"]
    digest = hashlib.sha256(b"bundle bytes").hexdigest()
    assert read_kept(tmp_path, "credit", V100, digest, LIMITS) == b"bundle bytes"


def test_a_kept_bundle_changed_on_disk_is_refused(tmp_path: Path) -> None:
    write_bundle(tmp_path, "credit", V100, b"bundle bytes")
    (tmp_path / "bundles/credit/1.0.0.bundle").write_bytes(b"bundle bytez")
    with pytest.raises(IntegrityError, match=r"1\.0\.0\.bundle changed on disk: its sha256 is"):
        read_kept(tmp_path, "credit", V100, hashlib.sha256(b"bundle bytes").hexdigest(), LIMITS)


def test_a_kept_bundle_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    write_bundle(tmp_path, "credit", V100, b"x" * 100)
    with pytest.raises(FormatError, match="over the 99-byte bundle cap"):
        read_kept(tmp_path, "credit", V100, "0" * 64, Limits(max_bundle_bytes=99))


def test_discard_removes_the_file_and_an_emptied_model_directory(tmp_path: Path) -> None:
    write_bundle(tmp_path, "credit", V100, b"one")
    write_bundle(tmp_path, "credit", V110, b"two")
    discard(tmp_path, "credit", V110)
    assert files(tmp_path) == ["bundles", "bundles/credit", "bundles/credit/1.0.0.bundle"]
    discard(tmp_path, "credit", V100)
    assert files(tmp_path) == ["bundles"]


def test_sweep_deletes_what_the_state_does_not_name(tmp_path: Path) -> None:
    for name, version in (("credit", V100), ("credit", V110), ("credit", V120), ("gone", V100)):
        write_bundle(tmp_path, name, version, str(version).encode())
    (tmp_path / ".state.json.0123456789abcdef.tmp").write_bytes(b"crash leftover")
    (tmp_path / "bundles/credit/.1.2.0.bundle.0123456789abcdef.tmp").write_bytes(b"half")
    (tmp_path / "bundles/stray-file").write_bytes(b"not a model directory")
    (tmp_path / "keep-me.txt").write_bytes(b"not the store's to sweep")
    sweep(tmp_path, StoreState(models={"credit": kept(V120, V110)}))
    assert files(tmp_path) == [
        "bundles",
        "bundles/credit",
        "bundles/credit/1.1.0.bundle",
        "bundles/credit/1.2.0.bundle",
        "keep-me.txt",
    ]


# --- the switch ------------------------------------------------------------------------------


def test_before_the_first_switch_the_state_is_empty(tmp_path: Path) -> None:
    assert read_state(tmp_path) == StoreState()
    assert state_token(tmp_path) == (0, 0, 0)


def test_switch_writes_the_state_then_sweeps_what_it_dropped(tmp_path: Path) -> None:
    for version in (V100, V110, V120):
        write_bundle(tmp_path, "credit", version, str(version).encode())
    before = StoreState(models={"credit": kept(V110, V100)})
    switch(tmp_path, StoreState(), "credit", kept(V110, V100))
    assert read_state(tmp_path) == before
    assert files(tmp_path / "bundles") == ["credit", "credit/1.0.0.bundle", "credit/1.1.0.bundle"]
    token = state_token(tmp_path)

    write_bundle(tmp_path, "credit", V120, b"1.2.0")  # the next install's file, then its switch

    switch(tmp_path, before, "credit", kept(V120, V110))
    after = read_state(tmp_path)
    assert after == StoreState(models={"credit": kept(V120, V110)})
    assert (tmp_path / "state.json").read_bytes() == after.to_bytes()
    assert state_token(tmp_path) != token
    assert files(tmp_path / "bundles") == ["credit", "credit/1.1.0.bundle", "credit/1.2.0.bundle"]


def test_a_corrupt_state_is_a_store_error_naming_the_field(tmp_path: Path) -> None:
    switch(tmp_path, StoreState(), "credit", kept(V110, V100))
    data = json.loads((tmp_path / "state.json").read_bytes())
    data["models"]["credit"]["installed"]["1.0.0"]["selftest"]["rows"] = -1
    (tmp_path / "state.json").write_text(json.dumps(data))
    message = "models.credit.installed.1.0.0.selftest.rows: must be >= 0, got -1"
    with pytest.raises(StoreError, match=f"state.json is corrupt: {message}$"):
        read_state(tmp_path)


def test_a_state_listing_one_version_under_two_spellings_is_refused(tmp_path: Path) -> None:
    # 1.0.0+a and 1.0.0+b are one version by precedence: two files for it would be ambiguous.
    a, b = Version.parse("1.0.0+a"), Version.parse("1.0.0+b")
    model = {
        "active": str(a),
        "previous": str(b),
        "highest_seen": str(a),
        "bad": [],
        "installed": {str(v): record(b"x").to_dict() for v in (a, b)},
    }
    doc = {"format": "edgebundle.state/1", "models": {"credit": model}}
    (tmp_path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"models\.credit: active and previous are both 1\.0\.0"):
        read_state(tmp_path)


# --- the audit log ---------------------------------------------------------------------------


def test_audit_lines_are_appended_and_read_back(tmp_path: Path) -> None:
    append(tmp_path, "refused", reason="no valid signature\nby a trusted key", sha256="a" * 64)
    append(tmp_path, "installed", reason="previous: none", model="credit", version=V100)
    lines = (tmp_path / AUDIT_FILE).read_bytes().splitlines()
    events = [AuditEvent.from_dict(json.loads(line)) for line in lines]
    assert [(e.event, e.model, e.version, e.sha256) for e in events] == [
        ("refused", None, None, "a" * 64),
        ("installed", "credit", "1.0.0", None),
    ]
    assert events[0].reason == "no valid signature\nby a trusted key"


# --- ota.json and store.json -----------------------------------------------------------------


def test_record_serial_moves_only_forward(tmp_path: Path) -> None:
    assert read_ota(tmp_path).last_serial == 0
    record_serial(tmp_path, 3)
    written = (tmp_path / OTA_FILE).read_bytes()
    assert written == b'{\n  "format": "edgebundle.ota/2",\n  "last_serial": 3\n}\n'
    record_serial(tmp_path, 3)  # the same index again: nothing to write
    assert (tmp_path / OTA_FILE).read_bytes() == written
    with pytest.raises(RollbackError, match="serial 2 is older than 3"):
        record_serial(tmp_path, 2)
    assert (tmp_path / OTA_FILE).read_bytes() == written


def test_an_old_store_s_ota_json_is_read_and_rewritten_in_the_current_format(
    tmp_path: Path,
) -> None:
    legacy = b'{"format": "edgebundle.ota/1", "key_version": 2, "last_serial": 7}'
    (tmp_path / OTA_FILE).write_bytes(legacy)
    assert read_ota(tmp_path).last_serial == 7
    record_serial(tmp_path, 8)
    assert json.loads((tmp_path / OTA_FILE).read_bytes()) == {
        "format": "edgebundle.ota/2",
        "last_serial": 8,
    }


def test_a_corrupt_ota_json_is_a_store_error_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / OTA_FILE).write_bytes(b'{"format": "edgebundle.ota/2", "last_serial": -1}')
    with pytest.raises(StoreError, match=r"ota\.json is corrupt: last_serial: must be >= 0"):
        read_ota(tmp_path)


def test_the_marker_gates_the_store_format(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not an edgebundle store"):
        check_marker(tmp_path)
    write_marker(tmp_path)
    assert (tmp_path / STORE_FILE).read_bytes() == b'{\n  "format": "edgebundle.store/1"\n}\n'
    check_marker(tmp_path)
    (tmp_path / STORE_FILE).write_bytes(b'{"format": "edgebundle.store/1", "extra": 1}')
    with pytest.raises(StoreError, match=r"store\.json: unknown top-level key 'extra'"):
        check_marker(tmp_path)
