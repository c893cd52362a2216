"""The store's timestamps (``installed_at``, an audit event's ``time``): UTC, whole seconds, in
the one form ``runtime.document.TIMESTAMP`` reads back."""

from __future__ import annotations

import datetime

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(_TIME_FORMAT)
