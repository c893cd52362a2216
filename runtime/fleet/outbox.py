"""Telemetry waiting for the broker, on disk and bounded: each report is one file in
``<store>/fleet/outbox`` until the broker acknowledges it (QoS 1), so a broker outage or a
restart of the device loses nothing but what the bound drops, oldest first."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.fleet.config import DEFAULT_MAX_REPORTS
from edgebundle.runtime.fsio import is_temp_name, write_durably

OUTBOX_DIR = "fleet/outbox"  # in the store directory
_SUFFIX = ".json"


class Outbox:
    def __init__(self, directory: Path, max_reports: int = DEFAULT_MAX_REPORTS) -> None:
        if max_reports < 1:
            raise ValueError("max_reports must be >= 1")
        self.directory = directory
        self.max_reports = max_reports
        self._last = 0

    def put(self, data: bytes) -> int:
        """Queue one report; returns how many of the oldest were dropped to stay in bound."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.directory}: {e.strerror}") from None
        # Names sort in the order written, across restarts too (a clock that went back
        # can only reorder reports, each of which carries its own times).
        stamp = max(time.time_ns(), self._last + 1)
        self._last = stamp
        write_durably(self.directory / f"{stamp:020d}{_SUFFIX}", data)
        pending = self.pending()
        excess = pending[: max(0, len(pending) - self.max_reports)]
        for path in excess:
            path.unlink(missing_ok=True)
        return len(excess)

    def pending(self) -> list[Path]:
        """The queued reports, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot list {self.directory}: {e.strerror}") from None
        return [
            self.directory / name
            for name in sorted(names)
            if name.endswith(_SUFFIX) and not is_temp_name(name)
        ]
