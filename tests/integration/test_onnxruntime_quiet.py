"""onnxruntime's telemetry stays off in the runtime: no device id written under HOME, and no
"Failed to persist telemetry device ID" warning when HOME cannot be written (a service user's
HOME often cannot; a path under a regular file cannot be created even by root)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.helpers_runtime import RUNTIME, BundleFiles, binary, write_signed_bundle


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> BundleFiles:
    return write_signed_bundle(tmp_path_factory.mktemp("bundle"), binary())


def score_with_home(files: BundleFiles, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")
    }
    env["HOME"] = str(home)
    row = json.dumps({"id": "r1"}) + "\n"  # every feature missing: still a valid row
    return subprocess.run(
        [*RUNTIME, "score", "--bundle", str(files.bundle), "--trust", str(files.public_key)],
        input=row,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_score_with_an_unwritable_home_prints_no_warning(
    files: BundleFiles, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = score_with_home(files, blocker / "home")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == "r1"
    assert proc.stderr == ""


def test_score_writes_nothing_under_home(files: BundleFiles, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = score_with_home(files, home)
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == []
