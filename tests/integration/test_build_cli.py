"""`bundle` as a user runs it: keygen, build (report, data, budget, reproducibility), inspect,
verify; and real built bundles tampered with, refused by `bundle-runtime score`."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from edgebundle.runtime.bundle import open_bundle, read_bundle_file
from edgebundle.runtime.manifest import parse_manifest
from edgebundle.runtime.signing import TrustedKeys
from tests.conftest import KeyFiles
from tests.support.xgbmodels import (
    NAMES,
    Trained,
    features,
    json_lines,
    labels,
    run,
    score,
    train,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=30)


def build_args(model: Path, keys: KeyFiles, out: Path, *extra: str) -> list[str]:
    """int8 unless ``extra`` says otherwise: ``auto``'s latency choice depends on timing."""
    precision = [] if "--precision" in extra else ["--precision", "int8"]
    return [
        "build",
        str(model),
        "--name",
        "credit",
        "--version",
        "1.2.3",
        "--key",
        str(keys.private),
        "--out",
        str(out),
        *precision,
        *extra,
    ]


@pytest.fixture(scope="module")
def built(trained: Trained, keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    proc = run("bundle", build_args(trained.path, keys, out))
    assert proc.returncode == 0, proc.stderr
    return out / "credit-1.2.3.bundle"


def test_build_prints_report_with_both_precisions(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    proc = run("bundle", build_args(trained.path, keys, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "credit 1.2.3" in proc.stdout
    lines = proc.stdout.splitlines()
    assert any(line.startswith("float ") for line in lines)
    assert any(line.startswith("int8*") for line in lines)
    assert (tmp_path / "credit-1.2.3.bundle").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["credit-1.2.3.bundle"]  # no temp left


def test_build_json_report_and_manifest(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    proc = run("bundle", build_args(trained.path, keys, tmp_path, "--json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [c["precision"] for c in report["candidates"]] == ["float", "int8"]
    int8 = report["candidates"][1]
    assert int8["chosen"] and int8["passed"]
    assert int8["max_abs_error"] <= int8["margin_error_bound"]  # probability error ≤ margin/4
    bundle = open_bundle(
        read_bundle_file(Path(report["bundle"])), TrustedKeys.from_paths([keys.public])
    )
    m = bundle.manifest
    assert [f.name for f in m.inputs.features] == list(NAMES)
    assert m.precision == "int8" and m.quantization is not None
    assert m.quantization.leaf_bits == 8 and not m.quantization.escalated
    assert m.parity.passed and m.parity.synthesized_rows > 0 and m.parity.data_rows == 0
    assert m.source.objective == "binary:logistic" and m.source.num_trees == 30


def test_build_is_reproducible(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    digests = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        proc = run("bundle", build_args(trained.path, keys, out), env=env)
        assert proc.returncode == 0, proc.stderr
        digests.append((out / "credit-1.2.3.bundle").read_bytes())
    assert digests[0] == digests[1]
    manifest = parse_manifest(member(digests[0], "manifest.json"))
    assert manifest.created == "2023-11-14T22:13:20Z"


def test_build_with_csv_data(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    lines = ["id," + ",".join(NAMES)]
    for i, row in enumerate(trained.x_test):
        lines.append(f"r{i}," + ",".join("" if np.isnan(v) else repr(float(v)) for v in row))
    data.write_text("\n".join(lines) + "\n")
    proc = run("bundle", build_args(trained.path, keys, tmp_path, "--data", str(data), "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["check_rows"]["data"] == len(trained.x_test)


def test_build_with_npy_data(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", trained.x_test)
    proc = run(
        "bundle",
        build_args(trained.path, keys, tmp_path, "--data", str(tmp_path / "rows.npy"), "--json"),
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("age,income\n1,2\n", "header lacks model features"),
        ("id," + ",".join(NAMES) + "\nx,1,2,3,4,5,abc\n", "expected a number, got 'abc'"),
        ("id," + ",".join(NAMES) + "\nx,1,2\n", "cells"),
        ("", "empty file"),
    ],
)
def test_bad_data_file(
    trained: Trained, keys: KeyFiles, tmp_path: Path, content: str, message: str
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text(content)
    proc = run("bundle", build_args(trained.path, keys, tmp_path / "out", "--data", str(data)))
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_budget_missed_is_not_signed(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    proc = run("bundle", build_args(trained.path, keys, tmp_path / "out", "--max-error", "0"))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "int16" in proc.stderr  # escalation was tried and shown
    # float misses a zero budget too: advising it would be wrong
    assert "--precision float" not in proc.stderr
    assert "--max-error 0 is below float32 resolution" in proc.stderr
    assert not (tmp_path / "out").exists()


def _error_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_int8_missing_a_budget_float_meets_advises_float(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    """1e-6: below what int16 leaves reach (~1e-5), above the float model's ~1e-7."""
    proc = run("bundle", build_args(trained.path, keys, tmp_path, "--max-error", "1e-6"))
    assert proc.returncode == 3, proc.stderr
    line = _error_line(proc.stderr)
    assert line.startswith("Error: int8 and int16 leaves miss the error budget (max error ")
    assert "budget 1e-06; labels 100.00%, need ≥ 99.50%" in line
    assert line.endswith(")") and ": use --precision float, which meets it (max error " in line
    assert "None" not in proc.stderr and "converter bug" not in proc.stderr


def test_float_budget_below_float32_resolution_is_called_that(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    args = build_args(trained.path, keys, tmp_path, "--precision", "float", "--max-error", "1e-9")
    proc = run("bundle", args)
    assert proc.returncode == 3, proc.stderr
    line = _error_line(proc.stderr)
    assert (
        "--max-error 1e-09 is below float32 resolution: one float32 step at these outputs" in line
    )
    assert "converter bug" not in line
    # the budget it names is one the float model meets
    suggested = line.rsplit("use --max-error ", 1)[1].split()[0]
    again = run("bundle", [*args[:-1], suggested])
    assert again.returncode == 0, again.stderr


def test_a_regressor_missing_its_budget_names_no_labels(keys: KeyFiles, tmp_path: Path) -> None:
    regressor = train("reg:squarederror", tmp_path, rounds=30)
    proc = run("bundle", build_args(regressor.path, keys, tmp_path / "out", "--max-error", "1e-6"))
    assert proc.returncode == 3, proc.stderr
    assert "None" not in proc.stderr and "labels" not in _error_line(proc.stderr)
    assert " n/a " in proc.stderr.splitlines()[1]  # the table's labels column
    assert "use --precision float, which meets it" in _error_line(proc.stderr)
    ok = run("bundle", build_args(regressor.path, keys, tmp_path / "out"))
    assert "(no labels to compare: a regressor)" in ok.stdout


def test_trees_left_out_by_best_iteration_are_reported(keys: KeyFiles, tmp_path: Path) -> None:
    x = features(1500)
    y = labels("binary:logistic", x)
    model = xgb.XGBClassifier(
        n_estimators=300, learning_rate=0.5, max_depth=4, early_stopping_rounds=5, n_jobs=1
    )
    model.fit(x[:1000], y[:1000], eval_set=[(x[1000:1200], y[1000:1200])], verbose=False)
    path = tmp_path / "clf.json"
    model.save_model(path)
    total = len(model.get_booster().get_dump())
    kept = model.best_iteration + 1
    proc = run("bundle", build_args(path, keys, tmp_path / "out", "--json"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["trees"], doc["trees_in_file"]) == (kept, total)
    proc = run("bundle", build_args(path, keys, tmp_path / "again", "--force"))
    assert (
        f"{kept} of {total} trees (best_iteration {model.best_iteration} leaves out "
        f"{total - kept}, as predict() does; --all-trees keeps them)"
    ) in proc.stdout


def test_refused_model_is_one_line(keys: KeyFiles, tmp_path: Path) -> None:
    x = features(100)
    dtrain = xgb.DMatrix(x)
    dtrain.set_float_info("label_lower_bound", np.ones(100))
    dtrain.set_float_info("label_upper_bound", np.full(100, 2.0))
    xgb.train({"objective": "survival:aft"}, dtrain, 2).save_model(tmp_path / "model.json")
    proc = run("bundle", build_args(tmp_path / "model.json", keys, tmp_path / "out"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: objective 'survival:aft' is not supported")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_version_is_usage_error(trained: Trained, keys: KeyFiles, tmp_path: Path) -> None:
    args = build_args(trained.path, keys, tmp_path)
    args[args.index("1.2.3")] = "v1.2"
    proc = run("bundle", args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_same_version_other_content_needs_force(
    trained: Trained, keys: KeyFiles, other_keys: KeyFiles, tmp_path: Path
) -> None:
    assert run("bundle", build_args(trained.path, keys, tmp_path)).returncode == 0
    before = (tmp_path / "credit-1.2.3.bundle").read_bytes()
    proc = run("bundle", build_args(trained.path, other_keys, tmp_path))
    assert proc.returncode == 1 and "bump --version" in proc.stderr
    assert (tmp_path / "credit-1.2.3.bundle").read_bytes() == before
    assert run("bundle", build_args(trained.path, other_keys, tmp_path, "--force")).returncode == 0


def test_keygen_with_passphrase(trained: Trained, tmp_path: Path) -> None:
    env = {**os.environ, "KEY_PASS": "correct horse"}
    assert (
        run(
            "bundle",
            ["keygen", "--out", str(tmp_path / "k"), "--passphrase-env", "KEY_PASS"],
            env=env,
        ).returncode
        == 0
    )
    args = [
        "build",
        str(trained.path),
        "--name",
        "m",
        "--version",
        "1.0.0",
        "--key",
        str(tmp_path / "k" / "signing.key"),
        "--out",
        str(tmp_path),
    ]
    denied = run("bundle", args, env=env)
    assert denied.returncode == 1 and "passphrase" in denied.stderr
    assert run("bundle", [*args, "--passphrase-env", "KEY_PASS"], env=env).returncode == 0
    again = run("bundle", ["keygen", "--out", str(tmp_path / "k")], env=env)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_inspect(built: Path, keys: KeyFiles) -> None:
    proc = run("bundle", ["inspect", str(built), "--json"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verified"] is False
    assert set(doc["members"]) == {"manifest.json", "manifest.sig", "model.onnx", "selftest.json"}
    assert len(doc["signatures"]) == 1
    text = run("bundle", ["inspect", str(built)])
    assert text.returncode == 0 and "credit 1.2.3" in text.stdout
    assert "  chosen:    --precision int8 forces it\n" in text.stdout


def test_verify_valid(built: Path, keys: KeyFiles) -> None:
    proc = run("bundle", ["verify", str(built), "--trust", str(keys.public)])
    assert proc.returncode == 0 and "valid" in proc.stdout


# --- tampering with a real bundle: `bundle verify` lists it, the device refuses it ---------


def members(bundle: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def member(bundle: bytes, name: str) -> bytes:
    return next(data for info, data in members(bundle) if info.name == name)


def repack(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def flip_in_member(name: str) -> Any:
    def tamper(bundle: bytes) -> bytes:
        entries = members(bundle)
        for i, (info, data) in enumerate(entries):
            if info.name == name:
                changed = bytearray(data)
                changed[len(changed) // 2] ^= 0x01
                entries[i] = (info, bytes(changed))
        return repack(entries)

    return tamper


def add_member(name: str, kind: bytes = tarfile.REGTYPE) -> Any:
    def tamper(bundle: bytes) -> bytes:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = b"extra"
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            data = b""
        info.size = len(data)
        return repack([*members(bundle), (info, data)])

    return tamper


def duplicate_model(bundle: bytes) -> bytes:
    entries = members(bundle)
    return repack([*entries, next(e for e in entries if e[0].name == "model.onnx")])


TAMPERING = {
    "flip manifest.json": flip_in_member("manifest.json"),
    "flip manifest.sig": flip_in_member("manifest.sig"),
    "flip model.onnx": flip_in_member("model.onnx"),
    "flip selftest.json": flip_in_member("selftest.json"),
    "truncated": lambda b: b[: len(b) // 2],
    "extra member": add_member("extra.bin"),
    "path traversal": add_member("../x"),
    "symlink": add_member("link", tarfile.SYMTYPE),
    "duplicate member": duplicate_model,
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_bundle_is_refused(built: Path, keys: KeyFiles, tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(TAMPERING[case](built.read_bytes()))
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, records, stderr = score(bad, keys.public, json_lines(np.zeros((1, len(NAMES)), "f4")))
    assert rc == 3 and records == []
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
    verify = run("bundle", ["verify", str(bad), "--trust", str(keys.public)])
    assert verify.returncode == 1 and "Traceback" not in verify.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted


def test_wrong_key_is_refused(built: Path, other_keys: KeyFiles) -> None:
    rc, _, stderr = score(built, other_keys.public, "[]\n")
    assert rc == 3 and "trusted" in stderr
    assert run("bundle", ["verify", str(built), "--trust", str(other_keys.public)]).returncode == 1


# --- --precision auto: both built, the better one for --optimize shipped, and why -------------


def _built_manifest(out: Path) -> Any:
    return parse_manifest(member((out / "credit-1.2.3.bundle").read_bytes(), "manifest.json"))


def test_auto_optimizing_size_ships_the_smaller_model_and_says_why(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    extra = ("--precision", "auto", "--optimize", "size", "--json")
    proc = run("bundle", build_args(trained.path, keys, tmp_path, *extra))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    sizes = {c["precision"]: c["model_bytes"] for c in report["candidates"]}
    smaller = min(sizes, key=lambda p: sizes[p])
    assert report["precision"] == smaller
    choice = _built_manifest(tmp_path).build
    assert choice.requested == "auto" and choice.optimize == "size"
    assert f"{smaller} model.onnx is {sizes[smaller]:,} bytes" in choice.reason
    # nothing timed is recorded, so the choice and the bytes are reproducible
    assert [(c.precision, c.model_bytes, c.us_per_row) for c in choice.candidates] == [
        (p, sizes[p], None) for p in sizes
    ]
    assert report["choice"] == choice.to_dict()


def test_auto_optimizing_latency_records_both_measurements_and_the_reason(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    proc = run("bundle", build_args(trained.path, keys, tmp_path, "--precision", "auto"))
    assert proc.returncode == 0, proc.stderr
    m = _built_manifest(tmp_path)
    assert m.build is not None and m.build.optimize == "latency"  # the default use
    measured = {c.precision: c.us_per_row for c in m.build.candidates}
    assert set(measured) == {"float", "int8"} and all(us and us > 0 for us in measured.values())
    int8, flt = measured["int8"], measured["float"]
    assert int8 is not None and flt is not None
    expected = "int8" if int8 <= flt * 1.05 else "float"  # the documented 5% rule
    assert m.precision == expected
    assert f"chose {expected}: optimize latency:" in proc.stdout
    assert f"int8 {int8:.1f} µs, float {flt:.1f} µs a row" in m.build.reason


def test_auto_optimizing_memory_ships_the_lighter_model(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    extra = ("--precision", "auto", "--optimize", "memory")
    proc = run("bundle", build_args(trained.path, keys, tmp_path, *extra))
    assert proc.returncode == 0, proc.stderr
    m = _built_manifest(tmp_path)
    assert m.build is not None
    resident = {c.precision: c.model_rss_bytes for c in m.build.candidates}
    assert all(isinstance(b, int) for b in resident.values())
    assert m.precision == min(resident, key=lambda p: resident[p] or 0)
    assert "resident" in m.build.reason


@pytest.mark.parametrize("precision", ["int8", "float"])
def test_forced_precision_is_shipped_whatever_optimize_says(
    trained: Trained, keys: KeyFiles, tmp_path: Path, precision: str
) -> None:
    extra = ("--precision", precision, "--optimize", "size")
    proc = run("bundle", build_args(trained.path, keys, tmp_path, *extra))
    assert proc.returncode == 0, proc.stderr
    m = _built_manifest(tmp_path)
    assert m.precision == precision and m.build is not None
    assert m.build.requested == precision
    assert m.build.reason == f"--precision {precision} forces it"
    assert f"chose {precision}: --precision {precision} forces it" in proc.stdout


def test_auto_ships_float_when_quantizing_misses_the_budget(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    # a budget int8 and int16 leaves miss but the exact float model meets
    extra = ("--precision", "auto", "--optimize", "size", "--max-error", "1e-6")
    proc = run("bundle", build_args(trained.path, keys, tmp_path, *extra))
    assert proc.returncode == 0, proc.stderr
    m = _built_manifest(tmp_path)
    assert m.precision == "float" and m.build is not None
    assert m.build.reason == "int16 misses the error budget"
    assert [c.passed for c in m.build.candidates] == [True, False, False]


def test_auto_signs_nothing_when_no_precision_meets_the_budget(
    trained: Trained, keys: KeyFiles, tmp_path: Path
) -> None:
    # float32 summation alone is off by ~1e-7: a zero budget is met by nothing
    extra = ("--precision", "auto", "--max-error", "0")
    proc = run("bundle", build_args(trained.path, keys, tmp_path / "out", *extra))
    assert proc.returncode == 3
    assert "no precision meets the error budget" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
