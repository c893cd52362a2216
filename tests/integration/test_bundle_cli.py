"""``bundle``'s command-line conventions, run as subprocesses: commands that convert nothing
never import xgboost, onnx or onnxmltools; every command's ``--help`` ends with examples and
exit codes; ``--json`` has the documented shape; ``inspect`` reads as a summary and verifies
with ``--trust``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from edgebundle.builder.cli import main
from edgebundle.runtime.monitor.counting import Monitor
from tests.conftest import KeyFiles
from tests.support import serverkit
from tests.support.xgbmodels import run

CONVERTERS = ("xgboost", "onnx", "onnxmltools")
# Runs the `bundle` entry point with the converters made unimportable: a command that
# imports one fails (the entry point says the build extra is missing, exit 2).
_BLOCKED = (
    "import sys, importlib.abc\n"
    "class Blocker(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {CONVERTERS!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Blocker())\n"
    "from edgebundle.builder.entry import main\n"
    "sys.argv = ['bundle', *sys.argv[1:]]\n"
    "main()\n"
)


@dataclass(frozen=True)
class Setup:
    bundle: Path
    report: Path
    keys: KeyFiles
    tmp: Path


@pytest.fixture(scope="module")
def setup(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    tmp = tmp_path_factory.mktemp("cli")
    built = serverkit.build(keys, tmp, "plain", "1.0.0")
    report = tmp / "stats.json"
    report.write_bytes(Monitor("plain", "1.0.0", None).report().to_bytes())
    return Setup(built.bundle, report, keys, tmp)


def blocked(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKED, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _commands(s: Setup) -> dict[str, list[str | Path]]:
    return {
        "help": ["--help"],
        "keygen": ["keygen", "--out", s.tmp / "new-keys"],
        "verify": ["verify", s.bundle, "--trust", s.keys.public],
        "inspect": ["inspect", s.bundle, "--trust", s.keys.public],
        "publish": ["publish", s.bundle, "--channel", s.tmp / "channel", "--key", s.keys.private],
        "drift": ["drift", s.report, "--json"],
    }


@pytest.mark.parametrize("name", ["help", "keygen", "verify", "inspect", "publish", "drift"])
def test_commands_that_convert_nothing_never_import_the_converters(setup: Setup, name: str) -> None:
    proc = blocked(*_commands(setup)[name])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_needs_the_converters_and_the_blocker_catches_it(setup: Setup) -> None:
    """The check above can fail: `build` imports xgboost, and the blocked run says so."""
    model = setup.bundle.parent / "model" / "model.json"
    args = ["build", model, "--name", "x", "--version", "1.0.0", "--key", setup.keys.private]
    proc = blocked(*args, "--out", setup.tmp / "out")
    assert proc.returncode == 2 and "needs the build extra" in proc.stderr


def _commands_of(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command by its command line (``fleet status``), groups included."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found |= _commands_of(command, f"{prefix}{name} ")
    return found


COMMANDS = _commands_of(main)


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_every_help_shows_examples_and_exit_codes(command: str) -> None:
    proc = run("bundle", [*command.split(), "--help"])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    examples = text.index("\n  Examples:\n    ")
    codes = text.index("\n  Exit codes:\n    0   done\n    1   error")
    assert examples < codes and "bundle " in text[examples:codes]
    assert command == "" or "--json" in text


LEAVES = [c for c, cmd in sorted(COMMANDS.items()) if not isinstance(cmd, click.Group)]


@pytest.mark.parametrize("command", [c for c in LEAVES if c != "compare"])
def test_every_command_has_json(command: str) -> None:
    params = {p.name for p in COMMANDS[command].params}
    assert "as_json" in params


def test_keygen_json(tmp_path: Path) -> None:
    proc = run("bundle", ["keygen", "--out", str(tmp_path / "k"), "--json"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"private_key", "public_key", "keyid"}
    assert Path(doc["public_key"]).is_file() and len(doc["keyid"]) == 64


def test_verify_json_lists_problems_and_exits_1(setup: Setup, other_keys: KeyFiles) -> None:
    ok = run("bundle", ["verify", str(setup.bundle), "--trust", str(setup.keys.public), "--json"])
    assert ok.returncode == 0 and json.loads(ok.stdout) == {
        "bundle": str(setup.bundle), "valid": True, "problems": []
    }  # fmt: skip
    bad = run("bundle", ["verify", str(setup.bundle), "--trust", str(other_keys.public), "--json"])
    doc = json.loads(bad.stdout)
    assert bad.returncode == 1 and doc["valid"] is False and doc["problems"]


def test_inspect_is_a_summary_and_verifies_with_trust(setup: Setup, other_keys: KeyFiles) -> None:
    plain = run("bundle", ["inspect", str(setup.bundle)])
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("plain 1.0.0  (")
    assert "not verified (add --trust KEY to verify)" in plain.stdout
    assert "{" not in plain.stdout  # no raw JSON
    assert not re.search(r"\d\.\d{7,}", plain.stdout)  # no 17-digit floats
    trusted = run("bundle", ["inspect", str(setup.bundle), "--trust", str(setup.keys.public)])
    assert "verified:  yes" in trusted.stdout
    doc = json.loads(
        run(
            "bundle", ["inspect", str(setup.bundle), "--trust", str(setup.keys.public), "--json"]
        ).stdout
    )
    assert doc["verified"] is True and doc["manifest"]["name"] == "plain"
    refused = run("bundle", ["inspect", str(setup.bundle), "--trust", str(other_keys.public)])
    assert refused.returncode == 1 and refused.stdout == "" and "✗" in refused.stderr


def test_publish_and_rotate_keys_json(setup: Setup, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    proc = run(
        "bundle",
        ["publish", str(setup.bundle), "--channel", str(channel), "--key",
         str(setup.keys.private), "--json"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["serial"] == 1 and doc["index"] == str(channel / "index.json")
    assert doc["bundles"] == [
        {"name": "plain", "version": "1.0.0", "file": "bundles/plain-1.0.0.bundle"}
    ]
    run("bundle", ["keygen", "--out", str(tmp_path / "next")])
    proc = run(
        "bundle",
        ["rotate-keys", "--channel", str(channel), "--key", str(setup.keys.private),
         "--new-key", str(tmp_path / "next" / "signing.key"), "--json"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"statement", "version", "threshold", "expires", "keyids"}
    assert Path(doc["statement"]).is_file() and doc["threshold"] == 1
