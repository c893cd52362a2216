"""``bundle-runtime update`` shows the bundle download's bytes on stderr when it is a
terminal (a real pty), and writes nothing there when it is not."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KeyFiles
from tests.support.channelkit import Channel, served
from tests.support.store_helpers import Spec, build_bundles
from tests.support.xgbmodels import BIN, run, train

V100, V110 = Spec("credit", "1.0.0"), Spec("credit", "1.1.0")


@pytest.fixture(scope="module")
def bundles(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[Spec, Path]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8).path
    built: dict[Spec, Path] = build_bundles(
        model, [V100, V110], {"keys": keys}, tmp_path_factory.mktemp("b")
    )
    return built


@pytest.fixture
def channel(tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path]) -> Iterator[Channel]:
    with served(tmp_path / "channel") as c:
        proc = run(
            "bundle",
            [
                "publish",
                str(bundles[V110]),
                "--channel",
                str(c.directory),
                "--key",
                str(keys.private),
            ],
        )
        assert proc.returncode == 0, proc.stderr
        yield c


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path]) -> Path:
    root = tmp_path / "store"
    assert (
        run(
            "bundle-runtime", ["init", "--store", str(root), "--trust", str(keys.public)]
        ).returncode
        == 0
    )
    assert (
        run("bundle-runtime", ["install", str(bundles[V100]), "--store", str(root)]).returncode == 0
    )
    return root


def update_on_a_terminal(store: Path, url: str, *extra: str) -> tuple[int, str, str]:
    """The real CLI with stderr on a pty; its exit code, stdout (a pipe) and the terminal's
    bytes."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "bundle-runtime"), "update", "--store", str(store), "--channel", url, *extra],
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: every writer to the pty has closed it
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    stdout, _ = proc.communicate(timeout=60)
    return proc.returncode, stdout.decode(), seen.decode()


def test_update_on_a_terminal_shows_the_download_on_one_line(
    store: Path, channel: Channel, bundles: dict[Spec, Path]
) -> None:
    size = bundles[V110].stat().st_size
    code, stdout, terminal = update_on_a_terminal(store, channel.url)
    assert code == 0, terminal
    assert "credit 1.1.0: installed (previous: 1.0.0), selftest passed" in stdout
    # the terminal turns \n into \r\n; the meter's own line ends with one newline
    lines = terminal.replace("\r\n", "\n").split("\n")
    assert lines[-1] == "" and len(lines) == 2, terminal
    drawings = lines[0].split("\r")[1:]
    total = f"{size / 1000:.1f} kB"
    assert drawings[0] == f"downloading credit 1.1.0: 0 bytes of {total} (0%)"
    assert drawings[-1] == f"downloading credit 1.1.0: {total} of {total} (100%)"


def test_update_json_on_a_terminal_keeps_stdout_the_same(store: Path, channel: Channel) -> None:
    code, stdout, terminal = update_on_a_terminal(store, channel.url, "--json")
    assert code == 0, terminal
    report = json.loads(stdout)
    assert [(o["model"], o["version"], o["installed"]) for o in report["outcomes"]] == [
        ("credit", "1.1.0", True)
    ]
    assert "downloading credit 1.1.0" in terminal


def test_update_without_a_terminal_writes_nothing_on_stderr(store: Path, channel: Channel) -> None:
    proc = run("bundle-runtime", ["update", "--store", str(store), "--channel", channel.url])
    assert proc.returncode == 0, proc.stderr
    assert "credit 1.1.0: installed" in proc.stdout
    assert proc.stderr == ""
