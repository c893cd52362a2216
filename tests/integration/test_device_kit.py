"""The device kit: targets it accepts, a reproducible tarball, and, for real on this machine,
an offline install with install.sh that scores a bundle, re-runs idempotently, upgrades the
runtime beside the running one without touching the store, and whose unit systemd accepts."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebundle.builder.cli.kit import device_kit_command
from edgebundle.builder.kit import (
    KitError,
    KitOptions,
    Target,
    make_kit,
    parse_target,
    write_kit,
)
from edgebundle.builder.kit.assemble import UNIT_TEMPLATE
from tests.conftest import KeyFiles
from tests.device.emulator import offline
from tests.support.xgbmodels import BIN, run

INSTALL_SH = Path(__file__).parents[2] / "builder" / "kit" / "install.sh"
PYTHON = "{}.{}".format(*sys.version_info[:2])


@pytest.mark.parametrize(
    ("platform", "python", "reason"),
    [
        ("linux/armv7l", "3.11", "Debian trixie's Python 3.13 .* pass --python 3.13"),
        ("linux/riscv64", "3.11", "platform linux/riscv64 is not supported"),
        ("darwin/arm64", "3.11", "platform darwin/arm64 is not supported"),
        ("linux/aarch64", "3.9", "python 3.9 is not supported"),
        ("linux/x86_64", "3.14", "python 3.14 is not supported"),
    ],
)
def test_unsupported_targets_are_refused_in_one_line(
    platform: str, python: str, reason: str
) -> None:
    with pytest.raises(KitError, match=reason) as caught:
        parse_target(platform, python)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_supported_targets_ask_pip_for_every_manylinux_tag_up_to_glibc_2_28(
    machine: str, python: str
) -> None:
    target = parse_target(f"linux/{machine}", python)
    assert target == Target(machine=machine, python=python)
    platforms = target.pip_platforms()
    assert platforms[0] == f"manylinux_2_28_{machine}"
    assert f"manylinux_2_17_{machine}" in platforms
    assert f"manylinux2014_{machine}" in platforms
    assert not any("_2_29_" in p or "_2_34_" in p for p in platforms)


def test_the_command_refuses_armv7l_for_a_python_debian_lacks(
    keys: KeyFiles, tmp_path: Path
) -> None:
    args = ["--platform", "linux/armv7l", "--python", "3.11", "--trust", str(keys.public)]
    result = CliRunner().invoke(device_kit_command, [*args, "--out", str(tmp_path / "kit")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "armv7l" in result.output
    assert not (tmp_path / "kit").exists()


def test_install_script_is_posix_sh() -> None:
    assert subprocess.run(["sh", "-n", str(INSTALL_SH)], check=False).returncode == 0
    for shell in ("dash", "busybox"):
        path = shutil.which(shell)
        if path is not None:
            args = [path, "sh", "-n"] if shell == "busybox" else [path, "-n"]
            assert subprocess.run([*args, str(INSTALL_SH)], check=False).returncode == 0


def test_install_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(
        [shellcheck, "--shell=sh", str(INSTALL_SH)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def _fake_wheelhouse(root: Path, edgebundle_bytes: bytes = b"ours") -> tuple[Path, Path]:
    wheels, pip = root / "wheels", root / "pip"
    wheels.mkdir(parents=True)
    pip.mkdir()
    (wheels / "edgebundle-0.1.0-py3-none-any.whl").write_bytes(edgebundle_bytes)
    (wheels / "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl").write_bytes(b"numpy")
    pip_wheel = pip / "pip-26.3-py3-none-any.whl"
    pip_wheel.write_bytes(b"pip")
    return wheels, pip_wheel


def test_an_armv7l_kit_carries_debian_packages_in_install_order(
    tmp_path: Path, keys: KeyFiles
) -> None:
    target = parse_target("linux/armv7l", "3.13")
    wheels, pip = tmp_path / "wheels", tmp_path / "pip"
    wheels.mkdir()
    pip.mkdir()
    with zipfile.ZipFile(wheels / "edgebundle-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("edgebundle-0.1.0.dist-info/METADATA", "Name: edgebundle\n"
                       "Requires-Dist: onnxruntime>=1.21\nRequires-Dist: numpy>=1.24\n"
                       "Requires-Dist: click>=8.1; extra == \"build\"\n")
    (pip / "pip-26.3-py3-none-any.whl").write_bytes(b"pip")
    debs = [tmp_path / f"{name}_1.0_armhf.deb" for name in ("zlib1g", "libpython", "python3")]
    for deb in debs:
        deb.write_bytes(deb.name.encode())
    steps = [debs[:2], debs[2:]]
    kit = write_kit(tmp_path / "out", target, wheels, pip / "pip-26.3-py3-none-any.whl",
                    [keys.public], steps)
    top = "edgebundle-kit-0.1.0-linux-armv7l-cp313"
    with tarfile.open(kit.path) as tar:
        conf = _member(tar, f"{top}/kit.conf")
        order = _member(tar, f"{top}/debs/order.txt")
        requirements = _member(tar, f"{top}/requirements.txt")
        assert _member(tar, f"{top}/debs/python3_1.0_armhf.deb") == "python3_1.0_armhf.deb"
    # one dpkg -i call a line, as the resolver cut them
    assert order == "zlib1g_1.0_armhf.deb libpython_1.0_armhf.deb\npython3_1.0_armhf.deb\n"
    assert "KIT_SYSTEM_SITE=yes\n" in conf
    assert 'KIT_REQUIRES="onnxruntime>=1.21 numpy>=1.24"\n' in conf  # not the extras
    assert "python3-onnxruntime" in conf and "python3-venv" in conf
    assert len(requirements.splitlines()) == 1  # ours alone: the rest is Debian's
    debs[0].write_bytes(b"a patched zlib")
    again = write_kit(tmp_path / "again", target, wheels, pip / "pip-26.3-py3-none-any.whl",
                      [keys.public], steps)
    assert again.kit_id != kit.kit_id  # another package set installs into a venv of its own


def test_kit_tarball_is_reproducible_and_complete(tmp_path: Path, keys: KeyFiles) -> None:
    target = parse_target("linux/aarch64", "3.11")
    wheels, pip_wheel = _fake_wheelhouse(tmp_path / "in")
    first = write_kit(tmp_path / "a", target, wheels, pip_wheel, [keys.public])
    second = write_kit(tmp_path / "b", target, wheels, pip_wheel, [keys.public])
    assert first.path.name == "edgebundle-kit-0.1.0-linux-aarch64-cp311.tar.gz"
    assert first.path.read_bytes() == second.path.read_bytes()

    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
        top = "edgebundle-kit-0.1.0-linux-aarch64-cp311"
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {m.mtime for m in members} == {members[0].mtime}
        assert {(m.uid, m.gid) for m in members} == {(0, 0)}
        modes = {m.name.removeprefix(top + "/"): m.mode for m in members if m.isfile()}
        assert modes.pop("install.sh") == 0o755
        assert set(modes.values()) == {0o644}
        assert set(modes) == {
            "kit.conf",
            "requirements.txt",
            UNIT_TEMPLATE,
            "pip/pip-26.3-py3-none-any.whl",
            "trust/signing.pub",
            "wheels/edgebundle-0.1.0-py3-none-any.whl",
            "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl",
        }
        conf = _member(tar, f"{top}/kit.conf")
        requirements = _member(tar, f"{top}/requirements.txt")
    assert f"KIT_ID={first.kit_id}\n" in conf
    assert "KIT_MACHINE=aarch64\nKIT_PYTHON=3.11\n" in conf
    assert f"--hash=sha256:{hashlib.sha256(b'numpy').hexdigest()}" in requirements
    assert requirements.splitlines()[0].startswith("edgebundle==0.1.0 --hash=sha256:")


def test_a_changed_wheel_is_a_new_runtime_id(tmp_path: Path, keys: KeyFiles) -> None:
    target = parse_target("linux/x86_64", "3.11")
    old = write_kit(tmp_path / "a", target, *_fake_wheelhouse(tmp_path / "x"), [keys.public])
    new_wheels = _fake_wheelhouse(tmp_path / "y", edgebundle_bytes=b"ours, changed")
    new = write_kit(tmp_path / "b", target, *new_wheels, [keys.public])
    assert old.kit_id != new.kit_id
    assert old.kit_id.startswith("0.1.0-")


def test_a_kit_needs_a_trust_key_the_runtime_accepts(tmp_path: Path) -> None:
    not_a_key = tmp_path / "signing.pub"
    not_a_key.write_text("hello\n")
    options = KitOptions(parse_target("linux/x86_64", PYTHON), (not_a_key,), tmp_path / "out")
    with pytest.raises(KitError):
        make_kit(options)
    assert not (tmp_path / "out").exists()


# --- the real thing: a kit for this machine, installed offline -----------------------------


def _member(tar: tarfile.TarFile, name: str) -> str:
    extracted = tar.extractfile(name)
    assert extracted is not None
    return extracted.read().decode()


def _install(kit_dir: Path, prefix: Path, store: Path, *extra: str) -> str:
    command = [str(kit_dir / "install.sh"), "--prefix", str(prefix), "--store", str(store)]
    command += ["--python", sys.executable, "--no-service", *extra]
    proc = subprocess.run(
        [*offline(), *command], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _extract(kit: Path, dest: Path) -> Path:
    with tarfile.open(kit) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


def _newer_kit(kit_dir: Path, out: Path, trust: Path) -> Path:
    """The same kit but for a rebuilt edgebundle wheel: equal contents, other bytes."""
    wheels = out / "wheels"
    shutil.copytree(kit_dir / "wheels", wheels)
    (ours,) = wheels.glob("edgebundle-*.whl")
    with zipfile.ZipFile(ours, "a") as wheel:
        wheel.comment = b"rebuilt"
    (pip_wheel,) = (kit_dir / "pip").glob("*.whl")
    target = parse_target("linux/x86_64", PYTHON)
    return write_kit(out / "kit", target, wheels, pip_wheel, [trust]).path


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _score(runtime: Path, args: Sequence[str], rows: str) -> str:
    proc = subprocess.run(
        [str(runtime), "score", *args, "--format", "csv"],
        input=rows,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The demo's model built into a bundle: (bundle, its public key, its data.csv)."""
    root = tmp_path_factory.mktemp("demo")
    example = [str(BIN / "python"), "-m", "edgebundle.builder.example", "--out", str(root)]
    subprocess.run(example, check=True, capture_output=True, timeout=300)
    assert run("bundle", ["keygen", "--out", str(root / "keys")]).returncode == 0
    args = ["build", str(root / "model.json"), "--name", "credit-score", "--version", "1.0.0"]
    args += ["--key", str(root / "keys" / "signing.key"), "--out", str(root)]
    proc = run("bundle", args)
    assert proc.returncode == 0, proc.stderr
    return root / "credit-score-1.0.0.bundle", root / "keys" / "signing.pub", root / "data.csv"


