"""``bundle-runtime serve``: the store's models over HTTP/1.1 (stdlib sockets), from start to
drain.

``RunningServer`` loads the installed models, binds, and runs the connection loop
(``loop.py``), the store watcher that hot-swaps models (``serving.py``) and the drift reports
left in the store for ``bundle-runtime status``; ``serve`` runs it until SIGTERM or SIGINT and
reloads on SIGHUP. Configuration is ``config.py``; what a request goes through is
``connection.py`` (bytes and deadlines), ``http_request.py`` (its head), ``dispatch.py`` (token,
route, errors), ``routing.py`` and ``endpoints.py`` (the answer) and ``http_response.py``
(bytes again).
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebundle.runtime.errors import BundleError
from edgebundle.runtime.memory import limit_malloc_arenas
from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.saved import save_report
from edgebundle.runtime.serve.access_log import AccessLog
from edgebundle.runtime.serve.config import ServerConfig
from edgebundle.runtime.serve.endpoints import App
from edgebundle.runtime.serve.loop import Loop
from edgebundle.runtime.serve.metrics import Metrics
from edgebundle.runtime.serve.notify import notify
from edgebundle.runtime.serve.serving import ServedModels
from edgebundle.runtime.store import Store

if TYPE_CHECKING:
    from edgebundle.runtime.serve.tls import Tls

_MALLOC_ARENAS = 1  # see runtime.memory.limit_malloc_arenas


def log_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class RunningServer:
    """A started server: its address, a way to force a reload, and a draining ``stop``."""

    def __init__(self, store: Store, config: ServerConfig, log: Callable[[str], None]) -> None:
        limit_malloc_arenas(_MALLOC_ARENAS)
        self.log = log
        self.metrics = metrics = Metrics()
        self.models = models = ServedModels(
            store, config.threads, metrics, log, config.monitor_window
        )
        self._reporter = _Reporter(store.root, models, log)
        limits = config.limits
        self._app = App(models, metrics, limits.max_rows, limits.max_inflight, config.capture)
        self._tls: Tls | None = None
        if config.tls is not None:  # ssl only when asked for (tls.py)
            from edgebundle.runtime.serve.tls import Tls

            self._tls = Tls(config.tls, log)
        self._access_log = None if config.access_log is None else AccessLog(config.access_log)
        try:
            # Bind before loading models: a taken port fails at once.
            self._loop = Loop(
                (config.host, config.port), self._app, config, log, self._tls, self._access_log
            )
            try:
                models.refresh(force=True)  # serve the installed models from the first request
            except BaseException:
                self._loop.close()
                raise
        except BaseException:
            if self._access_log is not None:
                self._access_log.close()
            raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = (
            threading.Thread(
                target=models.watch,
                args=(self._stop, self._wake, config.reload_interval),
                name="edgebundle-reload",
                daemon=True,
            ),
            threading.Thread(
                target=self._reporter.run,
                args=(self._stop, config.report_interval),
                name="edgebundle-drift-reports",
                daemon=True,
            ),
        )
        for thread in self._threads:
            thread.start()
        self._loop.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._loop.address

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def reload(self) -> None:
        """Re-read the store now and retry versions that failed to load (SIGHUP)."""
        self._wake.set()

    def stop(self) -> bool:
        """Stop accepting, let requests in flight finish; False if some outlived the drain."""
        self._loop.draining = True
        timeout = self._loop.limits.drain_timeout
        self._loop.stop(timeout)
        drained = self._app.wait_idle(timeout)
        self._stop.set()
        self._wake.set()
        self._reporter.save()  # the final counts, for status after the server is gone
        if self._app.capture is not None:
            self._app.capture.close()
        if self._access_log is not None:
            self._access_log.close()
        return drained


class _Reporter:
    """Leaves each served model's drift report in the store for ``bundle-runtime status``,
    when its counts changed: the counts live in the server process only."""

    def __init__(self, root: Path, models: ServedModels, log: Callable[[str], None]) -> None:
        self._root = root
        self._models = models
        self._log = log
        self._saved: dict[str, tuple[Monitor, int]] = {}  # model -> (monitor, rows) saved
        self._failing = False

    def run(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            self.save()

    def save(self) -> None:
        for name, watched in self._models.current.watched.items():
            report = watched.monitor.report()
            saved = self._saved.get(name)
            if saved is not None and saved == (watched.monitor, report.since_start.rows):
                continue
            try:
                save_report(self._root, report)
            except BundleError as e:
                if not self._failing:  # say it once, not every minute
                    self._log(f"error: cannot write the drift report: {e}")
                self._failing = True
                return
            self._failing = False
            self._saved[name] = (watched.monitor, report.since_start.rows)


@dataclass(slots=True)
class _Signals:
    stop: bool = False
    reload: bool = False

    def on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def on_reload(self, signum: int, frame: object) -> None:
        self.reload = True


Companion = Callable[[RunningServer], Callable[[], None]]


def serve(
    store: Store,
    config: ServerConfig,
    log: Callable[[str], None] = log_line,
    companion: Companion | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then drain; SIGHUP reloads. Call from the main thread.
    ``companion`` is started with the running server (the fleet agent) and returns the
    function that stops it, called once requests have drained."""
    # The ~27k objects of the imported modules live as long as the process; a full garbage
    # collection walked them all, 10-16 ms that every queued request waited. Frozen before any
    # model is loaded, so that a model swapped out later can still be collected.
    gc.freeze()
    # Handlers before the socket: once the server answers, a SIGTERM must drain it, never kill
    # it (one that arrives while starting ends the loop below at once).
    signals = _Signals()
    previous = {
        signum: signal.signal(signum, handler)
        for signum, handler in (
            (signal.SIGTERM, signals.on_stop),
            (signal.SIGINT, signals.on_stop),
            (signal.SIGHUP, signals.on_reload),
        )
    }
    try:
        running = RunningServer(store, config, log)
    except BaseException:
        _restore(previous)
        raise
    try:
        stop_companion = None if companion is None else companion(running)
    except BaseException:
        running.stop()
        _restore(previous)
        raise
    log(f"serving on {running.url}")
    notify("READY=1")  # listening, models loaded, signals handled
    try:
        # Handlers only set flags: taking a lock inside one can deadlock the main thread.
        while not signals.stop:
            time.sleep(0.1)
            if signals.reload:
                signals.reload = False
                running.reload()
    finally:
        notify("STOPPING=1")
        drained = running.stop()
        if stop_companion is not None:
            stop_companion()
        _restore(previous)
    if not drained:
        log(f"error: requests still in flight after {config.limits.drain_timeout} s; exiting")
    return 0


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
