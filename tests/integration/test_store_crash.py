"""Crash safety of the store: kill `bundle-runtime` with SIGKILL before every file system
operation it makes on the store, and check that the store still loads the old or the new
version, never neither, and that the next install completes.

Kill points come without test hooks in product code: the killed process gets a
``sitecustomize.py`` (via PYTHONPATH) whose ``sys.addaudithook`` counts the audited operations
on paths under the store (open in any mode, including the directory opens that precede each
directory fsync; rename/replace; remove/unlink; mkdir; rmdir; listdir) plus every flock, and
SIGKILLs itself just before operation N. One run with N = infinity counts them; then N runs
1..count. A few time-based kills add points between audited operations.

``os.fsync`` has no audit event, and SIGKILL cannot lose un-synced data anyway (the page cache
survives the process), so fsync placement is checked separately: an in-process trace of every
fsync, rename, unlink, mkdir and rmdir must follow the durable-write protocol.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgebundle.builder.publish import publish, rotate_keys
from edgebundle.runtime.ota.updater import update_once
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.store_helpers import Spec, audit_events, build_bundles, with_wrong_selftest
from tests.support.xgbmodels import BIN, train

V100 = Spec("credit", "1.0.0")
V110 = Spec("credit", "1.1.0")
V120 = Spec("credit", "1.2.0")
NEVER = 10**9

SITECUSTOMIZE = """
import atexit
import os
import signal
import sys

_ROOT = os.environ.get("CRASH_ROOT")
if _ROOT:
    _ROOT = os.path.abspath(_ROOT) + os.sep
    _AT = int(os.environ["CRASH_AT"])
    _LOG = os.environ["CRASH_LOG"]
    _PATH_ARGS = {"open": 1, "os.rename": 2, "os.remove": 1, "os.mkdir": 1, "os.rmdir": 1,
                  "os.listdir": 1, "os.scandir": 1, "os.link": 2, "os.symlink": 2,
                  "os.truncate": 1, "os.chmod": 1, "os.utime": 1}
    _seen = []

    def _under(path):
        if path is None or isinstance(path, int):
            return False
        return (os.path.abspath(os.fsdecode(path)) + os.sep).startswith(_ROOT)

    def _hook(event, args):
        count = _PATH_ARGS.get(event)
        if event != "fcntl.flock" and not (count and any(map(_under, args[:count]))):
            return
        _seen.append(event + " " + " ".join(str(a) for a in args[:2]))
        if len(_seen) == _AT:
            os.kill(os.getpid(), signal.SIGKILL)

    def _write_log():
        with open(_LOG, "w") as log:
            log.write("\\n".join(_seen))

    atexit.register(_write_log)
    sys.addaudithook(_hook)
