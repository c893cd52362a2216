"""The runtime on an emulated aarch64 device (``make device-test``): the device kit installs
offline into Debian's arm64 Python under qemu-user; the demo bundle and a bundle of every
objective, float and int8, are installed (by hand, then by an OTA pass from a local channel)
and scored over stdin (JSON lines and CSV) and over HTTP; a tampered bundle is refused. Every
answer is compared with the x86 runtime's, installed from an x86 kit of the same versions.

onnxruntime is pinned on both sides to 1.27.0: the newest release qemu-user 7.2 runs (1.28 to
1.32 segfault at import there), and float bundles need 1.21 or later (ai.onnx.ml TreeEnsemble
5; 1.20.1 refuses them at selftest).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from edgebundle.builder.keys import generate_keypair
from edgebundle.builder.kit import KitOptions, make_kit, parse_target
from tests.device.emulator import PYTHON, Device, cache_dir, device, offline
from tests.device.parity import Record, csv_records, jsonl_records, max_difference
from tests.device.report import REPORT
from tests.device.steps import (
    TIMEOUT,
    TOLERANCE,
    Model,
    Served,
    build_bundle,
    demo_bundles,
    du,
    ok,
    post,
    run,
    scale,
    timed,
)
from tests.support.xgbmodels import BIN, NAMES, OBJECTIVES, json_lines, threshold_rows, train

# qemu on a busy machine takes as long as it takes: the subprocesses' own deadline applies
pytestmark = [pytest.mark.device, pytest.mark.timeout(TIMEOUT)]

ONNXRUNTIME = "1.27.0"
EXIT_REJECTED = 3
WAYS = ("stdin jsonl", "stdin csv", "http")  # the columns of the differences table
T = TypeVar("T")


@dataclass
class Rig:
    device: Device
    runtime: Path  # bundle-runtime from the aarch64 kit, in the emulated root
    reference: Path  # bundle-runtime from the x86 kit
    store: Path
    public: Path
    private: Path
    work: Path
    first_demo: Path  # 1.0.0, installed by hand; the channel brings 1.1.0
    models: list[Model]
    kit: Path  # the extracted aarch64 kit
    prefix: Path  # where it installed the runtime
    differences: dict[str, dict[str, float]] = field(default_factory=dict)


def _parallel(action: Callable[[T], Any], items: list[T]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine's two cores
        return list(pool.map(action, items))


# --- the rig: an emulated device and an x86 reference, both from kits -----------------------


def _kit(platform: str, python: str, trust: Path, out: Path) -> Path:
    options = KitOptions(parse_target(platform, python), (trust,), out, onnxruntime=ONNXRUNTIME)
    kit = make_kit(options)
    REPORT.append(f"kit {kit.path.name}: {kit.path.stat().st_size / 1e6:.1f} MB")
    with tarfile.open(kit.path) as tar:
        tar.extractall(out, filter="data")
    return out / kit.path.name.removesuffix(".tar.gz")


def _install(kit: Path, prefix: Path, store: Path, python: str) -> str:
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    return _install_again(kit, prefix, store, python)


def _install_again(kit: Path, prefix: Path, store: Path, python: str) -> str:
    command = [str(kit / "install.sh"), "--prefix", str(prefix), "--store", str(store)]
    return ok([*offline(), *command, "--python", python, "--no-service"])


def _csv(rows: npt.NDArray[np.float32]) -> str:
    cells = [["" if math.isnan(v) else repr(float(v)) for v in row] for row in rows]
    return "".join(",".join(line) + "\n" for line in [list(NAMES), *cells])


def _objective_models(work: Path, private: Path) -> list[Model]:
    """Each objective trained and built in both precisions; its rows sit on every threshold."""

    def build(job: tuple[str, str]) -> Model:
        objective, precision = job
        folder = work / "models" / f"{objective.replace(':', '_')}-{precision}"
        folder.mkdir(parents=True)
        trained = train(objective, folder)
        rows = np.concatenate([trained.x_test, threshold_rows(trained.booster, len(NAMES))[:300]])
        name = f"{objective.replace(':', '-').replace('_', '-')}-{precision}"
        bundle = build_bundle(trained.path, name, "1.0.0", precision, private, work / "bundles")
        return Model(name, bundle, json_lines(rows), _csv(rows))

    return _parallel(build, [(o, p) for o in OBJECTIVES for p in ("float", "int8")])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("device")
    cache = cache_dir()
    emulated = timed("arm64 Debian root and qemu", device)
    private, public = generate_keypair(work / "keys", None)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIP_CACHE_DIR", str(cache / "pip"))  # a cold run downloads everything
        arm_kit = timed("aarch64 kit", lambda: _kit("linux/aarch64", PYTHON, public, work))
        host_python = "{}.{}".format(*sys.version_info[:2])
        x86_kit = timed("x86 kit", lambda: _kit("linux/x86_64", host_python, public, work))
    prefix, store = emulated.root / "opt" / "edgebundle", emulated.root / "var/lib/edgebundle"
    out = timed("install on aarch64 (offline, under qemu)",
                 lambda: _install(arm_kit, prefix, store, str(emulated.python)))
    assert "initialized store" in out
    REPORT.append(f"installed runtime on aarch64: {du((prefix / 'current').resolve())}")
    reference = cache / "x86"
    timed("install on x86 (offline)", lambda: _install(
        x86_kit, reference / "opt", reference / "store", sys.executable))
    REPORT.append(f"installed runtime on x86_64: {du((reference / 'opt/current').resolve())}")
    first_demo, demo = timed("demo bundles", lambda: demo_bundles(work, private))
    objectives = timed("objective bundles", lambda: _objective_models(work, private))
    rig = Rig(
        device=emulated,
        runtime=prefix / "current" / "bin" / "bundle-runtime",
        reference=reference / "opt" / "current" / "bin" / "bundle-runtime",
        store=store,
        public=public,
        private=private,
        work=work,
        first_demo=first_demo,
        models=[demo, *objectives],
        kit=arm_kit,
        prefix=prefix,
    )
    yield rig
    REPORT.append(f"max |aarch64 - x86| per model: {'':<16}" + "".join(f"{c:>13}" for c in WAYS))
    for model in rig.models:
        found = rig.differences.get(model.name, {})
        cells = "".join(f"{found[c]:>13.3g}" if c in found else f"{'-':>13}" for c in WAYS)
        REPORT.append(f"  {model.name:<45}{cells}")


# --- the tests, in the order a device lives them ------------------------------------------------


def test_the_kit_reinstalls_as_a_no_op_and_bundle_says_which_extra(rig: Rig) -> None:
    again = timed("install again (no-op)", lambda: _install_again(
        rig.kit, rig.prefix, rig.store, str(rig.device.python)))
    assert "already installed" in again and "kept the store" in again
    proc = run([str(rig.prefix / "current" / "bin" / "bundle"), "--help"])
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "edgebundle[build]" in proc.stderr


def test_the_demo_installs_by_hand(rig: Rig) -> None:
    out = ok([str(rig.runtime), "install", str(rig.first_demo), "--store", str(rig.store)])
    assert "installed credit-score 1.0.0" in out


def test_a_tampered_bundle_is_refused(rig: Rig) -> None:
    data = bytearray(rig.first_demo.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = rig.work / "tampered.bundle"
    tampered.write_bytes(bytes(data))
    scored = run([str(rig.runtime), "score", "--bundle", str(tampered), "--trust",
                   str(rig.public)], rig.models[0].jsonl)
    assert scored.returncode == EXIT_REJECTED, scored.stderr
    installed = run([str(rig.runtime), "install", str(tampered), "--store", str(rig.store)])
    assert installed.returncode == EXIT_REJECTED, installed.stderr


def test_an_ota_pass_installs_every_objective_and_the_demo_update(rig: Rig) -> None:
    channel = rig.work / "channel"
    for model in rig.models:
        ok([str(BIN / "bundle"), "publish", str(model.bundle), "--channel", str(channel),
             "--key", str(rig.private)])
    update = [str(rig.runtime), "update", "--store", str(rig.store), "--channel", str(channel)]
    out = timed(f"OTA pass installing {len(rig.models)} bundles", lambda: ok(update))
    assert "credit-score 1.1.0" in out
    status = json.loads(ok([str(rig.runtime), "status", "--store", str(rig.store), "--json"]))
    models = status["models"]
    assert {m.name for m in rig.models} == set(models)
    assert models["credit-score"]["active"] == "1.1.0"
    assert models["credit-score"]["previous"] == "1.0.0"
    assert "everything is up to date" in ok(update)



def _score(runtime: Path, source: list[str], model: Model, fmt: str) -> list[Record]:
    stdin = model.jsonl if fmt == "jsonl" else model.csv
    text = ok([str(runtime), "score", *source, "--format", fmt], stdin)
    return jsonl_records(text) if fmt == "jsonl" else csv_records(text)


def _reference(rig: Rig, model: Model, fmt: str) -> list[Record]:
    source = ["--bundle", str(model.bundle), "--trust", str(rig.public)]
    return _score(rig.reference, source, model, fmt)


def _close(rig: Rig, name: str, what: str, expected: list[Record], got: list[Record]) -> bool:
    difference = max_difference(expected, got)
    rig.differences.setdefault(name, {})[what] = difference
    return difference <= TOLERANCE * max(1.0, scale(expected))


def test_stdin_scoring_equals_x86_for_every_model(rig: Rig) -> None:
    jobs = [(m, fmt) for m in rig.models for fmt in ("jsonl", "csv")]

    def compare(job: tuple[Model, str]) -> bool:
        model, fmt = job
        source = ["--store", str(rig.store), "--model", model.name]
        got = _score(rig.runtime, source, model, fmt)
        return _close(rig, model.name, f"stdin {fmt}", _reference(rig, model, fmt), got)

    label = f"stdin scoring, {len(jobs)} runs under qemu"
    results = timed(label, lambda: _parallel(compare, jobs))
    assert all(results), {k: v for k, v in rig.differences.items()}


def test_http_scoring_equals_x86_for_every_model(rig: Rig) -> None:
    served = timed(f"serve start with {len(rig.models)} models, under qemu",
                    lambda: Served(rig.runtime, rig.store, rig.work / "serve.log"))
    try:
        results = []
        for model in rig.models:
            instances = [json.loads(line) for line in model.jsonl.splitlines()]
            body = json.dumps({"instances": instances}).encode()
            got = post(served.port, f"/invocations?model={model.name}", body)["predictions"]
            expected = _reference(rig, model, "jsonl")
            results.append(_close(rig, model.name, "http", expected, got))
    finally:
        code = served.stop()
    assert code == 0, served.log.read_text()  # SIGTERM drains, then a clean exit
    assert all(results), rig.differences


def test_serve_memory_with_the_demo_bundle(rig: Rig) -> None:
    store = rig.work / "demo-store"
    ok([str(rig.runtime), "init", "--store", str(store), "--trust", str(rig.public)])
    ok([str(rig.runtime), "install", str(rig.first_demo), "--store", str(store)])
    demo = rig.models[0]
    body = json.dumps({"instances": [json.loads(x) for x in demo.jsonl.splitlines()]}).encode()
    for label, runtime in (("aarch64 under qemu", rig.runtime), ("x86_64", rig.reference)):
        served = Served(runtime, store, rig.work / f"rss-{label[:3]}.log")
        try:
            for _ in range(20):
                assert len(post(served.port, "/invocations", body)["predictions"]) == 200
            REPORT.append(f"serve RSS with the demo bundle, {label}: {served.rss_mb():.0f} MB")
        finally:
            assert served.stop() == 0
