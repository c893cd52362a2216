"""``audit.log``: one JSON line per event, appended durably and never rewritten.

The log records what the store did and what it refused, with where an install came from; the
store appends under its exclusive lock, so lines never interleave.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import SHA256, STRING, TIMESTAMP, Document, choice, optional
from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import append_durably
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store._clock import now

AUDIT_FILE = "audit.log"
AUDIT_EVENTS = ("init", "installed", "refused", "rollback", "marked-bad", "keys-rotated", "removed")
# One line is a few hundred bytes; a longer one is not a line this store wrote.
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent(Document):
    """One line of ``audit.log``. ``model``/``version`` are null when a bundle was refused
    before its manifest could be trusted; ``origin`` is where an install came from."""

    time: Annotated[str, TIMESTAMP]
    event: Annotated[str, choice(AUDIT_EVENTS)]
    model: Annotated[str | None, optional(STRING)]
    version: Annotated[str | None, optional(STRING)]
    sha256: Annotated[str | None, optional(SHA256)]
    origin: Annotated[str | None, optional(STRING)]
    reason: Annotated[str, STRING]

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
