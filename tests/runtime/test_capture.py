"""Data capture: sampled rows land as whole JSON lines, under a size cap, without ever failing a
request."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import random
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgebundle.runtime.errors import StoreError
from edgebundle.runtime.scoring import to_records
from edgebundle.runtime.serve.capture import DEFAULT_MAX_BYTES, MIN_FILE_BYTES, Capture
from tests.conftest import KeyFiles
from tests.support import serverkit
from tests.support.xgbmodels import run

FEATURES = ("amount", "età", "count")
NAN = math.nan
START = 1_738_324_800.0  # 2025-01-31T12:00:00Z


def rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)
    x[::3, 1] = np.nan
    return x


def outputs(n: int) -> dict[str, npt.NDArray[Any]]:
    """Model outputs as the scorer returns them: float32 [N], int64 [N] and float32 [N, 2]."""
    probability = (np.arange(n, dtype=np.float32) + 1) / np.float32(n + 1)
    return {
        "probability": probability,
        "label": (probability > 0.5).astype(np.int64),
        "scores": np.stack([probability, 1 - probability], axis=1),
    }


def ticking(start: float = START, step: float = 0.25) -> Callable[[], float]:
    count = itertools.count()
    return lambda: start + step * next(count)


def scripted(values: list[float]) -> Callable[[], float]:
    draws = iter(values)
    return lambda: next(draws)


def capture_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("capture-????????T??????Z-*.jsonl"))


def read_lines(directory: Path) -> list[dict[str, Any]]:
    """Every captured line, files in name order; each file must hold whole JSON lines only."""
    lines: list[dict[str, Any]] = []
    for path in capture_files(directory):
        data = path.read_bytes()
        assert data.endswith(b"\n"), path
        lines.extend(json.loads(line) for line in data.splitlines())
    return lines


def record(capture: Capture, x: npt.NDArray[np.float32]) -> None:
    capture.record("fraud-score", "1.4.0", FEATURES, x, outputs(len(x)))


# --- what a line holds ------------------------------------------------------------------------


def test_every_row_at_rate_one_round_trips_exactly(tmp_path: Path) -> None:
    x = np.array(
        [[0.1, NAN, 3], [-1.5e-7, 2.5, NAN], [3.4028235e38, -0.0, 16777217]], dtype=np.float32
    )
    capture = Capture(tmp_path / "cap", rate=1.0, clock=ticking())
    capture.record("fraud-score", "1.4.0", FEATURES, x, outputs(3))
    capture.close()

    [path] = capture_files(tmp_path / "cap")
    text = path.read_bytes()
    assert text.isascii()
    assert b'"amount":0.1,' in text
    lines = read_lines(tmp_path / "cap")
    assert [list(line) for line in lines] == [["time", "model", "version", "input", "output"]] * 3
    assert lines[0]["time"] == "2025-01-31T12:00:00.000Z"
    assert {line["model"] for line in lines} == {"fraud-score"}
    assert {line["version"] for line in lines} == {"1.4.0"}
    assert [list(line["input"]) for line in lines] == [list(FEATURES)] * 3
    back = np.array(
        [[NAN if v is None else v for v in line["input"].values()] for line in lines],
        dtype=np.float32,
    )
    assert np.array_equal(back, x, equal_nan=True)
    assert lines[0]["input"]["età"] is None
    assert [line["output"] for line in lines] == to_records(outputs(3))
    assert list(lines[2]["output"]) == ["probability", "label", "scores"]


def test_infinite_inputs_are_not_written_as_missing(tmp_path: Path) -> None:
    x = np.array([[np.inf, -np.inf, NAN]], dtype=np.float32)
    capture = Capture(tmp_path, rate=1.0)
    record(capture, x)
    capture.close()
    [line] = read_lines(tmp_path)
    assert line["input"] == {"amount": "inf", "età": "-inf", "count": None}


def test_a_non_ascii_feature_name_is_written_as_ascii(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0)
    capture.record("m", "1", FEATURES, rows(1), outputs(1))
    capture.close()
    [path] = capture_files(tmp_path)
    assert path.read_bytes().isascii()
    assert "età" in read_lines(tmp_path)[0]["input"]


# --- sampling ---------------------------------------------------------------------------------


def test_single_rows_are_kept_exactly_when_the_draw_is_below_the_rate(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=0.01, random=scripted([0.5, 0.004, 0.01, 0.0099, 0.99]))
    x = rows(5)
    for i in range(5):
        record(capture, x[i : i + 1])
    capture.close()
    kept = np.array([line["input"]["amount"] for line in read_lines(tmp_path)], np.float32)
    assert np.array_equal(kept, x[[1, 3], 0])


def test_batch_rows_are_kept_exactly_where_the_generator_draws_below_the_rate(
    tmp_path: Path,
) -> None:
    x = rows(1000)
    capture = Capture(tmp_path, rate=0.05, rng=np.random.default_rng(11))
    record(capture, x)
    capture.close()
    expected = np.flatnonzero(np.random.default_rng(11).random(1000) < 0.05)
    kept = np.array([[line["input"]["amount"]] for line in read_lines(tmp_path)], np.float32)
    assert 20 < len(expected) < 80
    assert np.array_equal(kept[:, 0], x[expected, 0])


@pytest.mark.parametrize("batch", [1, 1000])
def test_one_percent_of_100k_rows_is_about_a_thousand(tmp_path: Path, batch: int) -> None:
    capture = Capture(
        tmp_path, rate=0.01, random=random.Random(5).random, rng=np.random.default_rng(5)
    )
    x, scored = rows(batch), outputs(batch)
    for _ in range(100_000 // batch):
        capture.record("fraud-score", "1.4.0", FEATURES, x, scored)
    capture.close()
    # Binomial(100000, 0.01): mean 1000, sd 31.5; ±5 sd fails by chance once in 2 million.
    assert 843 <= len(read_lines(tmp_path)) <= 1157


def test_an_unsampled_single_row_costs_one_draw_and_no_file(tmp_path: Path) -> None:
    draws = 0

    def counting() -> float:
        nonlocal draws
        draws += 1
        return 0.5

    capture = Capture(tmp_path, rate=0.01, random=counting)
    record(capture, rows(1))
    assert draws == 1
    assert capture_files(tmp_path) == []


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.01, NAN])
def test_a_rate_outside_zero_to_one_is_refused(tmp_path: Path, rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Capture(tmp_path, rate=rate)


@pytest.mark.parametrize(("max_bytes", "file_bytes"), [(0, None), (1000, 1001), (1000, 0)])
def test_sizes_that_cannot_work_are_refused(
    tmp_path: Path, max_bytes: int, file_bytes: int | None
) -> None:
    with pytest.raises(ValueError, match="bytes"):
        Capture(tmp_path, rate=1.0, max_bytes=max_bytes, file_bytes=file_bytes)


# --- files, rotation and the cap --------------------------------------------------------------


def test_rotation_keeps_the_newest_rows_under_the_cap(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "capture-notes.jsonl").write_text("also mine")
    capture = Capture(tmp_path, rate=1.0, max_bytes=6000, file_bytes=1500, clock=ticking())
    x = rows(400)
    for i in range(0, 400, 2):
        record(capture, x[i : i + 2])
        sizes = [path.stat().st_size for path in capture_files(tmp_path)]
        assert sum(sizes) <= 6000
        assert max(sizes) <= 1500
    capture.close()

    files = capture_files(tmp_path)
    assert len(files) >= 4
    assert sum(path.stat().st_size for path in files) > 6000 - 2 * 1500  # the cap is used
    lines = read_lines(tmp_path)
    kept = np.array([line["input"]["amount"] for line in lines], np.float32)
    assert np.array_equal(kept, x[-len(lines) :, 0])  # the oldest rows were deleted
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "capture-notes.jsonl").read_text() == "also mine"


def test_one_batch_larger_than_a_file_is_split_at_line_ends(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0, max_bytes=100_000, file_bytes=1000)
    record(capture, rows(100))
    capture.close()
    assert len(capture_files(tmp_path)) > 5
    assert all(path.stat().st_size <= 1000 for path in capture_files(tmp_path))
    assert len(read_lines(tmp_path)) == 100


def test_a_line_larger_than_the_cap_is_dropped(tmp_path: Path) -> None:
    x = rows(2)
    wide = {"scores": np.zeros((2, 40), dtype=np.float32)}
    wide["scores"][1] = 0.123456789  # row 1's line is several times longer than row 0's
    capture = Capture(tmp_path, rate=1.0, max_bytes=400, file_bytes=400)
    capture.record("m", "1", FEATURES, x, wide)
    capture.close()
    [line] = read_lines(tmp_path)
    assert line["output"] == {"scores": [0.0] * 40}


def test_names_keep_their_order_when_the_clock_goes_back(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0, max_bytes=100_000, file_bytes=400, clock=ticking())
    record(capture, rows(10))
    capture.close()
    # Restarted after a reboot, before the clock was set: it reads 1970.
    capture = Capture(tmp_path, rate=1.0, max_bytes=100_000, file_bytes=400, clock=ticking(0.0))
    record(capture, rows(10, seed=1))
    capture.close()
    lines = read_lines(tmp_path)
    kept = np.array([line["input"]["amount"] for line in lines], np.float32)
    assert np.array_equal(kept, np.concatenate([rows(10)[:, 0], rows(10, seed=1)[:, 0]]))
    assert lines[-1]["time"].startswith("1970-01-01T")


def test_a_restart_counts_the_files_already_there_against_the_cap(tmp_path: Path) -> None:
    for seed in range(3):
        capture = Capture(tmp_path, rate=1.0, max_bytes=4000, file_bytes=1000)
        record(capture, rows(30, seed))
        capture.close()
        assert sum(path.stat().st_size for path in capture_files(tmp_path)) <= 4000
    # A lower cap applies at once, before anything is captured.
    Capture(tmp_path, rate=1.0, max_bytes=1000, file_bytes=1000).close()
    assert sum(path.stat().st_size for path in capture_files(tmp_path)) <= 1000
    assert capture_files(tmp_path)


@pytest.mark.parametrize(
    ("max_bytes", "file_bytes"),
    [(DEFAULT_MAX_BYTES // 32, DEFAULT_MAX_BYTES // 320), (300_000, MIN_FILE_BYTES)],
)
def test_files_default_to_a_tenth_of_the_cap_but_at_least_64_kib(
    tmp_path: Path, max_bytes: int, file_bytes: int
) -> None:
    capture = Capture(tmp_path, rate=1.0, max_bytes=max_bytes)
    while len(capture_files(tmp_path)) < 2:
        record(capture, rows(10))
    capture.close()
    first = capture_files(tmp_path)[0].stat().st_size
    assert file_bytes - 10 * 200 < first <= file_bytes


def test_the_directory_and_files_are_private(tmp_path: Path) -> None:
    capture = Capture(tmp_path / "cap", rate=1.0)
    record(capture, rows(1))
    capture.close()
    assert stat.S_IMODE((tmp_path / "cap").stat().st_mode) == 0o700
    [path] = capture_files(tmp_path / "cap")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_is_created_until_a_row_is_sampled(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=0.5, random=lambda: 0.9)
    record(capture, rows(1))
    capture.close()
    assert list(tmp_path.iterdir()) == []


# --- failures never reach the request ---------------------------------------------------------


def test_an_unusable_directory_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"cannot use capture directory .*file: Not a directory"):
        Capture(tmp_path / "file", rate=1.0)
    with pytest.raises(StoreError, match="No such file or directory"):
        Capture(tmp_path / "missing" / "cap", rate=1.0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory")
def test_a_read_only_directory_is_refused_at_start(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            Capture(tmp_path, rate=1.0)
    finally:
        tmp_path.chmod(0o700)


def test_a_vanished_directory_turns_capture_off_with_one_log_line(tmp_path: Path) -> None:
    directory = tmp_path / "cap"
    logged: list[str] = []
    capture = Capture(directory, rate=1.0, log=logged.append)
    record(capture, rows(1))
    # Works as root too, where a read-only mode would not stop the writes.
    shutil.rmtree(directory)
    directory.write_text("someone else's")

    for _ in range(3):
        record(capture, rows(2))
    capture.close()

    assert len(logged) == 1
    assert logged[0].startswith(f"error: capture: cannot write to {directory}: ")
    assert logged[0].endswith("; capture is off")
    assert directory.read_text() == "someone else's"


def test_a_deleted_current_file_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0)
    record(capture, rows(1))
    capture_files(tmp_path)[0].unlink()
    record(capture, rows(2))
    capture.close()
    assert len(read_lines(tmp_path)) == 2


def test_a_full_disk_leaves_whole_lines_and_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    capture = Capture(tmp_path, rate=1.0, log=logged.append)
    record(capture, rows(3))
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half_then_full)
        record(capture, rows(3, seed=1))
    record(capture, rows(3, seed=2))
    capture.close()

    assert logged == [
        f"error: capture: cannot write to {tmp_path}: No space left on device; capture is off"
    ]
    kept = np.array([line["input"]["amount"] for line in read_lines(tmp_path)], np.float32)
    assert np.array_equal(kept, rows(3)[:, 0])


def test_records_after_close_do_nothing(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0)
    record(capture, rows(2))
    capture.close()
    capture.close()
    record(capture, rows(2))
    record(capture, rows(1))
    assert len(read_lines(tmp_path)) == 2


# --- threads ----------------------------------------------------------------------------------


def test_concurrent_records_write_every_line_whole(tmp_path: Path) -> None:
    capture = Capture(tmp_path, rate=1.0, max_bytes=10_000_000, file_bytes=20_000)
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        barrier.wait()
        for i in range(100):
            record(capture, rows(1 + i % 3, seed))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    capture.close()

    assert len(capture_files(tmp_path)) > 1
    assert len(read_lines(tmp_path)) == 8 * sum(1 + i % 3 for i in range(100))


# --- in the server ----------------------------------------------------------------------------


def test_serve_captures_scored_rows_with_their_answers(keys: KeyFiles, tmp_path: Path) -> None:
    built = serverkit.build(keys, tmp_path, "m", "1.0.0")
    store = serverkit.init_store(keys, tmp_path / "store")
    serverkit.install(store, built.bundle)
    x = built.trained.x_test[:40]
    flags = ("--capture", str(tmp_path / "capture"), "--capture-rate", "1")
    with serverkit.serve_process(store, tmp_path / "serve.log", *flags) as server:
        body = serverkit.infer_body(x[:30])
        reply = serverkit.post_json(server.port, "/v2/models/m/infer", body)
        assert reply.status == 200
        for row in x[30:]:
            records = {"instances": serverkit.rows_json(row[None])}
            assert serverkit.post_json(server.port, "/invocations", records).status == 200
    lines = read_lines(tmp_path / "capture")
    assert len(lines) == 40
    assert {(line["model"], line["version"]) for line in lines} == {("m", "1.0.0")}
    back = np.array(
        [[NAN if v is None else v for v in line["input"].values()] for line in lines],
        dtype=np.float32,
    )
    assert np.array_equal(back, x, equal_nan=True)
    expected = built.trained.predict(x)
    captured = np.array([line["output"]["probability"] for line in lines])
    assert np.allclose(captured, expected, atol=1e-6)


def test_serve_refuses_an_unusable_capture_directory(keys: KeyFiles, tmp_path: Path) -> None:
    store = serverkit.init_store(keys, tmp_path / "store")
    (tmp_path / "file").write_text("not a directory")
    proc = run(
        "bundle-runtime",
        ["serve", "--store", str(store), "--port", "0", "--capture", str(tmp_path / "file")],
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot use capture directory")
    assert len(proc.stderr.splitlines()) == 1
    proc = run(
        "bundle-runtime",
        [
            "serve",
            "--store",
            str(store),
            "--port",
            "0",
            "--capture",
            str(tmp_path / "c"),
            "--capture-rate",
            "0",
        ],
    )
    assert proc.returncode == 2 and "--capture-rate" in proc.stderr
