"""``bundle``'s entry point: the workstation CLI, or, on a device's runtime-only install, one
line saying which extra it needs (never a traceback)."""

from __future__ import annotations

import sys

# What the ``build`` extra installs; the runtime-only install lacks them.
_BUILD_EXTRA = ("click", "xgboost", "onnx", "onnxmltools")
EXIT_USAGE = 2


def main() -> None:
    # The commands that convert import xgboost and onnx when they run, so a missing extra
    # surfaces there as well as here.
    try:
        from edgebundle.builder.cli import main as cli

        cli()
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _BUILD_EXTRA:
            raise
        print(
            f"error: `bundle` is the workstation command and needs the build extra ({e.name} "
            "is not installed): pip install 'edgebundle[build]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
