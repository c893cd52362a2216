"""``audit.log``: one JSON line per event, appended durably and never rewritten.

The log records what the store did and what it refused, with where an install came from; the
store appends under its exclusive lock, so lines never interleave.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edgebundle.runtime._json import (
    dumps_canonical,
    get_optional,
    get_sha256,
    get_str,
    get_timestamp,
    join,
    loads_strict,
    quote,
    reject_unknown,
)
from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import append_durably
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store._clock import now

AUDIT_FILE = "audit.log"
AUDIT_EVENTS = ("init", "installed", "refused", "rollback", "marked-bad", "keys-rotated", "removed")
# One line is a few hundred bytes; a longer one is not a line this store wrote.
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """One line of ``audit.log``. ``model``/``version`` are null when a bundle was refused
    before its manifest could be trusted; ``origin`` is where an install came from."""

    time: str
    event: str
    model: str | None
    version: str | None
    sha256: str | None
    origin: str | None
    reason: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> AuditEvent:
        keys = ("time", "event", "model", "version", "sha256", "origin", "reason")
        reject_unknown(d, keys, context)
        event = get_str(d, "event", context)
        if event not in AUDIT_EVENTS:
            raise ManifestError(f"unknown event {quote(event)}", context=join(context, "event"))
        return cls(
            time=get_timestamp(d, "time", context),
            event=event,
            model=get_optional(d, "model", context, get_str),
            version=get_optional(d, "version", context, get_str),
            sha256=get_optional(d, "sha256", context, get_sha256),
            origin=get_optional(d, "origin", context, get_str),
            reason=get_str(d, "reason", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "event": self.event,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "origin": self.origin,
            "reason": self.reason,
        }

    def to_line(self) -> bytes:
        # Compact JSON escapes every newline inside values: one event is always one line.
        return dumps_canonical(self.to_dict(), compact=True)


def append(
    root: Path,
    event: str,
    *,
    reason: str,
    model: str | None = None,
    version: Version | None = None,
    sha256: str | None = None,
    origin: str | None = None,
) -> None:
    """Record ``event`` in ``root``'s log, stamped now."""
    line = AuditEvent(
        time=now(),
        event=event,
        model=model,
        version=None if version is None else str(version),
        sha256=sha256,
        origin=origin,
        reason=reason,
    ).to_line()
    append_durably(root / AUDIT_FILE, line)


def read(root: Path) -> Iterator[AuditEvent | str]:
    """``root``'s log in order, one event per line, streamed (the log is never truncated). A
    line that does not parse — a crash's torn last line, a hand edit — comes as a one-line
    description instead of ending the read: the rest of the log still tells its story."""
    path = root / AUDIT_FILE
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}") from None
    with file:
        try:
            yield from _events(file)
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None


def _events(file: BinaryIO) -> Iterator[AuditEvent | str]:
    for number, line in enumerate(iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""), 1):
        what = f"{AUDIT_FILE} line {number}"
        if len(line) > MAX_LINE_BYTES:
            yield f"{what} is over {MAX_LINE_BYTES} bytes; skipped"
            while line and not line.endswith(b"\n"):  # the rest of it, a bounded bit at a time
                line = file.readline(MAX_LINE_BYTES)
            continue
        try:
            yield AuditEvent.from_dict(loads_strict(line, what))
        except ManifestError as e:
            yield f"{what} is unreadable: {e}"
