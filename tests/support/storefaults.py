"""Shared by the store's fault tests: releases of one model whose answers tell the versions
apart, a client that keeps scoring against a live server, and the checks every fault must pass.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from edgebundle.builder.drill import repacked
from edgebundle.runtime.fsio import is_temp_name
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import BUNDLE_SUFFIX, BUNDLES_DIR, ModelState, Store
from tests.conftest import KeyFiles
from tests.support.serverkit import HOST, Built, build, infer_body, request
from tests.support.store_helpers import audit_events
from tests.support.xgbmodels import features

MODEL = "credit"
INFER = f"/v2/models/{MODEL}/infer"
# Far above what a few dozen seconds of probing sends: only a bound on a runaway loop.
MAX_PROBES = 100_000
PROBE_PAUSE = 0.01  # leaves the CPU to the processes under test on a 2-core machine
TOLERANCE = 1e-5  # float bundles match XGBoost to ~1e-6


def version(minor: int) -> str:
    return f"1.{minor}.0"


def minor_of(text: str) -> int:
    return int(text.split(".")[1])


class Releases:
    """Versions 1.k.0 of "credit", written on demand: even k repack one model, odd k another
    (the same data trained for 5 and 60 rounds), so every answer tells which one computed it.

    Repacking re-signs a real bundle under a new version in milliseconds, where building one
    takes seconds: a test can go through dozens of versions.
    """

    def __init__(self, keys: KeyFiles, directory: Path) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            built = list(pool.map(lambda r: _build(keys, directory, r), (5, 60)))
        self._sources = [model.bundle.read_bytes() for model in built]
        self._key = load_private_key(keys.private, None)
        self._directory = directory
        x = features(200, seed=21)
        gap = np.abs(built[0].trained.predict(x) - built[1].trained.predict(x))
        row = int(np.argmax(gap))
        self.probe = x[row : row + 1]
        self._expected = [float(model.trained.predict(self.probe)[0]) for model in built]

    def bundle(self, minor: int) -> Path:
        path = self._directory / f"{MODEL}-{version(minor)}.bundle"
        if not path.exists():
            source = self._sources[minor % 2]
            path.write_bytes(repacked(source, self._key, Version.parse(version(minor)), {}))
        return path

    def expected(self, text: str) -> float:
        """What version ``text`` answers for ``probe``."""
        return self._expected[minor_of(text) % 2]


def _build(keys: KeyFiles, directory: Path, rounds: int) -> Built:
    workdir = directory / f"rounds-{rounds}"
    workdir.mkdir()
    return build(keys, workdir, MODEL, "0.0.0", rounds=rounds)


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    version: str | None
    value: float | None
    detail: str


class Prober:
    """Scores the probe row against a live server on a thread until the block ends, one new
    connection per request so that a refused connection shows as one, and keeps every answer.
    """

    def __init__(self, port: int, releases: Releases) -> None:
        self._port = port
        self._body = json.dumps(infer_body(releases.probe)).encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self.answers: list[Answer] = []

    def __enter__(self) -> Prober:
        self._thread.start()
        wait_for(lambda: bool(self.answers))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the prober hangs"

    def answered_since(self, count: int) -> Callable[[], bool]:
        return lambda: len(self.answers) > count

    def problems(self, releases: Releases, versions: Collection[str]) -> list[Answer]:
        """Every answer that is not a 200 from one of ``versions`` with that version's value."""
        return [a for a in self.answers if not _is_good(a, releases, versions)]

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.answers) < MAX_PROBES:
            self.answers.append(self._ask())
            self._stop.wait(PROBE_PAUSE)

    def _ask(self) -> Answer:
        connection = http.client.HTTPConnection(HOST, self._port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", INFER, self._body, headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            return Answer(None, None, None, repr(e))
        finally:
            connection.close()
        try:
            answer = json.loads(body)
            return Answer(
                response.status,
                answer["model_version"],
                float(answer["outputs"][0]["data"][0]),
                "",
            )
        except (ValueError, KeyError, IndexError, TypeError):
            return Answer(response.status, None, None, body[:200].decode(errors="replace"))


def _is_good(answer: Answer, releases: Releases, versions: Collection[str]) -> bool:
    text, value = answer.version, answer.value
    if answer.status != 200 or text is None or text not in versions or value is None:
        return False
    return abs(value - releases.expected(text)) <= TOLERANCE


def served_version(port: int) -> str:
    return str(request(port, "GET", f"/v2/models/{MODEL}").json()["versions"][0])


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """A bound on a hang, not a speed requirement."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def check_store(root: Path, allowed: Collection[str], context: str) -> ModelState:
    """The store opens, its state parses, the active version is one of ``allowed`` and loads,
    every kept file matches the sha256 the state recorded, and the audit log is whole JSON
    lines."""
    store = Store.open(root)
    model = store.state().models[MODEL]
    assert str(model.active) in allowed, context
    for text, record in model.installed.items():
        data = (root / BUNDLES_DIR / MODEL / f"{text}{BUNDLE_SUFFIX}").read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256, context
    assert str(store.load_active(MODEL).version) == str(model.active), context
    audit_events(root)
    return model


def leftovers(root: Path) -> list[str]:
    """Temp files anywhere in the store, and bundle files its state does not name."""
    state = Store.open(root).state()
    found = [str(p.relative_to(root)) for p in root.rglob("*") if is_temp_name(p.name)]
    bundles = root / BUNDLES_DIR
    for path in bundles.glob(f"*/*{BUNDLE_SUFFIX}"):
        model = state.models.get(path.parent.name)
        if model is None or path.name.removesuffix(BUNDLE_SUFFIX) not in model.installed:
            found.append(str(path.relative_to(root)))
    return sorted(found)
