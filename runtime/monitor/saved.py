"""The drift reports a server leaves in the store for ``bundle-runtime status``."""

from __future__ import annotations

from pathlib import Path

from edgebundle.runtime.errors import ManifestError, StoreError
from edgebundle.runtime.fsio import read_capped, write_durably
from edgebundle.runtime.monitor.report import DriftReport, parse_report

REPORTS_DIR = "monitor"  # in the store directory
# Seconds between a server's report files. A report of 100 features is ~90 KB and devices
# write to flash: every 5 minutes is ~26 MB a day, and status is read by people.
REPORT_INTERVAL = 300.0
_MAX_REPORT_BYTES = 16 << 20


def save_report(store_root: Path, report: DriftReport) -> None:
    directory = store_root / REPORTS_DIR
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create {directory}: {e.strerror}") from None
    write_durably(directory / f"{report.model}.json", report.to_bytes())


def load_report(store_root: Path, model: str) -> DriftReport | None:
    """The last report a server wrote for ``model``; None if none was written."""
    path = store_root / REPORTS_DIR / f"{model}.json"
    data = read_capped(path, _MAX_REPORT_BYTES, StoreError)
    if data is None:
        return None
    try:
        return parse_report(data, str(path))
    except ManifestError as e:
        raise StoreError(f"{path} is corrupt: {e}") from None
