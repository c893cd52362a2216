"""The device tests run only when asked for (``pytest -m device``, as ``make device-test``
does): they install packages, download a few hundred MB once and take minutes under qemu.
Their measurements are printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.device.report import REPORT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "device" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("device")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("device")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("emulated ARM devices")
        for line in REPORT:
            terminalreporter.write_line(line)
