"""SIGKILL `bundle-runtime install`, `update` and `rollback` at random instants, one after the
other on one store, while a real `bundle-runtime serve` on that store answers a client all along.

test_store_crash.py kills before each file operation, on a fresh copy of a store each time;
here the store lives on through every kill, so each operation starts from whatever the kills
before it left, and the server hot-swaps at every switch a killed operation did make. Each run
is killed after a delay drawn uniformly from [0, the operation's measured uninterrupted
duration], interpreter start-up included as on a device. The seed is printed; set
STORE_CHAOS_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle.builder.publish import publish
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import ModelState, Store
from tests.conftest import KeyFiles
from tests.support.serverkit import serve_process
from tests.support.storefaults import (
    MODEL,
    Prober,
    Releases,
    check_store,
    leftovers,
    minor_of,
    served_version,
    version,
    wait_for,
)
from tests.support.xgbmodels import BIN

KILLS = 51
OPERATIONS = ("install", "update", "rollback")
SEED_VARIABLE = "STORE_CHAOS_SEED"
HANG = 120.0  # seconds: a bound on a hung operation, far above any real run


@pytest.fixture(scope="module")
def releases(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Releases:
    return Releases(keys, tmp_path_factory.mktemp("releases"))


@dataclass
class Tally:
    """What the runs given a delay came to."""

    finished: int = 0  # done before its delay ran out
    killed: int = 0
    switched: int = 0  # killed after its switch: the new version is active
    torn: int = 0  # killed leaving new leftovers for a later operation to sweep

    def __str__(self) -> str:
        return (
            f"{self.finished} finished, {self.killed} killed ({self.switched} after the switch, "
            f"{self.torn} leaving leftovers)"
        )


@dataclass(frozen=True)
class Plan:
    args: list[str]
    allowed: frozenset[str]  # what may be active after a kill
    done: str  # what is active after a finished run


class Chaos:
    """One store under install, update and rollback, each run to the end or killed, and the
    checks every run must pass, whichever it was."""

    def __init__(
        self, root: Path, releases: Releases, channel: Path, signer: Ed25519PrivateKey, seed: int
    ) -> None:
        self.root = root
        self.releases = releases
        self.channel = channel
        self.signer = signer
        self.seed = seed
        # Every version active at some point: the only ones the server may answer with.
        self.active = {str(self.model().active)}
        self.leftovers: list[str] = []  # as the last run left them
        self.tally = Tally()

    def model(self) -> ModelState:
        return Store.open(self.root).state().models[MODEL]

    def run(self, operation: str, delay: float | None) -> float:
        """Run ``operation``, SIGKILLed after ``delay`` seconds unless None; check the store
        as it is left; return how long the process ran."""
        before = self.model()
        plan = self._plan(operation, before)
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(BIN / "bundle-runtime"), *plan.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, stderr = proc.communicate(timeout=HANG if delay is None else delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            assert delay is not None, f"{operation} hangs"
        elapsed = time.monotonic() - started
        when = "uninterrupted" if delay is None else f"killed after {delay:.3f} s"
        context = f"{operation} {when} (seed {self.seed})"
        killed = proc.returncode == -signal.SIGKILL
        assert killed or proc.returncode == 0, f"{context}: {proc.returncode} {stderr}"
        after = check_store(self.root, plan.allowed, context)
        found = leftovers(self.root)
        if killed:
            self.tally.killed += 1
            self.tally.switched += after.active != before.active
            self.tally.torn += bool(set(found) - set(self.leftovers))
        else:
            self.tally.finished += delay is not None
            assert str(after.active) == plan.done, context
            assert found == [], context  # whatever kills before left, a finished run swept
        self.active.add(str(after.active))
        self.leftovers = found
        return elapsed

    def _plan(self, operation: str, model: ModelState) -> Plan:
        store = ["--store", str(self.root)]
        if operation == "rollback":
            versions = frozenset({str(model.active), str(model.previous)})
            return Plan(["rollback", *store, "--model", MODEL], versions, str(model.previous))
        # A killed run may already have made the next version the highest seen: go past it.
        minor = minor_of(str(model.highest_seen)) + 1
        allowed = frozenset({str(model.active), version(minor)})
        bundle = self.releases.bundle(minor)
        if operation == "install":
            return Plan(["install", str(bundle), *store], allowed, version(minor))
        # The channel's newest is the target, so the update installs exactly that one.
        now = datetime.now(timezone.utc)
        publish(bundle, self.channel, [self.signer], timedelta(days=1), now)
        args = ["update", *store, "--channel", self.channel.as_uri()]
        return Plan(args, allowed, version(minor))


def chaos_seed() -> int:
    text = os.environ.get(SEED_VARIABLE)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def test_sigkill_at_random_instants_under_load_leaves_old_or_new_active_and_served(
    releases: Releases, keys: KeyFiles, tmp_path: Path
) -> None:
    seed = chaos_seed()
    print(f"{SEED_VARIABLE}={seed}")
    rng = random.Random(seed)
    root = tmp_path / "store"
    store = Store.init(root, [keys.public])
    for minor in (0, 1):
        store.install(releases.bundle(minor).read_bytes(), origin="setup")
    signer = load_private_key(keys.private, None)
    chaos = Chaos(root, releases, tmp_path / "channel", signer, seed)

    with (
        serve_process(root, tmp_path / "serve.log") as server,
        Prober(server.port, releases) as prober,
    ):
        durations = {operation: chaos.run(operation, None) for operation in OPERATIONS}
        for _ in range(KILLS):
            operation = rng.choice(OPERATIONS)
            chaos.run(operation, rng.uniform(0, durations[operation]))
        chaos.run("install", None)  # the last kill's leftovers are swept too
        final = str(chaos.model().active)
        wait_for(lambda: served_version(server.port) == final)
        # The answer after next was asked for after the swap.
        wait_for(prober.answered_since(len(prober.answers) + 1))
        last = prober.answers[-1]
        log = server.stderr()

    problems = prober.problems(releases, chaos.active)
    assert problems == [], f"seed {seed}: {len(problems)} bad answers, first {problems[:5]}"
    assert last.version == final
    assert "Traceback" not in log and "error" not in log, log
    durations_text = ", ".join(f"{op} {seconds:.2f} s" for op, seconds in durations.items())
    print(
        f"{KILLS} runs under random kills ({chaos.tally}); uninterrupted: {durations_text}; "
        f"{len(prober.answers)} answers, all from {sorted(chaos.active, key=minor_of)}"
    )
