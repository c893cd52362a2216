"""The device runtime imports only onnxruntime, numpy, cryptography and the standard library."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import runtime

# Workstation-only packages, and what they would drag in, must never be needed on a device.
FORBIDDEN = ("builder", "xgboost", "onnx", "onnxmltools", "click", "sklearn", "pandas", "flask")

PROGRAM = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    FORBIDDEN = {forbidden!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"the device runtime must not import {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    import runtime

    imported = ["runtime"]
    for module in pkgutil.walk_packages(runtime.__path__, "runtime."):
        importlib.import_module(module.name)
        imported.append(module.name)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN)
    assert not leaked, leaked
    print("\\n".join(imported))
    """
)


def test_every_runtime_module_imports_without_workstation_packages() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The walk really covered the package: every module file was imported.
    package = Path(runtime.__file__).parent
    expected = {f"runtime.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    assert expected <= set(result.stdout.split())
    assert "runtime.scoring" in expected


def test_blocker_catches_a_forbidden_import() -> None:
    program = PROGRAM.format(forbidden=FORBIDDEN).replace(
        "import runtime\n", "import runtime\nimport onnx\n", 1
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "the device runtime must not import onnx" in result.stderr


def test_a_server_without_a_channel_loads_no_http_client_tls_or_cryptography() -> None:
    """http.server, urllib.request and ssl cost a device's server ~7 MB of resident memory and
    cryptography ~10 MB; only a server that polls an OTA channel or installs needs them."""
    program = (
        "import sys, runtime.cli, runtime.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ssl', 'email', "
        "'cryptography') or m in ('http.server', 'http.client', 'urllib.request')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