def test_kit_installs_offline_scores_upgrades_and_its_unit_verifies(
    tmp_path: Path, demo: tuple[Path, Path, Path]
) -> None:
    bundle, public, data = demo
    options = KitOptions(parse_target("linux/x86_64", PYTHON), (public,), tmp_path / "kits")
    kit_dir = _extract(make_kit(options).path, tmp_path / "kit")
    prefix, store = tmp_path / "opt", tmp_path / "store"

    first = _install(kit_dir, prefix, store)
    assert "initialized store" in first
    runtime = prefix / "current" / "bin" / "bundle-runtime"
    proc = subprocess.run([str(runtime), "install", str(bundle), "--store", str(store)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = "".join(data.read_text().splitlines(keepends=True)[:51])
    scored = _score(runtime, ["--store", str(store)], rows)
    assert scored == _score(BIN / "bundle-runtime", ["--bundle", str(bundle), "--trust",
                                                     str(public)], rows)
    assert len(scored.splitlines()) == 51

    before = _snapshot(store)
    again = _install(kit_dir, prefix, store)
    assert "already installed" in again and "kept the store" in again
    assert "current is venvs/" in again

    old_venv = (prefix / "current").resolve()
    newer = _extract(_newer_kit(kit_dir, tmp_path / "newer", public), tmp_path / "newer-kit")
    upgrade = _install(newer, prefix, store)
    assert f"(previous: venvs/{old_venv.name})" in upgrade
    assert (prefix / "current").resolve() != old_venv
    assert old_venv.is_dir()  # kept for a rollback by hand
    assert _snapshot(store) == before
    assert _score(runtime, ["--store", str(store)], rows) == scored

    unit = tmp_path / "edgebundle.service"
    printed = subprocess.run([str(kit_dir / "install.sh"), "--prefix", str(prefix),
                              "--print-unit"], capture_output=True, text=True, check=True)
    unit.write_text(printed.stdout)
    assert f"ExecStart={runtime} serve --store /var/lib/edgebundle" in printed.stdout
    _verify(unit)


def _verify(unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert unit.name not in proc.stderr + proc.stdout
