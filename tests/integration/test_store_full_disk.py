"""The store on a full file system: a small tmpfs filled with a ballast file (or out of inodes),
so that install, update and rollback find no room at a point chosen from measured sizes.

Each failed operation must exit 2 with one ``error: ...`` line saying the disk is full, leave
``state.json`` and the active version as they were (or, past the switch, the new version
active), leave no temp file, keep the audit log whole JSON lines, and never disturb a server
answering from the same store; after the ballast goes, the next install goes through. What a
failure leaves beyond temp files (a whole bundle file no state names) is swept by the next
successful write, as the store promises for crash leftovers.

tmpfs counts whole pages per file and frees a file's pages when its last name and descriptor
go, so "room for the bundle file but not for state.json" is exact arithmetic on measured sizes.
fsync and rename cannot fail on tmpfs (nothing to flush, no blocks for directory entries): the
points where state.json's temp file is written but its fsync or rename fails, as on a full
ext4 with delayed allocation, are injected in-process instead.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgebundle.builder.publish import publish
from edgebundle.runtime.errors import BundleError, StoreError
from edgebundle.runtime.ota.updater import update_once
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import AUDIT_FILE, OTA_FILE, STATE_FILE, Store
from tests.conftest import KeyFiles
from tests.support.serverkit import serve_process
from tests.support.store_helpers import snapshot
from tests.support.storefaults import (
    MODEL,
    Prober,
    Releases,
    check_store,
    leftovers,
    served_version,
    version,
    wait_for,
)
from tests.support.xgbmodels import run

pytestmark = pytest.mark.timeout(300)
DISK = "size=1m,nr_inodes=128"  # tens of KB of store, room for a few bundles of ~20 KB
FULL = "No space left on device"
# What audit.log's last page keeps free before the install's line: any line is longer.
AUDIT_TAIL = 100

class Disk:
    """A mounted tmpfs, and ballast that fills it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.page = os.statvfs(root).f_frsize
        self._ballast = root / "ballast"

    def free(self) -> int:
        info = os.statvfs(self.root)
        return info.f_bavail * info.f_frsize

    def pages(self, size: int) -> int:
        """The bytes a file of ``size`` bytes takes: whole pages."""
        return -(-size // self.page) * self.page

    def fill(self, leave: int = 0) -> None:
        """Write ballast until the disk is full, then give ``leave`` bytes (whole pages) back."""
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        chunk = bytes(1 << 16)
        try:
            while True:
                os.write(fd, chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        os.truncate(self._ballast, self._ballast.stat().st_size - leave)
        assert self.free() == leave

    def use_up_inodes(self) -> None:
        """Create empty files until no inode is left; every page stays free."""
        self._ballast.mkdir()
        for index in itertools.count():
            try:
                (self._ballast / str(index)).touch()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        assert os.statvfs(self.root).f_favail == 0

    def clear(self) -> None:
        if self._ballast.is_dir():
            shutil.rmtree(self._ballast)
        else:
            self._ballast.unlink()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", DISK, "tmpfs", str(mount)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mounting a small tmpfs to fill up needs root: {proc.stderr.strip()}")
    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=True)


