"""Which endpoint answers a request: its path picks a route, its method the route's endpoint.

Routes (the README's "HTTP" section):

- ``GET /``: the server's name and version and the models it serves; ``GET /v2/models``: the
  models alone.
- Open Inference Protocol v2 (``oip.py``): ``GET /v2/health/live``, ``/v2/health/ready``
  (ready when every model with an active version in the store is loaded), ``/v2``,
  ``/v2/models/{name}[/versions/{v}]``, ``.../ready``, ``.../stats`` (the drift report), and
  ``POST /v2/models/{name}[/versions/{v}]/infer``. A version other than the one being served
  is a 404.
- MLflow-style ``POST /invocations[?model=NAME]`` (``invocations.py``); without ``model`` the
  store's only model.
- ``GET /metrics``, Prometheus text format (``metrics.py``).

HEAD is answered as GET wherever GET is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from edgebundle.runtime._json import quote
from edgebundle.runtime.serve import endpoints
from edgebundle.runtime.serve.endpoints import App, Request
from edgebundle.runtime.serve.httpio import HttpError, Response

PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready")  # answered without a bearer token

Endpoint = Callable[[App, Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the metrics' endpoint label
    pattern: re.Pattern[str]
    methods: Mapping[str, Endpoint]


_NAME = r"(?P<model>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"
_MODEL = rf"/v2/models/{_NAME}{_VERSION}"
ROUTES = (
    Route("root", re.compile(r"/"), {"GET": endpoints.describe_everything}),
    Route("models", re.compile(r"/v2/models"), {"GET": endpoints.list_models}),
    Route("live", re.compile(r"/v2/health/live"), {"GET": endpoints.live}),
    Route("ready", re.compile(r"/v2/health/ready"), {"GET": endpoints.server_ready}),
    Route("server_metadata", re.compile(r"/v2"), {"GET": endpoints.describe_server}),
    Route("model_metadata", re.compile(_MODEL), {"GET": endpoints.describe_model}),
    Route("model_ready", re.compile(rf"{_MODEL}/ready"), {"GET": endpoints.model_ready}),
    Route("infer", re.compile(rf"{_MODEL}/infer"), {"POST": endpoints.infer}),
    Route("stats", re.compile(rf"{_MODEL}/stats"), {"GET": endpoints.model_stats}),
    Route("invocations", re.compile(r"/invocations"), {"POST": endpoints.invocations}),
    Route("metrics", re.compile(r"/metrics"), {"GET": endpoints.metrics}),
)
# Routes without parameters by their path: most requests find theirs in one lookup. Their
# patterns hold no regex syntax, so the pattern text is the path.
_FIXED = {route.pattern.pattern: route for route in ROUTES if not route.pattern.groups}


def match(path: str) -> tuple[Route | None, dict[str, str]]:
    """The route of ``path`` (None: no endpoint there) and the parameters it holds, decoded."""
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed, {}
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
            return route, params
    return None, {}


def endpoint(route: Route | None, method: str, path: str) -> Endpoint:
    """What answers ``method`` on the route ``match`` found for ``path``: HttpError 404 without
    a route, 405 naming the methods allowed when the route has none for ``method``."""
    if route is None:
        raise HttpError(404, f"no endpoint {quote(path)}")
    found = route.methods.get("GET" if method == "HEAD" else method)
    if found is None:
        allowed = sorted({*route.methods, *(("HEAD",) if "GET" in route.methods else ())})
        raise HttpError(
            405,
            f"{method} is not allowed here; use {' or '.join(allowed)}",
            (("Allow", ", ".join(allowed)),),
        )
    return found
