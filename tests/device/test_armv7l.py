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
from tests.device.emulator import (
    cache_dir,
    launcher,
    minimal_trixie,
    offline,
    qemu,
    trixie_root,
    unpack,
)
from tests.device.parity import Record, csv_records, jsonl_records, max_difference
from tests.device.report import REPORT
from tests.device.steps import (
    TIMEOUT,
    TOLERANCE,
    Model,
    Served,
    build_bundle,
    demo_bundles,
    ok,
    post,
    run,
    scale,
    timed,
)
from tests.support.xgbmodels import BIN

# qemu on a busy machine takes as long as it takes: the subprocesses' own deadline applies
pytestmark = [pytest.mark.device, pytest.mark.timeout(TIMEOUT)]

PYTHON = "3.13"
ONNXRUNTIME_DEB = "python3-onnxruntime_"


@dataclass
class Device32:
    root: Path
    python: Path  # the launcher of the root's python3.13 under qemu-arm
    kit: Path  # the extracted kit
    minimal: list[Path]  # the minimal trixie's packages
    prefix: Path
    store: Path
    public: Path
    work: Path
    demo: Model  # int8, as the demo builds it
    float_demo: Model  # the same model in float: needs onnxruntime 1.21, Debian's "1.21"
    refused: subprocess.CompletedProcess[str]  # install.sh before onnxruntime was there
    left_venvs: bool  # whether it left anything in the prefix
    installed: str  # install.sh's output once it was
    differences: dict[str, dict[str, float]] = field(default_factory=dict)

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
    minimal = minimal_trixie(cache_dir())
    root = timed("minimal trixie armhf root", lambda: trixie_root(work / "device" / "root",
                                                                  minimal))
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
    name = f"{demo.name}-float"
    float_bundle = build_bundle(work / "demo" / "model.json", name, "1.0.0", "float", private,
                                work / "bundles")
    float_demo = Model(name, float_bundle, demo.jsonl, demo.csv)
    device = Device32(root=root, python=python, kit=kit, minimal=minimal, prefix=prefix,
                      store=store, public=public, work=work, demo=demo, float_demo=float_demo,
                      refused=refused, left_venvs=left_venvs, installed=installed.stdout)
    yield device
    for model, ways in device.differences.items():
        found = ", ".join(f"{way} {d:.3g}" for way, d in ways.items())
        REPORT.append(f"max |armv7l - x86|, {model}: {found}")


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


def _installed(debs: list[Path]) -> str:
    """The packages' control stanzas as dpkg's status file holds them once configured."""
    stanzas = [ok(["dpkg-deb", "--field", str(deb)]) for deb in debs]
    return "".join(f"{stanza.rstrip()}\nStatus: install ok installed\n\n" for stanza in stanzas)


def test_dpkg_accepts_each_install_step_on_a_minimal_trixie(device32: Device32) -> None:
    """What ``install.sh`` as root runs, checked by this machine's dpkg (``--dry-run``: the
    maintainer scripts are the device's): every (pre-)dependency and version of each step is
    met by the minimal system and the steps before it."""
    admin = device32.work / "dpkg"
    for folder in ("info", "updates"):
        (admin / "var" / "lib" / "dpkg" / folder).mkdir(parents=True)
    status = admin / "var" / "lib" / "dpkg" / "status"
    status.write_text(_installed(device32.minimal))
    ok(["dpkg", "--root", str(admin), "--add-architecture", "armhf"])
    steps = (device32.kit / "debs" / "order.txt").read_text().splitlines()
    assert len(steps) > 1  # python3-minimal pre-depends on python3.13-minimal, and so on
    for step in steps:
        debs = [device32.kit / "debs" / name for name in step.split()]
        dry = run(["dpkg", "--root", str(admin), "--dry-run", "--install", *map(str, debs)])
        assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
        with status.open("a") as out:  # what configuring the step leaves in the database
            out.write(_installed(debs))


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


def _compare(
    device32: Device32, model: Model, way: str, expected: list[Record], got: list[Record]
) -> None:
    difference = max_difference(expected, got)
    device32.differences.setdefault(model.name, {})[way] = difference
    assert difference <= TOLERANCE * max(1.0, scale(expected)), (model.name, way, difference)


def _reference(device32: Device32, fmt: str, demo: Model | None = None) -> list[Record]:
    demo = demo or device32.demo
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
    _compare(device32, demo, "stdin jsonl", _reference(device32, "jsonl"), jsonl_records(jsonl))
    text = timed("stdin CSV scoring, under qemu-arm", lambda: ok([*score, "csv"], demo.csv))
    _compare(device32, demo, "stdin csv", _reference(device32, "csv"), csv_records(text))


def test_a_float_bundle_runs_on_debians_onnxruntime(device32: Device32) -> None:
    model = device32.float_demo
    got = ok([str(device32.runtime), "score", "--bundle", str(model.bundle), "--trust",
              str(device32.public)], model.jsonl)
    expected = _reference(device32, "jsonl", model)
    _compare(device32, model, "stdin jsonl", expected, jsonl_records(got))


def test_the_demo_scores_like_x86_over_http(device32: Device32) -> None:
    served = timed("serve start under qemu-arm",
                   lambda: Served(device32.runtime, device32.store, device32.work / "serve.log"))
    try:
        body = json.dumps({"instances": jsonl_records(device32.demo.jsonl)}).encode()
        for _ in range(10):
            got = post(served.port, "/invocations", body)["predictions"]
        _compare(device32, device32.demo, "http", _reference(device32, "jsonl"), got)
        REPORT.append(f"serve RSS with the demo bundle, armv7l under qemu-arm: "
                      f"{served.rss_mb():.0f} MB")
    finally:
        code = served.stop()
    assert code == 0, served.log.read_text()  # SIGTERM drains, then a clean exit