"""


@dataclass(frozen=True)
class Scenario:
    """A store to copy, a command to kill, and what may be active afterwards."""

    name: str
    base: Path
    args: Sequence[str]  # after `bundle-runtime`; {store} stands for the copy
    allowed: frozenset[str | None]  # active versions a crash may leave (None: no model yet)
    finish: Callable[[Store], None]  # completes the interrupted operation in-process


@pytest.fixture(scope="module")
def bundles(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[Spec, bytes]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8).path
    paths = build_bundles(model, [V100, V110, V120], {"keys": keys}, tmp_path_factory.mktemp("o"))
    return {spec: path.read_bytes() for spec, path in paths.items()}


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hook")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


@pytest.fixture(scope="module")
def scenarios(
    bundles: dict[Spec, bytes],
    keys: KeyFiles,
    other_keys: KeyFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Scenario]:
    work = tmp_path_factory.mktemp("scenarios")
    files = {}
    for spec, data in bundles.items():
        files[spec] = work / f"{spec.label}.bundle"
        files[spec].write_bytes(data)
    broken = work / "broken.bundle"
    broken.write_bytes(with_wrong_selftest(bundles[V100], keys, "1.5.0"))

    def base(name: str, *specs: Spec) -> Path:
        store = Store.init(work / name, [keys.public])
        for spec in specs:
            store.install(bundles[spec], origin="setup")
        return store.root

    def install(spec: Spec) -> Callable[[Store], None]:
        def finish(store: Store) -> None:
            result = store.install(bundles[spec], origin="after the crash")
            assert str(result.version) == spec.version

        return finish

    def reinstall_active(store: Store) -> None:
        # A rollback needs no completing; an install must still work after the crash.
        store.install(bundles[V120], origin="after the crash")

    two = base("two-installed", V100, V110)
    channel = work / "channel"
    signer = load_private_key(keys.private, None)
    for spec in (V110, V120):
        publish(files[spec], channel, [signer], timedelta(days=1), datetime.now(timezone.utc))

    def update(store: Store) -> None:
        report = update_once(store, channel.as_uri())
        assert str(store.state().models["credit"].active) == "1.2.0", report.lines()

    # the same channel after a key rotation: the pass adopts keys/1.json, then installs
    rotated = work / "rotated-channel"
    shutil.copytree(channel, rotated)
    new_key = load_private_key(other_keys.private, None)
    rotate_keys(rotated, [signer], [new_key], 1, timedelta(days=365), datetime.now(timezone.utc))

    def rotate_and_update(store: Store) -> None:
        report = update_once(store, rotated.as_uri())
        assert str(store.state().models["credit"].active) == "1.2.0", report.lines()
        assert store.trust().version == 1

    return [
        Scenario(
            "first-install",
            base("empty"),
            ["install", str(files[V100]), "--store", "{store}"],
            frozenset({None, "1.0.0"}),
            install(V100),
        ),
        Scenario(
            "upgrade-deletes-oldest",
            two,
            ["install", str(files[V120]), "--store", "{store}"],
            frozenset({"1.1.0", "1.2.0"}),
            install(V120),
        ),
        Scenario(
            "failed-selftest",
            base("one-installed", V100),
            ["install", str(broken), "--store", "{store}"],
            frozenset({"1.0.0"}),
            install(V110),
        ),
        Scenario(
            "ota-update-skips-to-newest",
            base("one-installed-for-ota", V100),
            ["update", "--store", "{store}", "--channel", channel.as_uri()],
            frozenset({"1.0.0", "1.2.0"}),
            update,
        ),
        Scenario(
            "ota-update-after-a-key-rotation",
            base("one-installed-for-rotation", V100),
            ["update", "--store", "{store}", "--channel", rotated.as_uri()],
            frozenset({"1.0.0", "1.2.0"}),
            rotate_and_update,
        ),
        Scenario(
            "rollback",
            two,
            ["rollback", "--store", "{store}", "--model", "credit"],
            frozenset({"1.0.0", "1.1.0"}),
            reinstall_active,
        ),
    ]


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    point: str  # which kill point, for messages
    store: Path
    returncode: int


def run_killed(
    scenario: Scenario, hook_dir: Path, store: Path, at: int, log: Path
) -> subprocess.CompletedProcess[str]:
    args = [a.replace("{store}", str(store)) for a in scenario.args]
    env = {
        **os.environ,
        "PYTHONPATH": str(hook_dir),
        "CRASH_ROOT": str(store),
        "CRASH_AT": str(at),
        "CRASH_LOG": str(log),
    }
    return subprocess.run(
        [str(BIN / "bundle-runtime"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count_points(scenario: Scenario, hook_dir: Path, tmp: Path) -> tuple[list[str], float]:
    store = tmp / f"{scenario.name}-count"
    shutil.copytree(scenario.base, store)
    log = tmp / f"{scenario.name}.log"
    started = time.monotonic()
    proc = run_killed(scenario, hook_dir, store, NEVER, log)
    elapsed = time.monotonic() - started
    assert proc.returncode in (0, 3), proc.stderr  # 3: the failed-selftest scenario refuses
    return log.read_text().splitlines(), elapsed


def check_consistent(outcome: Outcome) -> None:
    """The store opens, its state and trusted keys parse, every kept file matches its recorded
    sha256, the active version loads and is one the scenario allows, and the audit log is
    whole lines."""
    store = Store.open(outcome.store)
    model = store.state().models.get("credit")
    context = f"{outcome.scenario.name} killed {outcome.point}"
    assert store.trust().version in (0, 1), context  # the old key set or the new, whole
    if model is None:
        assert None in outcome.scenario.allowed, context
        return
    for text, record in model.installed.items():
        path = outcome.store / "bundles" / "credit" / f"{text}.bundle"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256, context
    loaded = store.load_active("credit")
    assert str(loaded.version) in outcome.scenario.allowed, context
    audit_events(outcome.store)


def check_finishes(outcome: Outcome) -> None:
    store = Store.open(outcome.store)
    outcome.scenario.finish(store)
    model = store.state().models["credit"]
    assert model.active is not None
    store.load_active("credit")
    kept = sorted(f"{v}.bundle" for v in model.installed)
    assert sorted(os.listdir(outcome.store / "bundles" / "credit")) == kept
    assert sorted(os.listdir(outcome.store / "bundles")) == ["credit"]
    assert not [n for n in os.listdir(outcome.store) if n.endswith(".tmp")]


def test_sigkill_at_every_store_operation_leaves_old_or_new_active(
    scenarios: list[Scenario], hook_dir: Path, tmp_path: Path
) -> None:
    jobs: list[tuple[Scenario, str, Callable[[Path], int]]] = []
    for scenario in scenarios:
        events, elapsed = count_points(scenario, hook_dir, tmp_path)
        assert len(events) >= 8, events
        if scenario.name == "upgrade-deletes-oldest":
            # The points include the switch and the deletion that must follow it.
            assert any(e.startswith("os.rename") and e.endswith("state.json") for e in events)
            assert any(e.startswith("os.remove") and "1.0.0.bundle" in e for e in events)
            for fraction in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
                delay = elapsed * fraction
                jobs.append((scenario, f"after {delay:.2f} s", _timed(scenario, delay)))
        for at in range(1, len(events) + 1):
            kill = _deterministic(scenario, hook_dir, at, tmp_path)
            jobs.append((scenario, f"before #{at} {events[at - 1]}", kill))

    def execute(indexed: tuple[int, tuple[Scenario, str, Callable[[Path], int]]]) -> Outcome:
        index, (scenario, point, kill) = indexed
        store = tmp_path / f"{index}-{scenario.name}"
        shutil.copytree(scenario.base, store)
        return Outcome(scenario, point, store, kill(store))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        outcomes = list(pool.map(execute, enumerate(jobs)))
    killed = [o for o in outcomes if o.returncode == -signal.SIGKILL]
    deterministic = [o for o in outcomes if o.point.startswith("before")]
    assert all(o.returncode == -signal.SIGKILL for o in deterministic), [
        (o.point, o.returncode) for o in deterministic if o.returncode != -signal.SIGKILL
    ]
    for outcome in outcomes:
        check_consistent(outcome)
        check_finishes(outcome)
    print(f"{len(deterministic)} deterministic kill points, {len(killed)} kills in all")


def _deterministic(scenario: Scenario, hook_dir: Path, at: int, tmp: Path) -> Callable[[Path], int]:
    def kill(store: Path) -> int:
        log = tmp / f"{store.name}.log"
        return run_killed(scenario, hook_dir, store, at, log).returncode

    return kill


def _timed(scenario: Scenario, delay: float) -> Callable[[Path], int]:
    def kill(store: Path) -> int:
        args = [a.replace("{store}", str(store)) for a in scenario.args]
        proc = subprocess.Popen(
            [str(BIN / "bundle-runtime"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=120)

    return kill


# --- fsync placement -------------------------------------------------------------------------


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    """Every fsync (by path), replace, unlink, mkdir and rmdir this process makes."""
    ops: list[tuple[str, ...]] = []
    real = {name: getattr(os, name) for name in ("fsync", "replace", "unlink", "mkdir", "rmdir")}

    def fsync(fd: int) -> None:
        ops.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real["fsync"](fd)

    def recorded(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            ops.append((name, *(os.fsdecode(a) for a in args[:2] if isinstance(a, (str, Path)))))
            return real[name](*args, **kwargs)

        return call

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("replace", "unlink", "mkdir", "rmdir"):
        monkeypatch.setattr(os, name, recorded(name))
    yield ops


def check_protocol(ops: list[tuple[str, ...]]) -> None:
    """A file is fsynced before a rename gives it its name; every change to a directory is
    fsynced before the next rename builds on it, and by the end."""
    synced: set[str] = set()
    unsynced_dirs: set[str] = set()
    for op in ops:
        kind, path = op[0], op[1]
        if kind == "fsync":
            synced.add(path)
            unsynced_dirs.discard(path)
            continue
        if kind == "replace":
            assert path in synced, f"renamed {path} before fsyncing it"
            assert not unsynced_dirs, f"{op} before fsyncing {unsynced_dirs}"
            unsynced_dirs.add(os.path.dirname(op[2]))
        else:
            unsynced_dirs.add(os.path.dirname(path))
    assert not unsynced_dirs, unsynced_dirs


def test_install_fsyncs_before_every_rename_and_after_every_directory_change(
    trace: list[tuple[str, ...]], bundles: dict[Spec, bytes], keys: KeyFiles, tmp_path: Path
) -> None:
    store = Store.init(tmp_path / "store", [keys.public])
    for spec in (V100, V110, V120):
        store.install(bundles[spec], origin="x")
    store.rollback("credit")  # active 1.1.0, previous 1.2.0
    store.mark_bad("credit", Version.parse("1.1.0"), "back to 1.2.0, 1.1.0's file goes")
    root = str(store.root)
    # From the store's own mkdir on: pytest made tmp_path with the trace already running.
    ops = trace[trace.index(("mkdir", root)) :]
    check_protocol(ops)
    names = [(op[0], op[-1].removeprefix(root)) for op in ops if op[0] != "fsync"]
    # The third install: its file is in place before the switch, the oldest goes only after.
    third = names.index(("replace", "/bundles/credit/1.2.0.bundle"))
    switch = names.index(("replace", "/state.json"), third)
    assert names.index(("unlink", "/bundles/credit/1.0.0.bundle")) > switch
    assert ("mkdir", "/bundles/credit") in names[:third]
