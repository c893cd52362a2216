"""What each URL answers: the endpoint functions ``(App, Request) -> Response`` that
``routing.py`` maps methods and paths to, and the ``App`` they share. No sockets here.

An endpoint raises ``HttpError`` for every answer that is not a success; ``dispatch.py`` renders
it as ``{"error": "..."}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import quote
from edgebundle.runtime.errors import BundleError, InputError
from edgebundle.runtime.rows.answers import ERROR_KEY, Observer, output_columns, score_rows
from edgebundle.runtime.semver import Version
from edgebundle.runtime.serve.capture import Capture
from edgebundle.runtime.serve.httpio import (
    JSON_TYPE,
    HttpError,
    Response,
    decode_json,
    json_response,
    media_type,
)
from edgebundle.runtime.serve.invocations import (
    CSV_TYPE,
    encode_predictions,
    parse_csv_rows,
    parse_json_rows,
)
from edgebundle.runtime.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from edgebundle.runtime.serve.metrics import Metrics
from edgebundle.runtime.serve.oip import (
    HEADER_LENGTH,
    encode_infer,
    model_metadata,
    parse_infer,
    server_metadata,
)
from edgebundle.runtime.serve.serving import ServedModels, Snapshot
from edgebundle.runtime.store import LoadedModel

_BINARY = "application/octet-stream"
# What `curl -d` sends: taken for JSON when the body is JSON (_form_is_json).
_FORM = "application/x-www-form-urlencoded"
_INFER_TYPES = ("", JSON_TYPE, _BINARY, _FORM)


class App:
    """What every request needs: the served models, the metrics, and the bounds on scoring."""

    def __init__(
        self,
        models: ServedModels,
        metrics: Metrics,
        max_rows: int,
        max_inflight: int,
        capture: Capture | None = None,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.capture = capture
        self.max_rows = max_rows
        self._in_flight = _InFlight()
        self._scoring_slot = _ScoringSlot(max_inflight)

    def in_flight(self) -> _InFlight:
        """Count a request from its parsed headers to its written response (for draining)."""
        return self._in_flight

    @property
    def inflight(self) -> int:
        return self._in_flight.count

    def wait_idle(self, timeout: float) -> bool:
        return self._in_flight.wait_idle(timeout)

    def scoring_slot(self) -> _ScoringSlot:
        """One of ``max_inflight`` slots for scoring, or a 503 at once."""
        return self._scoring_slot


# Context managers as classes, built once per App: @contextmanager costs a generator and a
# wrapper per use, on every request.
class _InFlight:
    """A count under a plain lock: a Condition's notify costs more per request than the rest
    of this bookkeeping, and only a draining server ever waits for zero."""

    _POLL_SECONDS = 0.01

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self._POLL_SECONDS)
        return True


class _ScoringSlot:
    def __init__(self, max_inflight: int) -> None:
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._busy = f"server busy: {max_inflight} requests are being scored; retry"

    def __enter__(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise HttpError(503, self._busy, (("Retry-After", "1"),))

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


@dataclass(frozen=True, slots=True)
class Request:
    params: Mapping[str, str]  # from the path
    query: Mapping[str, list[str]]
    header: Callable[[str], str | None]
    read_body: Callable[[], bytes]


def live(app: App, request: Request) -> Response:
    return json_response(200, {"live": True})


def server_ready(app: App, request: Request) -> Response:
    snapshot = app.models.current
    if snapshot.ready:
        return json_response(200, {"ready": True})
    if snapshot.unloaded:
        reason = f"not ready: {', '.join(sorted(snapshot.unloaded))} failed to load"
    else:
        reason = "not ready: no model is installed"
    return json_response(503, {"ready": False, "error": reason})


def describe_server(app: App, request: Request) -> Response:
    return json_response(200, server_metadata())


def describe_everything(app: App, request: Request) -> Response:
    """``GET /``: the server, and the models it serves."""
    return json_response(200, {**server_metadata(), **_served(app.models.current)})


def list_models(app: App, request: Request) -> Response:
    return json_response(200, _served(app.models.current))


def _served(snapshot: Snapshot) -> dict[str, Any]:
    """Every installed model: its version served, or ready false when it failed to load."""
    return {
        "models": [
            {"name": name, "version": str(snapshot.models[name].version), "ready": True}
            if name in snapshot.models
            else {"name": name, "ready": False}
            for name in sorted({*snapshot.installed, *snapshot.models})
        ]
    }


def describe_model(app: App, request: Request) -> Response:
    model = _find_model(app.models.current, request.params)
    return json_response(200, model_metadata(model.manifest), model.name)


def model_ready(app: App, request: Request) -> Response:
    model = _find_model(app.models.current, request.params)
    return json_response(200, {"name": model.name, "ready": True}, model.name)


def infer(app: App, request: Request) -> Response:
    snapshot = app.models.current
    model = _find_model(snapshot, request.params)
    kind = _check_body_type(request, _INFER_TYPES, "application/json or application/octet-stream")
    with app.scoring_slot():
        body = request.read_body()
        _form_is_json(kind, body)
        parsed = parse_infer(body, request.header(HEADER_LENGTH), model.manifest, app.max_rows)
        with _scoring_failures():
            scored = model.scorer.predict(parsed.x)
        data, header_length = encode_infer(model.manifest, parsed, scored)
    observe = _observer(app, snapshot, model)
    if observe is not None:
        observe(parsed.x, scored)
    app.metrics.add_rows(model.name, len(parsed.x))
    if header_length is None:
        return Response(200, data, model=model.name)
    headers = ((HEADER_LENGTH, str(header_length)),)
    return Response(200, data, _BINARY, headers, model.name)


def invocations(app: App, request: Request) -> Response:
    snapshot = app.models.current
    model = _invocation_model(snapshot, request.query)
    kind = _check_body_type(request, (JSON_TYPE, CSV_TYPE, _FORM), "application/json or text/csv")
    features = model.scorer.features
    limit = app.max_rows
    with app.scoring_slot():
        body = request.read_body()
        _form_is_json(kind, body)
        if kind == CSV_TYPE:
            reserved = {*output_columns(model.scorer.outputs), ERROR_KEY}
            rows = parse_csv_rows(body, features, reserved, limit, model.scorer.category_names)
        else:
            rows = parse_json_rows(body, features, limit, model.scorer.category_names)
        with _scoring_failures():
            records = score_rows(model.scorer, rows, _observer(app, snapshot, model))
    app.metrics.add_rows(model.name, len(rows))
    return Response(200, encode_predictions(records), model=model.name)


def _observer(app: App, snapshot: Snapshot, model: LoadedModel) -> Observer | None:
    """What sees a request's scored rows: the model's drift monitor and the data capture."""
    watched = snapshot.watched.get(model.name)
    capture = app.capture
    if capture is None:
        return None if watched is None else watched.observe

    def observe(x: npt.NDArray[np.float32], outputs: Mapping[str, npt.NDArray[Any]]) -> None:
        if watched is not None:
            watched.observe(x, outputs)
        capture.record(model.name, str(model.version), model.scorer.features, x, outputs)

    return observe


def model_stats(app: App, request: Request) -> Response:
    snapshot = app.models.current
    model = _find_model(snapshot, request.params)
    watched = snapshot.watched.get(model.name)
    if watched is None:
        raise HttpError(404, "drift monitoring is off (the server runs with --no-monitor)")
    return Response(200, watched.monitor.report().to_bytes(), model=model.name)


def metrics(app: App, request: Request) -> Response:
    reports = [watched.monitor.report() for watched in app.models.current.watched.values()]
    return Response(200, app.metrics.render(app.inflight, reports), METRICS_TYPE)


def _find_model(snapshot: Snapshot, params: Mapping[str, str]) -> LoadedModel:
    name = params["model"]
    model = snapshot.models.get(name)
    if model is None:
        if name in snapshot.unloaded:
            raise HttpError(503, f"model {name!r} is not ready: its active version failed to load")
        raise HttpError(404, f"unknown model {quote(name)}")
    version = params.get("version")
    if version is not None and not _same_version(version, model.version):
        raise HttpError(
            404, f"model {name!r} has no version {quote(version)}; it serves {model.version}"
        )
    return model


def _same_version(text: str, served: Version) -> bool:
    try:
        return Version.parse(text) == served
    except BundleError:
        return False


def _invocation_model(snapshot: Snapshot, query: Mapping[str, list[str]]) -> LoadedModel:
    names = query.get("model", [])
    if len(names) > 1:
        raise HttpError(400, "give ?model= once")
    if names:
        return _find_model(snapshot, {"model": names[0]})
    if snapshot.default is not None:
        return _find_model(snapshot, {"model": snapshot.default})
    if not snapshot.installed:
        raise HttpError(404, "no model is installed")
    several = ", ".join(snapshot.installed)
    raise HttpError(400, f"the store holds several models ({several}); add ?model=NAME")


def _check_body_type(request: Request, allowed: tuple[str, ...], spelled: str) -> str:
    encoding = (request.header("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise HttpError(415, f"Content-Encoding {quote(encoding)} is not supported; send it plain")
    kind = media_type(request.header("Content-Type"))
    if kind not in allowed:
        shown = quote(kind) if kind else "missing"
        raise HttpError(415, f"Content-Type is {shown}; send {spelled}")
    return kind


def _form_is_json(kind: str, body: bytes) -> None:
    """A body sent as a form (``curl -d``) is read as JSON when it is JSON; else a 415."""
    if kind != _FORM:
        return
    try:
        decode_json(body)
    except HttpError:
        raise HttpError(415, f"Content-Type is {_FORM} and the body is not JSON; "
                        "send application/json") from None


@contextmanager
def _scoring_failures() -> Iterator[None]:
    """The scorer's own errors as answers (rows are checked before, so neither is expected)."""
    try:
        yield
    except InputError as e:
        raise HttpError(400, str(e)) from None
    except BundleError as e:  # onnxruntime failed on a model its selftest passed
        raise HttpError(500, f"scoring failed: {e}") from None
