"""The models a server answers with, kept in step with the store without stopping requests.

``ServedModels.current`` is an immutable ``Snapshot``; a request reads it once and scores with
the ``LoadedModel`` it found, so a reload never changes a model under a request in flight. The
watcher thread polls ``Store.state_token`` and, when the pointer file was replaced, loads each
model whose active version changed (verification and onnxruntime session creation take
milliseconds to seconds: never on a request's path), then publishes a new snapshot with a
single reference assignment. A version that will not load leaves the old one serving and, when
the bundle is at fault (not a passing store hiccup), is marked bad in the store, which rolls
the store back to the version still served; a version is tried again only when the store
changes again or on an explicit reload (SIGHUP), so a broken bundle costs one log line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import BundleError, StoreError
from edgebundle.runtime.monitor.counting import DEFAULT_WINDOW_ROWS, Monitor
from edgebundle.runtime.semver import Version
from edgebundle.runtime.serve.metrics import Metrics, ModelInfo
from edgebundle.runtime.store import LoadedModel, Store, StoreState

RELOAD_INTERVAL = 0.5  # seconds between polls of the store's pointer file


@dataclass(frozen=True, slots=True)
class Watched:
    """A served model's drift monitor and the scored rows it is fed."""

    monitor: Monitor
    output: str  # the bundle's first output: what the prediction histogram bins

    def observe(self, x: npt.NDArray[np.float32], outputs: Mapping[str, npt.NDArray[Any]]) -> None:
        self.monitor.observe(x, outputs[self.output])


@dataclass(frozen=True, slots=True)
class Snapshot:
    models: Mapping[str, LoadedModel] = field(default_factory=lambda: MappingProxyType({}))
    # One per served model, made with it, so a model switch starts counting afresh; empty
    # when monitoring is off.
    watched: Mapping[str, Watched] = field(default_factory=lambda: MappingProxyType({}))
    installed: tuple[str, ...] = ()  # models with an active version in the store, sorted
    unloaded: frozenset[str] = frozenset()  # installed but not served: their load failed

    @property
    def ready(self) -> bool:
        return bool(self.models) and not self.unloaded

    @property
    def default(self) -> str | None:
        """The model a request that names none is for: the store's only one."""
        return self.installed[0] if len(self.installed) == 1 else None


class ServedModels:
    """The store's active models, loaded; ``current`` is replaced whole, never changed."""

    def __init__(
        self,
        store: Store,
        threads: int,
        metrics: Metrics,
        log: Callable[[str], None],
        window_rows: int | None = DEFAULT_WINDOW_ROWS,
    ) -> None:
        """``window_rows``: the drift monitor's recent window; None turns monitoring off."""
        self._store = store
        self._threads = threads
        self._window_rows = window_rows
        self._metrics = metrics
        self._log = log
        self._token: tuple[int, int, int] | None = None
        self._failed: dict[str, str] = {}  # model -> version text that failed to load
        self.current = Snapshot()

    def refresh(self, force: bool = False) -> None:
        """Bring the served models in line with the store, if it changed (or ``force``)."""
        token = self._store.state_token()
        if token == self._token and not force:
            return
        if force:
            self._failed.clear()
        state = self._store.state()
        models = self._reconcile(state)
        for name in self.current.models.keys() - models.keys():
            self._log(f"stopped serving {name}: it has no active version in the store")
            self._metrics.model_removed(name)
        installed = sorted(n for n, m in state.models.items() if m.active is not None)
        self.current = Snapshot(
            models=MappingProxyType(models),
            watched=MappingProxyType(self._watched(models)),
            installed=tuple(installed),
            unloaded=frozenset(installed) - models.keys(),
        )
        self._token = token

    def _watched(self, models: Mapping[str, LoadedModel]) -> dict[str, Watched]:
        if self._window_rows is None:
            return {}
        old = self.current.watched
        watched = {}
        for name, model in models.items():
            kept = old.get(name)
            if kept is not None and self.current.models[name] is model:
                watched[name] = kept
                continue
            monitor = Monitor(name, str(model.version), model.baseline, self._window_rows)
            watched[name] = Watched(monitor, model.manifest.outputs[0].name)
        return watched

    def _reconcile(self, state: StoreState) -> dict[str, LoadedModel]:
        served = self.current.models
        models: dict[str, LoadedModel] = {}
        for name, model in state.models.items():
            if model.active is None:
                continue
            old = served.get(name)
            wanted = str(model.active)
            changed = old is None or str(old.version) != wanted
            new = None
            if changed and self._failed.get(name) != wanted:
                new = self._load(name, wanted, old)
            kept = new or old
            if kept is not None:
                models[name] = kept
        return models

    def _load(self, name: str, wanted: str, old: LoadedModel | None) -> LoadedModel | None:
        try:
            loaded = self._store.load_active(name, self._threads)
        except Exception as e:  # whatever the reason, this version is not served: say so once
            self._failed[name] = wanted
            keeping = f"; still serving {old.version}" if old is not None else ""
            self._log(f"error: cannot load {name}: {_one_line(e)}{keeping}")
            self._metrics.model_load_failed(name)
            if old is not None and _is_the_bundles_fault(e):
                self._roll_back(name, wanted, e)
            return None
        self._failed.pop(name, None)
        was = f" (was {old.version})" if old is not None else ""
        self._log(f"serving {name} {loaded.version}{was}")
        info = ModelInfo(str(loaded.version), loaded.manifest.precision, loaded.sha256)
        self._metrics.model_loaded(name, info)
        return loaded

    def _roll_back(self, name: str, version: str, error: BaseException) -> None:
        """Mark a version that passed its selftest at install but will not load here as bad:
        the store then makes the version still being served active again (RAUC-style)."""
        try:
            self._store.mark_bad(
                name, Version.parse(version), f"failed to load in the server: {_one_line(error)}"
            )
        except BundleError as e:  # the store may be locked or unreadable: retry on next change
            self._log(f"error: cannot mark {name} {version} bad: {_one_line(e)}")
            return
        self._log(f"marked {name} {version} bad and rolled back")

    def watch(self, stop: threading.Event, wake: threading.Event, interval: float) -> None:
        """Poll until ``stop``, counting the rows the monitors queued at every poll; setting
        ``wake`` forces a reload now (SIGHUP)."""
        while not stop.is_set():
            forced = wake.is_set()
            wake.clear()
            try:
                self.refresh(force=forced)
            except Exception as e:  # keep watching: the next poll may find the store readable
                self._log(f"error: cannot read the store: {_one_line(e)}")
            for watched in self.current.watched.values():
                watched.monitor.flush()  # drift counting, off the request path
            wake.wait(interval)


def _is_the_bundles_fault(error: BaseException) -> bool:
    """A verification or compatibility failure is the bundle's; a StoreError (a lock timeout,
    an unreadable directory) may pass and must never condemn a good version."""
    return isinstance(error, BundleError) and not isinstance(error, StoreError)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
