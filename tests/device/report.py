"""Lines the device tests measured, printed by conftest at the end of the run."""

REPORT: list[str] = []
