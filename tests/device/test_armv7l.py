"""The runtime on an emulated 32-bit ARM device (``make device-test``): PyPI has no onnxruntime
or numpy for armv7l, so the device kit carries Debian trixie's python3-onnxruntime, numpy and
cryptography with what they need beyond a minimal trixie. The device is such a minimal trixie
(armhf, unpacked, under qemu-arm); the kit's packages are unpacked into it as dpkg would, the
kit installs offline, and the demo bundle is scored over stdin (JSON lines and CSV) and over
HTTP, every answer compared with this machine's (x86) runtime.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgebundle.builder.keys import generate_keypair
from edgebundle.builder.kit import KitOptions, make_kit, parse_target
from tests.device.emulator import cache_dir, launcher, offline, qemu, trixie_root, unpack
from tests.device.parity import Record, csv_records, jsonl_records, max_difference
from tests.device.report import REPORT
from tests.device.steps import (
    TOLERANCE,
    Model,
    Served,
    demo_bundles,
    ok,
    post,
    run,
    scale,
    timed,
)
from tests.support.xgbmodels import BIN

pytestmark = pytest.mark.device

PYTHON = "3.13"
ONNXRUNTIME_DEB = "python3-onnxruntime_"


@dataclass
class Device32:
    root: Path
    python: Path  # the launcher of the root's python3.13 under qemu-arm
    kit: Path  # the extracted kit
    prefix: Path
    store: Path
    public: Path
    work: Path
    demo: Model
    refused: subprocess.CompletedProcess[str]  # install.sh before onnxruntime was there
    left_venvs: bool  # whether it left anything in the prefix
    installed: str  # install.sh's output once it was
    differences: dict[str, float] = field(default_factory=dict)

    @property
    def runtime(self) -> Path:
        return self.prefix / "current" / "bin" / "bundle-runtime"


def _kit(public: Path, work: Path) -> Path:
    options = KitOptions(parse_target("linux/armv7l", PYTHON), (public,), work, cache=cache_dir())
    kit = make_kit(options)
    REPORT.append(f"kit {kit.path.name}: {kit.path.stat().st_size / 1e6:.1f} MB, "
                  f"{len(kit.debs)} Debian packages")
    with tarfile.open(kit.path) as tar:
        tar.extractall(work, filter="data")
    return work / kit.path.name.removesuffix(".tar.gz")


def _install(
    kit: Path, prefix: Path, store: Path, python: Path
) -> subprocess.CompletedProcess[str]:
    command = [str(kit / "install.sh"), "--prefix", str(prefix), "--store", str(store),
               "--python", str(python), "--no-service", "--no-debs"]
    return run([*offline(), *command])


def _size(path: Path) -> int:
    return int(ok(["du", "-sb", str(path)]).split()[0])


@pytest.fixture(scope="module")
def device32(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device32]:
    work = tmp_path_factory.mktemp("armv7l")
    root = timed("minimal trixie armhf root", lambda: trixie_root(work / "device" / "root",
                                                                  cache_dir()))
    python = launcher(root, qemu("arm"), PYTHON, shim=True)
    private, public = generate_keypair(work / "keys", None)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIP_CACHE_DIR", str(cache_dir() / "pip"))
        kit = timed("armv7l kit", lambda: _kit(public, work))
    debs = [kit / "debs" / name for name in (kit / "debs" / "order.txt").read_text().split()]
    held = [deb for deb in debs if deb.name.startswith(ONNXRUNTIME_DEB)]
    prefix, store = root / "opt" / "edgebundle", root / "var" / "lib" / "edgebundle"
    bare = _size(root)
    unpack([deb for deb in debs if deb not in held], root)
    refused = _install(kit, prefix, store, python)
    left_venvs = (prefix / "venvs").exists()
    unpack(held, root)
    system = _size(root) - bare
    installed = timed("install on armv7l (offline, under qemu-arm)",
                      lambda: _install(kit, prefix, store, python))
    assert installed.returncode == 0, installed.stderr
    venv = _size((prefix / "current").resolve())
    REPORT.append(f"installed runtime on armv7l: {(system + venv) / 1e6:.0f} MB "
                  f"({system / 1e6:.0f} MB of Debian packages, {venv / 1e6:.1f} MB venv)")
    _, demo = timed("demo bundle", lambda: demo_bundles(work, private))
    device = Device32(root=root, python=python, kit=kit, prefix=prefix, store=store,
                      public=public, work=work, demo=demo, refused=refused, left_venvs=left_venvs,
                      installed=installed.stdout)
    yield device
    found = ", ".join(f"{way} {d:.3g}" for way, d in device.differences.items())
    REPORT.append(f"max |armv7l - x86|, {demo.name}: {found or 'not measured'}")


def test_without_onnxruntime_the_install_says_what_is_missing_in_one_line(
    device32: Device32,
) -> None:
    refused = device32.refused
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "missing onnxruntime >= 1.21 (" in refused.stderr
    assert "numpy" not in refused.stderr.split(":")[1]  # the rest was there
    assert "apt-get install python3-onnxruntime" in refused.stderr
    assert not device32.left_venvs


def test_the_kit_installs_offline_over_debians_onnxruntime(device32: Device32) -> None:
    assert "initialized store" in device32.installed
    python = device32.prefix / "current" / "bin" / "python"
    probe = "import onnxruntime as o, numpy as n; print(o.__version__, o.__file__, n.__file__)"
    version, onnxruntime, numpy = ok([str(python), "-c", probe]).split()
    assert version.split(".")[:2] == ["1", "21"]  # Debian's says "1.21"
    assert onnxruntime.startswith("/usr/lib/python3/dist-packages/")
    assert numpy.startswith("/usr/lib/python3/dist-packages/")
    bundle = run([str(device32.prefix / "current" / "bin" / "bundle"), "--help"])
    assert bundle.returncode == 2 and len(bundle.stderr.splitlines()) == 1, bundle.stderr


def _compare(device32: Device32, way: str, expected: list[Record], got: list[Record]) -> None:
    difference = max_difference(expected, got)
    device32.differences[way] = difference
    assert difference <= TOLERANCE * max(1.0, scale(expected)), (way, difference)


def _reference(device32: Device32, fmt: str) -> list[Record]:
    demo = device32.demo
    text = ok([str(BIN / "bundle-runtime"), "score", "--bundle", str(demo.bundle), "--trust",
               str(device32.public), "--format", fmt], demo.jsonl if fmt == "jsonl" else demo.csv)
    return jsonl_records(text) if fmt == "jsonl" else csv_records(text)


def test_the_demo_installs_and_scores_like_x86_over_stdin(device32: Device32) -> None:
    demo = device32.demo
    out = ok([str(device32.runtime), "install", str(demo.bundle), "--store", str(device32.store)])
    assert f"installed {demo.name}" in out
    score = [str(device32.runtime), "score", "--store", str(device32.store), "--format"]
    jsonl = timed("stdin JSON lines scoring, under qemu-arm", lambda: ok([*score, "jsonl"],
                                                                          demo.jsonl))
    _compare(device32, "stdin jsonl", _reference(device32, "jsonl"), jsonl_records(jsonl))
    text = timed("stdin CSV scoring, under qemu-arm", lambda: ok([*score, "csv"], demo.csv))
    _compare(device32, "stdin csv", _reference(device32, "csv"), csv_records(text))


def test_the_demo_scores_like_x86_over_http(device32: Device32) -> None:
    served = timed("serve start under qemu-arm",
                   lambda: Served(device32.runtime, device32.store, device32.work / "serve.log"))
    try:
        body = json.dumps({"instances": jsonl_records(device32.demo.jsonl)}).encode()
        for _ in range(10):
            got = post(served.port, "/invocations", body)["predictions"]
        _compare(device32, "http", _reference(device32, "jsonl"), got)
        REPORT.append(f"serve RSS with the demo bundle, armv7l under qemu-arm: "
                      f"{served.rss_mb():.0f} MB")
    finally:
        code = served.stop()
    assert code == 0, served.log.read_text()  # SIGTERM drains, then a clean exit
