"""The README's Python examples run as written, against what ``make demo`` makes (rebuilt
here in a temporary directory with the same commands)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.xgbmodels import BIN

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files `make demo` leaves: demo/ (model, data, keys, a store) and bundles/."""
    root = tmp_path_factory.mktemp("readme")
    steps = [
        (sys.executable, ["-m", "edgebundle.builder.example", "--out", "demo"]),
        ("bundle", ["keygen", "--out", "demo/keys"]),
        (
            "bundle",
            [
                "build",
                "demo/model.json",
                "--name",
                "credit-score",
                "--version",
                "1.0.0",
                "--key",
                "demo/keys/signing.key",
                "--data",
                "demo/data.csv",
            ],
        ),
        ("bundle-runtime", ["init", "--store", "demo/store", "--trust", "demo/keys/signing.pub"]),
        (
            "bundle-runtime",
            ["install", "bundles/credit-score-1.0.0.bundle", "--store", "demo/store"],
        ),
    ]
    for tool, args in steps:
        command = [tool if tool == sys.executable else str(BIN / tool), *args]
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
    return root


@pytest.mark.parametrize("index", [0, 1], ids=["load-and-score", "build"])
def test_the_python_api_examples_run_as_written(demo: Path, index: int) -> None:
    blocks = python_blocks("Python API")
    assert len(blocks) == 2
    proc = subprocess.run(
        [sys.executable, "-c", blocks[index]], cwd=demo, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    if index == 0:
        lines = proc.stdout.splitlines()
        assert re.fullmatch(r"\[0\.\d+\]", lines[0]), lines[0]
        assert lines[1].startswith("[{'id': 'a-17', 'probability': ")
    else:
        assert "credit-score 1.1.0 → demo/out/credit-score-1.1.0.bundle" in proc.stdout
