"""One parsed request to its answer: the bearer token, the route, the endpoint, and every
failure as JSON ``{"error": "one line"}`` with its status.

An unexpected exception is a 500 with a generic message and one line in the log. With a bearer
token every endpoint but the two health checks answers 401 without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from edgebundle.runtime.serve.endpoints import App, Request
from edgebundle.runtime.serve.http_request import Head, HeaderFields
from edgebundle.runtime.serve.httpio import HttpError, Response, error_response, one_line
from edgebundle.runtime.serve.routing import PUBLIC_PATHS, endpoint, match
from edgebundle.runtime.serve.serving import Snapshot

_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="edgebundle"'),)
_INVALID_TOKEN = (("WWW-Authenticate", 'Bearer realm="edgebundle", error="invalid_token"'),)


def answer(
    app: App,
    head: Head,
    read_body: Callable[[], bytes],
    token: bytes | None,
    log: Callable[[str], None],
) -> tuple[str, Response]:
    """The metrics' endpoint label and the response to ``head``; ``read_body`` reads the body
    when the endpoint wants it, ``token`` is the bearer token required (None: none)."""
    target = urlsplit(head.path)
    path, query = target.path, parse_qs(target.query)
    route, params = match(path)
    label = route.name if route is not None else "other"
    model = model_label(app.models.current, params, query)
    try:
        if path not in PUBLIC_PATHS:
            _authorize(head.fields, token)
        answering = endpoint(route, head.method, path)
        return label, answering(app, Request(params, query, head.fields.get, read_body))
    except HttpError as e:
        return label, error_response(e, model)
    except Exception as e:  # a bug: answer, log one line, keep serving
        log(f"error: {head.method} {label}: {type(e).__name__}: {one_line(e)}")
        return label, error_response(HttpError(500, "internal server error"), model)


def model_label(
    snapshot: Snapshot, params: Mapping[str, str], query: Mapping[str, list[str]]
) -> str:
    """The served model a request is about, or "": label values must not come from clients."""
    named = query.get("model")
    name = params.get("model") or (named[0] if named else snapshot.default)
    return name if name is not None and name in snapshot.models else ""


def _authorize(fields: HeaderFields, token: bytes | None) -> None:
    if token is None:
        return
    scheme, _, credentials = (fields.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise HttpError(401, "a bearer token is required", _CHALLENGE)
    offered = credentials.strip().encode("latin-1", "replace")
    if not hmac.compare_digest(offered, token):
        raise HttpError(401, "invalid bearer token", _INVALID_TOKEN)