@pytest.fixture(scope="module")
def releases(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Releases:
    return Releases(keys, tmp_path_factory.mktemp("releases"))


@pytest.fixture
def channel(releases: Releases, keys: KeyFiles, tmp_path: Path) -> Callable[[int], str]:
    """``channel(k)`` publishes version 1.k.0 to a channel directory (on the roomy disk) and
    returns its URL."""
    directory = tmp_path / "channel"
    signer = load_private_key(keys.private, None)

    def publish_minor(minor: int) -> str:
        now = datetime.now(timezone.utc)
        publish(releases.bundle(minor), directory, [signer], timedelta(days=1), now)
        return directory.as_uri()

    return publish_minor


def following_store(
    root: Path, keys: KeyFiles, releases: Releases, channel: Callable[[int], str]
) -> Store:
    """1.0.0 installed from a file, then 1.1.0 from the channel: active 1.1.0, previous 1.0.0,
    and ota.json already there (so an update replaces it rather than adding a file)."""
    store = Store.init(root, [keys.public])
    store.install(releases.bundle(0).read_bytes(), origin="setup")
    report = update_once(store, channel(1))
    assert not report.failed, report.lines()
    return store


def cli(*args: str) -> Any:
    return run("bundle-runtime", list(args))


def assert_disk_full_error(proc: Any, *words: str) -> None:
    """Exit 2 (a store error) and exactly one line on stderr, saying the disk is full."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in (FULL, *words):
        assert word in lines[0], proc.stderr


def operations(root: Path, releases: Releases, channel_url: str) -> dict[str, list[str]]:
    store = ["--store", str(root)]
    return {
        "install": ["install", str(releases.bundle(2)), *store],
        "update": ["update", *store, "--channel", channel_url],
        "rollback": ["rollback", *store, "--model", MODEL],
    }


@pytest.mark.parametrize("exhausted", ["space", "inodes"])
def test_no_space_or_no_inode_refuses_install_update_and_rollback_while_serving(
    exhausted: str,
    disk: Disk,
    releases: Releases,
    keys: KeyFiles,
    channel: Callable[[int], str],
    tmp_path: Path,
) -> None:
    root = following_store(disk.root / "store", keys, releases, channel).root
    commands = operations(root, releases, channel(2))
    with (
        serve_process(root, tmp_path / "serve.log", "--no-monitor") as server,
        Prober(server.port, releases) as prober,
    ):
        if exhausted == "space":
            disk.fill()
        else:
            disk.use_up_inodes()
        before = snapshot(root)
        audit = (root / AUDIT_FILE).read_bytes()
        # Where each one first needs room: the new bundle file, ota.json, state.json.
        first = {"install": f"{version(2)}.bundle", "update": OTA_FILE, "rollback": STATE_FILE}
        for name, args in commands.items():
            assert_disk_full_error(cli(*args), first[name])
            assert snapshot(root) == before, name
            assert (root / AUDIT_FILE).read_bytes() == audit, name
            check_store(root, {"1.1.0"}, f"{name} on a full disk")
            assert leftovers(root) == [], name
        wait_for(prober.answered_since(len(prober.answers)))  # still answering while full

        disk.clear()
        proc = cli(*commands["install"])
        assert proc.returncode == 0, proc.stderr
        check_store(root, {"1.2.0"}, "install after the ballast went")
        assert leftovers(root) == []
        wait_for(lambda: served_version(server.port) == "1.2.0")
        wait_for(prober.answered_since(len(prober.answers) + 1))
        last = prober.answers[-1]
        log = server.stderr()

    assert prober.problems(releases, {"1.1.0", "1.2.0"}) == []
    assert last.version == "1.2.0"
    assert "Traceback" not in log and "error" not in log, log


@pytest.mark.parametrize(
    "operation",
    ["install", "update"],
)
def test_room_for_the_bundle_file_but_not_for_the_state_switch(
    operation: str,
    disk: Disk,
    releases: Releases,
    keys: KeyFiles,
    channel: Callable[[int], str],
) -> None:
    root = following_store(disk.root / "store", keys, releases, channel).root
    commands = operations(root, releases, channel(2))
    before = snapshot(root)
    audit = (root / AUDIT_FILE).read_bytes()
    # An update first replaces ota.json, whose old page is back before the bundle is written.
    disk.fill(leave=disk.pages(releases.bundle(2).stat().st_size))

    assert_disk_full_error(cli(*commands[operation]), STATE_FILE)
    assert (root / STATE_FILE).read_bytes() == before.state
    assert (root / AUDIT_FILE).read_bytes() == audit
    check_store(root, {"1.1.0"}, f"{operation} with no room for {STATE_FILE}")
    # The new bundle file went with the failed switch: its space is back at once.
    assert leftovers(root) == []

    disk.clear()
    proc = cli(*commands["rollback"])
    assert proc.returncode == 0, proc.stderr
    assert leftovers(root) == []
    proc = cli(*commands["install"])
    assert proc.returncode == 0, proc.stderr
    check_store(root, {"1.2.0"}, "install after the ballast went")


def pad_audit_log(store: Store, tail: int, page: int) -> None:
    """Make audit.log end ``tail`` bytes short of a page boundary, with a real audited refusal
    whose origin (free text the caller gives) is as long as it takes."""
    log = store.root / AUDIT_FILE

    def refuse(origin: str) -> int:
        size = log.stat().st_size
        with pytest.raises(BundleError):
            store.install(b"not a bundle", origin=origin)
        return log.stat().st_size - size

    shortest = refuse("x")
    missing = (-log.stat().st_size - tail) % page
    if missing < shortest:
        missing += page
    refuse("x" * (1 + missing - shortest))
    assert log.stat().st_size % page == page - tail


def test_room_for_the_switch_but_not_for_the_audit_line(
    disk: Disk, releases: Releases, keys: KeyFiles
) -> None:
    store = Store.init(disk.root / "store", [keys.public])
    store.install(releases.bundle(0).read_bytes(), origin="setup")  # the install deletes none
    pad_audit_log(store, AUDIT_TAIL, disk.page)
    audit = (store.root / AUDIT_FILE).read_bytes()
    bundle = releases.bundle(1)
    # Room for the bundle file and state.json's temp file; the old state.json's page stays
    # taken while a reader holds it open, so the audit line is the first write with no room.
    disk.fill(leave=disk.pages(bundle.stat().st_size) + disk.page)
    with (store.root / STATE_FILE).open("rb"):
        proc = cli("install", str(bundle), "--store", str(store.root))

    assert_disk_full_error(proc, AUDIT_FILE)
    # The switch came before the audit line: the new version is active, the log whole.
    check_store(store.root, {"1.1.0"}, "install with no room for its audit line")
    assert (store.root / AUDIT_FILE).read_bytes() == audit
    assert leftovers(store.root) == []


@pytest.mark.parametrize("call", ["fsync", "replace"])
@pytest.mark.parametrize("target", [STATE_FILE, f"{version(2)}.bundle"])
def test_enospc_from_fsync_or_rename_of_a_written_temp_file(
    call: str,
    target: str,
    releases: Releases,
    keys: KeyFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store.init(tmp_path / "store", [keys.public])
    for minor in (0, 1):
        store.install(releases.bundle(minor).read_bytes(), origin="setup")
    state = (store.root / STATE_FILE).read_bytes()
    audit = (store.root / AUDIT_FILE).read_bytes()
    real = getattr(os, call)
    prefix = f".{target}."  # the temp name write_durably gives the target

    def failing(first: Any, *args: Any, **kwargs: Any) -> Any:
        path = os.readlink(f"/proc/self/fd/{first}") if call == "fsync" else os.fsdecode(first)
        if os.path.basename(path).startswith(prefix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(os, call, failing)
    with pytest.raises(StoreError, match=f"cannot write .*{target}: {FULL}$"):
        store.install(releases.bundle(2).read_bytes(), origin="test")
    monkeypatch.undo()

    assert (store.root / STATE_FILE).read_bytes() == state
    assert (store.root / AUDIT_FILE).read_bytes() == audit
    check_store(store.root, {"1.1.0"}, f"{call} of {target} failing")
    # a failed switch takes the new bundle file with it
    assert leftovers(store.root) == []
    store.rollback(MODEL)
    assert leftovers(store.root) == []
