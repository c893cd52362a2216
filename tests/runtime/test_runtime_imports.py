"""The device runtime imports only onnxruntime, numpy, cryptography and the standard library;
the package has one import name, and ``bundle`` without the build extra says what it needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import edgebundle.runtime

# Workstation-only packages, and what they would drag in, must never be needed on a device.
FORBIDDEN = (
    "edgebundle.builder",
    "xgboost",
    "onnx",
    "onnxmltools",
    "click",
    "sklearn",
    "pandas",
    "flask",
)

PROGRAM = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    FORBIDDEN = {forbidden!r}

    def forbidden(name):
        return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if forbidden(name):
                raise ImportError(f"the device runtime must not import {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    import edgebundle
    import edgebundle.runtime

    imported = ["edgebundle.runtime"]
    for module in pkgutil.walk_packages(edgebundle.runtime.__path__, "edgebundle.runtime."):
        importlib.import_module(module.name)
        imported.append(module.name)
    edgebundle.load, edgebundle.Model, edgebundle.BundleError  # the package's device face
    leaked = sorted(name for name in sys.modules if forbidden(name))
    assert not leaked, leaked
    print("\\n".join(imported))
    """
)


def run(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_runtime_module_imports_without_workstation_packages() -> None:
    result = run(PROGRAM.format(forbidden=FORBIDDEN))
    assert result.returncode == 0, result.stderr
    # The walk really covered the package: every module file was imported.
    package = Path(edgebundle.runtime.__file__).parent
    expected = {
        f"edgebundle.runtime.{path.stem}"
        for path in package.glob("*.py")
        if path.stem != "__init__"
    }
    assert expected <= set(result.stdout.split())
    assert "edgebundle.runtime.scoring" in expected


def test_blocker_catches_a_forbidden_import() -> None:
    program = PROGRAM.format(forbidden=FORBIDDEN).replace(
        "import edgebundle.runtime\n", "import edgebundle.runtime\nimport onnx\n", 1
    )
    result = run(program)
    assert result.returncode != 0
    assert "the device runtime must not import onnx" in result.stderr


def test_a_server_without_a_channel_loads_no_http_client_tls_or_cryptography() -> None:
    """http.server, urllib.request and ssl cost a device's server ~7 MB of resident memory and
    cryptography ~10 MB; only a server that polls an OTA channel or installs needs them."""
    result = run(
        "import sys, edgebundle.runtime.cli, edgebundle.runtime.serve.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ssl', 'email', "
        "'cryptography') or m in ('http.server', 'http.client', 'urllib.request')))"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_importing_the_package_loads_no_model_machinery() -> None:
    """``import edgebundle`` resolves its names on first use: onnxruntime and numpy (~150 ms)
    only come when a model is loaded."""
    result = run(
        "import sys, edgebundle; "
        "print(sorted(m for m in ('onnxruntime', 'numpy', 'cryptography') if m in sys.modules))"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_no_module_imports_the_source_directories_by_their_bare_names() -> None:
    """From the repository root ``runtime`` and ``builder`` would import as top-level packages
    beside ``edgebundle.runtime``: two copies of every class. Nothing may use those names."""
    root = Path(edgebundle.runtime.__file__).resolve().parent.parent
    offenders = []
    for folder in ("runtime", "builder", "tests", "bench"):
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                words = line.split()
                statement = len(words) > 1 and words[0] in ("import", "from")
                if statement and words[1].split(".")[0] in ("runtime", "builder"):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_bundle_command_without_the_build_extra_says_so_in_one_line() -> None:
    """A device's runtime-only install has no click or xgboost: ``bundle`` answers in one
    line and exits 2, never with a traceback."""
    result = run(
        "import sys, importlib.abc\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('click', 'xgboost'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from edgebundle.builder.entry import main\n"
        "sys.argv = ['bundle', '--help']\n"
        "main()\n"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'edgebundle[build]'" in result.stderr


def test_score_loads_no_store_server_or_monitor_unless_asked() -> None:
    """`score --bundle` imports what scoring stdin needs: the store, the HTTP server and drift
    monitoring come only with --store or --drift-report."""
    result = run(
        "import sys, argparse; from edgebundle.runtime.cli import score; "
        "score.add_score(argparse.ArgumentParser()); "
        "print(sorted({m.split('.')[2] for m in sys.modules "
        "if m.startswith('edgebundle.runtime.') and m.split('.')[2] in "
        "('store', 'serve', 'monitor', 'stats', 'fsio', 'selftest')}))"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
