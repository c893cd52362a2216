"""``bundle-runtime score`` end to end: a real signed bundle, a real process, real pipes."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from edgebundle.runtime.cli import ExitCode, main
from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.answers import CsvWriter, encode_jsonl, output_columns, score_rows
from edgebundle.runtime.rows.csv_rows import CsvRowParser
from edgebundle.runtime.rows.json_rows import JsonRowParser
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.stream import BATCH_ROWS, LineSource, StreamStats, score_csv, score_jsonl
from tests.support.helpers_runtime import (
    FEATURES,
    RUNTIME,
    BundleFiles,
    multiclass,
    regression,
    rows,
    write_signed_bundle,
)

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "bundle-runtime")
TIMEOUT = 60


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> BundleFiles:
    return write_signed_bundle(tmp_path_factory.mktemp("mc"), multiclass())


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> BundleFiles:
    return write_signed_bundle(tmp_path_factory.mktemp("reg"), regression())


def score_args(files: BundleFiles, *extra: str) -> list[str]:
    return ["score", "--bundle", str(files.bundle), "--trust", str(files.public_key), *extra]


def run(args: list[str], stdin: bytes | int = b"") -> subprocess.CompletedProcess[bytes]:
    if isinstance(stdin, bytes):
        return subprocess.run(
            RUNTIME + args, input=stdin, capture_output=True, timeout=TIMEOUT, check=False
        )
    return subprocess.run(
        RUNTIME + args, stdin=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def reference(model_rows: np.ndarray) -> np.ndarray:
    return multiclass().reference(model_rows)["probabilities"]


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_rows_scored_like_xgboost(mc: BundleFiles) -> None:
    x = rows(40, seed=11)
    lines = [
        json.dumps({"id": i, **{f: float(v) for f, v in zip(FEATURES, row, strict=True) if v == v}})
        for i, row in enumerate(x)
    ]
    result = run(score_args(mc), ("\n".join(lines) + "\n").encode())
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stderr == b""
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == list(range(40))
    got = np.array([r["probabilities"] for r in records], dtype=np.float32)
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)
    assert [r["label"] for r in records] == multiclass().reference(x)["label"].tolist()


def test_every_kind_of_bad_line_gets_its_own_error_record(mc: BundleFiles) -> None:
    lines = [
        b'{"id": "a", "f0": 1, "f1": null}',  # object with null and missing keys
        b"[1, 2, 3, 4]",  # array
        b'{"id": "typo", "f9": 1}',  # unknown key
        b'{"id": "s", "f0": "1.5"}',  # string
        b'{"f0": true}',  # boolean
        b"[1, 2, 3]",  # wrong count
        b'{"f0": NaN}',  # NaN token
        b"",  # blank line
        b'{"f0": 1, "f0": 2}',  # duplicate key
        b'{"f0": "\xff\xfe"}',  # not UTF-8
        b'{"id": 10}',  # all missing
    ]
    result = run(score_args(mc), b"\n".join(lines) + b"\n")
    assert result.returncode == ExitCode.ROW_ERRORS
    assert result.stderr == b""
    records = jsonl(result.stdout)
    assert len(records) == len(lines)
    errors = [r.get("error") for r in records]
    assert errors == [
        None,
        None,
        "line 3: unknown key 'f9'",
        "line 4: feature 'f0': expected a number, got a string",
        "line 5: feature 'f0': expected a number, got a boolean",
        "line 6: expected 4 values, got 3",
        "line 7: NaN is not a JSON number; leave the value out or use null",
        "line 8: blank line",
        "line 9: duplicate key 'f0'",
        "line 10: not valid UTF-8 (byte 8)",
        None,
    ]
    assert [r.get("id") for r in records] == ["a", None, "typo", "s"] + [None] * 6 + [10]
    assert sorted(records[0]) == ["id", "label", "probabilities"]


def test_empty_input_gives_no_output_and_exit_0(mc: BundleFiles) -> None:
    for fmt in ("jsonl", "csv"):
        result = run(score_args(mc, "--format", fmt), b"")
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_last_line_without_newline_and_crlf_are_scored(mc: BundleFiles) -> None:
    result = run(score_args(mc), b"\xef\xbb\xbf[1, 2, 3, 4]\r\n[1, 2, 3, 4]")
    assert result.returncode == ExitCode.OK, result.stdout
    first, second = jsonl(result.stdout)
    assert first == second


def test_threads_option(mc: BundleFiles) -> None:
    result = run(score_args(mc, "--threads", "2"), b"[1, 2, 3, 4]\n")
    assert result.returncode == ExitCode.OK
    assert len(jsonl(result.stdout)) == 1


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_passes_id_through_and_expands_probabilities(mc: BundleFiles) -> None:
    data = b'id,f3,f2,f1,f0,comment\nr1,4,3,2,1,hello\nr2,,,,,"a,b"\n'
    result = run(score_args(mc, "--format", "csv"), data)
    assert result.returncode == ExitCode.OK, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "id,comment,probabilities_0,probabilities_1,probabilities_2,label,error"
    assert lines[1].startswith("r1,hello,") and lines[1].endswith(",")
    assert lines[2].startswith('r2,"a,b",')
    x = np.array([[1, 2, 3, 4], [np.nan] * 4], dtype=np.float32)
    got = np.array([line.split(",")[2:5] for line in lines[1:2]], dtype=np.float32)
    np.testing.assert_allclose(got, reference(x)[:1], rtol=1e-5, atol=1e-6)


def test_csv_bad_cells_are_error_rows(mc: BundleFiles) -> None:
    data = b"id,f0,f1,f2,f3\nr1,x,1,1,1\nr2,1,1\n\nr4,1,1,1,1\n"
    result = run(score_args(mc, "--format", "csv"), data)
    assert result.returncode == ExitCode.ROW_ERRORS
    lines = result.stdout.decode().splitlines()
    assert lines[1] == "r1,,,,,\"line 2: column 'f0': expected a number, got 'x'\""
    assert lines[2] == ',,,,,"line 3: expected 5 cells, got 3"'
    assert lines[3] == ",,,,,line 4: blank line"
    assert lines[4].startswith("r4,0.") and lines[4].endswith(",")


def test_csv_missing_feature_column_is_missing_in_every_row_said_once(mc: BundleFiles) -> None:
    result = run(score_args(mc, "--format", "csv"), b"id,f0,f1\n1,2,3\n2,4,\n")
    assert result.returncode == ExitCode.OK
    assert result.stderr == (
        b"note: the CSV header has no column for features 'f2', 'f3': "
        b"they are missing in every row\n"
    )
    # The same rows as JSON objects that leave those keys out score the same.
    by_key = run(score_args(mc), b'{"id": 1, "f0": 2, "f1": 3}\n{"id": 2, "f0": 4}\n')
    records = [json.loads(line) for line in by_key.stdout.splitlines()]
    expected = "".join(
        f"{r['id']},{','.join(map(str, r['probabilities']))},{r['label']},\n" for r in records
    )
    assert result.stdout.decode().splitlines()[1:] == expected.splitlines()


def test_csv_column_differing_in_case_gets_a_hint(mc: BundleFiles) -> None:
    result = run(score_args(mc, "--format", "csv"), b"F0,f1,f2,f3\n1,2,3,4\n")
    assert result.returncode == ExitCode.OK
    assert b"feature 'f0' (column 'F0' differs only in case" in result.stderr
    assert result.stdout.startswith(b"F0,probabilities_0,")


def test_unreadable_stdin_is_a_usage_error(mc: BundleFiles, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)  # read() fails with EBADF
    try:
        result = run(score_args(mc), fd)
    finally:
        os.close(fd)
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == b"error: cannot read input: Bad file descriptor\n"


# --- streaming and batching ---------------------------------------------------------------------


def read_line(stream: IO[bytes]) -> bytes:
    """One line, failing (instead of hanging) if the runtime does not answer in time."""
    ready, _, _ = select.select([stream], [], [], TIMEOUT)
    assert ready, "no answer: the runtime waited for more input before answering"
    return stream.readline()


def test_each_line_is_answered_before_the_next_is_written(mc: BundleFiles) -> None:
    x = rows(5, seed=4, missing=0)
    with subprocess.Popen(
        [CONSOLE_SCRIPT, *score_args(mc)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        answers = []
        for i, row in enumerate(x):
            proc.stdin.write(
                json.dumps(
                    {"id": i, "f0": 0, **dict(zip(FEATURES, row.tolist(), strict=True))}
                ).encode()
                + b"\n"
            )
            proc.stdin.flush()
            answers.append(json.loads(read_line(proc.stdout)))
        proc.stdin.write(b"oops\n")
        proc.stdin.flush()
        assert json.loads(read_line(proc.stdout))["error"].startswith("line 6: invalid JSON")
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == ExitCode.ROW_ERRORS
    assert [a["id"] for a in answers] == list(range(5))
    got = np.array([a["probabilities"] for a in answers], dtype=np.float32)
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)


def test_csv_header_and_rows_are_answered_as_they_arrive(mc: BundleFiles) -> None:
    with subprocess.Popen(
        RUNTIME + score_args(mc, "--format", "csv"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"f0,f1,f2,f3,key\n")
        proc.stdin.flush()
        assert read_line(proc.stdout).startswith(b"key,probabilities_0,")
        for key in (b"a", b"b"):
            proc.stdin.write(b"1,2,3,4," + key + b"\n")
            proc.stdin.flush()
            assert read_line(proc.stdout).startswith(key + b",0.")
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == ExitCode.OK


def test_line_source_is_ready_only_for_complete_lines() -> None:
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as reader, open(write_end, "wb", buffering=0) as writer:
        source = LineSource(reader.fileno())
        assert not source.ready()  # nothing written yet: asking must not block
        writer.write(b"first\nsec")
        assert source.ready()
        assert source.next_line() == b"first"
        assert not source.ready()  # "sec" is not a line until its newline arrives
        writer.write(b"ond\nthird")
        assert (source.next_line(), source.lineno) == (b"second", 2)
        writer.close()
        assert source.ready()  # the end of input is an answer too
        assert source.next_line() == b"third"  # a last line needs no newline
        assert source.next_line() is None


def test_line_source_widens_a_pipe_and_takes_waiting_lines_at_once(tmp_path: Path) -> None:
    """A writer piping rows in may run ~1 MiB ahead of the reader (Linux lets a process grow
    its pipes that far), and lines already there are taken as one batch."""
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as reader, open(write_end, "wb", buffering=0) as writer:
        source = LineSource(reader.fileno())
        assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) == 1 << 20
        lines = [b"%d" % i + b"x" * 1000 for i in range(700)]
        # ~700 KB in one write, with nobody reading yet: a 64 KiB pipe would block here.
        writer.write(b"\n".join(lines) + b"\n")
        assert source.next_line() == lines[0]
        assert source.take(10) == lines[1:11] and source.lineno == 11
        taken = []
        while more := source.take(1000):  # what one read brings, each time
            taken += more
        assert taken == lines[11:] and source.lineno == 700
        assert not source.take(5)  # nothing more waiting: no wait either
    plain = tmp_path / "rows.jsonl"
    plain.write_bytes(b"[1]\n[2]")
    with open(plain, "rb", buffering=0) as file:  # not a pipe: read as it is
        source = LineSource(file.fileno())
        assert source.take(5) == [b"[1]"]  # "[2]" is a line once the input ends
        assert source.take(5) == [b"[2]"] and not source.take(5)


def many_lines(n: int) -> bytes:
    x = rows(n, seed=8)
    out = []
    for i, row in enumerate(x):
        if i % 97 == 5:
            out.append(b'{"id": %d, "f0": "bad"}' % i)
        else:
            out.append(json.dumps([None if v != v else v for v in row.tolist()]).encode())
    return b"\n".join(out) + b"\n"


class CountingScorer(Scorer):
    calls: int = 0

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return super().predict(x)


def stream_file(path: Path, batch_rows: int, fmt: str = "jsonl") -> tuple[bytes, int, StreamStats]:
    model = multiclass()
    scorer = CountingScorer(model.onnx, model.features, model.outputs)
    out: list[bytes] = []
    stats = StreamStats()
    fd = os.open(path, os.O_RDONLY)
    try:
        score = score_csv if fmt == "csv" else score_jsonl
        score(scorer, LineSource(fd), out.append, stats, batch_rows=batch_rows)
    finally:
        os.close(fd)
    return b"".join(out), scorer.calls, stats


def test_waiting_input_is_batched_with_identical_output_in_order(
    mc: BundleFiles, tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(many_lines(1000))
    batched, batched_calls, stats = stream_file(path, batch_rows=256)
    single, single_calls, _ = stream_file(path, batch_rows=1)
    assert (batched_calls, single_calls) == (4, 1000)  # 256 rows per call at most
    assert (stats.rows, stats.errors) == (1000, 11)
    assert batched == single
    # The real process, reading a pipe, gives the same bytes.
    result = run(score_args(mc), path.read_bytes())
    assert result.returncode == ExitCode.ROW_ERRORS
    assert result.stdout == batched


def test_csv_batches_too(tmp_path: Path) -> None:
    x = rows(600, seed=2)
    body = "\n".join(",".join("" if v != v else repr(v) for v in row) for row in x.tolist())
    path = tmp_path / "rows.csv"
    path.write_text("f0,f1,f2,f3\n" + body + "\n")
    batched, calls, stats = stream_file(path, batch_rows=256, fmt="csv")
    single, _, _ = stream_file(path, batch_rows=1, fmt="csv")
    assert (calls, stats.rows, stats.errors) == (3, 600, 0)
    assert batched == single
    got = np.array([line.split(",")[:3] for line in batched.decode().splitlines()[1:]], np.float32)
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 7, 256])
def test_csv_quoted_cells_across_lines_and_batches(tmp_path: Path, batch_rows: int) -> None:
    # Plain batches go through the bulk path, the others through the csv module, which must
    # follow a quoted cell beyond the batch it starts in; whatever the batching, the answer
    # and the line numbers in errors are the same.
    lines = [
        "id,f0,f1,f2,f3",
        "a,1,2,3,4",
        '"b\nstill b\nand b",1,2,3,4',
        "c,1,x,3,4",
        '"d ""quoted""",5,6,7,8',
        "",
        'e,"1",2,3,4',
        "f,1,2,3",
        '"g\n\n",1,2,3,4',
        "h,1_0,2,3,4",
        "i,1.5,,nan,-inf",
    ]
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    got, _, stats = stream_file(path, batch_rows=batch_rows, fmt="csv")
    single, _, _ = stream_file(path, batch_rows=1, fmt="csv")
    assert got == single
    records = got.decode().split("\n")
    errors = [record.split(",", 5)[-1] for record in records if "line " in record]
    assert errors == [
        "\"line 6: column 'f1': expected a number, got 'x'\"",
        "line 8: blank line",
        '"line 10: expected 5 cells, got 4"',
        "\"line 14: column 'f0': expected a number, got '1_0'\"",
    ]
    assert (stats.rows, stats.errors) == (10, 4)


def test_reader_closing_early_ends_quietly(mc: BundleFiles, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"[1, 2, 3, 4]\n" * 200_000)  # far more output than a pipe buffers
    with (
        path.open("rb") as stdin,
        subprocess.Popen(
            RUNTIME + score_args(mc), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc,
    ):
        assert proc.stdout is not None and proc.stderr is not None
        assert read_line(proc.stdout).startswith(b'{"probabilities":')
        proc.stdout.close()
        assert proc.wait(TIMEOUT) == ExitCode.OK
        assert proc.stderr.read() == b""


# --- exit codes for the bundle and the command line ---------------------------------------------


def test_tampered_bundle_rejected_with_one_line(
    mc: BundleFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(mc.bundle.read_bytes())
    data[data.index(b'"multi:softprob"') + 1] ^= 0x01  # inside the signed manifest
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(bytes(data))
    code = main(["score", "--bundle", str(tampered), "--trust", str(mc.public_key)])
    assert code == ExitCode.REJECTED
    err = capsys.readouterr().err
    assert err.startswith("error: no valid signature by a trusted key")
    assert err.count("\n") == 1


def test_bundle_signed_by_another_key_rejected(
    mc: BundleFiles, reg: BundleFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["score", "--bundle", str(mc.bundle), "--trust", str(reg.public_key)])
    assert code == ExitCode.REJECTED
    assert capsys.readouterr().err.startswith("error: no valid signature by a trusted key")


def test_model_that_breaks_the_graph_contract_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_signed_bundle(tmp_path, multiclass(), onnx_bytes=regression().onnx)
    code = main(["score", "--bundle", str(files.bundle), "--trust", str(files.public_key)])
    assert code == ExitCode.REJECTED
    err = capsys.readouterr().err
    assert err == (
        "error: model outputs ['prediction'] do not match the manifest's "
        "['label', 'probabilities']\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "--bundle", "{missing}", "--trust", "{pub}"], "error: cannot read"),
        (["score", "--bundle", "{bundle}", "--trust", "{missing}"], "error: trust file not found"),
        (["score", "--bundle", "{bundle}", "--trust", "{bundle}"], "is not a PEM public key"),
        (["score", "--bundle", "{bundle}"], "the following arguments are required: --trust"),
        (["score", "--bundle", "{bundle}", "--trust", "{pub}", "--threads", "-1"], "must be >= 0"),
        (
            ["score", "--bundle", "{bundle}", "--trust", "{pub}", "--format", "xml"],
            "invalid choice",
        ),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(
    mc: BundleFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    names = {"bundle": mc.bundle, "pub": mc.public_key, "missing": tmp_path / "nope"}
    code = main([arg.format(**names) for arg in argv])
    assert code == ExitCode.USAGE
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--help"]) == ExitCode.OK
    assert "--trust FILE" in capsys.readouterr().out


def test_rejection_from_a_real_process_has_no_traceback(mc: BundleFiles, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bundle"
    empty.write_bytes(b"")
    result = run(["score", "--bundle", str(empty), "--trust", str(mc.public_key)])
    assert result.returncode == ExitCode.REJECTED
    assert result.stderr == b"error: bundle is empty (0 bytes)\n"


def test_batched_jsonl_is_byte_identical_to_scoring_line_by_line(tmp_path: Path) -> None:
    good = [json.dumps([None if v != v else v for v in row]) for row in rows(300, seed=5).tolist()]
    bad = ["[1e999, 0, 0, 0]", "[true, 0, 0, 0]", "[1, 2]", "", "[1,", '{"id": "x", "f0": 1}']
    lines = [(good[i] if i % 7 else bad[i // 7 % len(bad)]).encode() for i in range(300)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    batched, calls, stats = stream_file(path, batch_rows=256)
    model = multiclass()
    scorer = Scorer(model.onnx, model.features, model.outputs)
    parser = JsonRowParser(model.features)
    expected = b"".join(
        encode_jsonl(score_rows(scorer, [parser.parse_line(line, f"line {i + 1}")]))
        for i, line in enumerate(lines)
    )
    assert (calls, stats.rows, stats.errors) == (2, 300, 36)
    assert batched == expected


def test_batched_csv_is_byte_identical_to_reading_each_line_alone(tmp_path: Path) -> None:
    x = rows(300, seed=8)
    good = [",".join("" if v != v else repr(v) for v in row) for row in x.tolist()]
    bad = ["1,x,3,4", "1,2,3", "", "1,2,3,4,5", "1_0,2,3,4", "e5,,,", '"1",2,3,"4"', " 1,2,3,4"]
    lines = [good[i] if i % 7 else bad[i // 7 % len(bad)] for i in range(300)]
    for ids in (False, True):
        header = ["id", *FEATURES] if ids else list(FEATURES)
        body = [f"r{i},{line}" if ids else line for i, line in enumerate(lines)]
        path = tmp_path / "mixed.csv"
        path.write_text("\n".join([",".join(header), *body]) + "\n")
        batched, calls, stats = stream_file(path, batch_rows=256, fmt="csv")
        model = multiclass()
        scorer = Scorer(model.onnx, model.features, model.outputs)
        parser = CsvRowParser(header, model.features, {*output_columns(model.outputs), "error"})
        writer = CsvWriter(parser.passthrough_columns, model.outputs)
        expected = writer.header() + b"".join(
            writer.encode(score_rows(scorer, [parser.parse_cells(cells, f"line {i + 2}")]))
            for i, cells in enumerate(csv.reader(body))
        )
        # 43 bad lines, of which the quoted and the space-padded numbers are good after all
        assert (calls, stats.rows, stats.errors) == (2, 300, 33)
        assert batched == expected


# --- scoring overlapped with reading --------------------------------------------------------------


def scoring_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("score")]


def mixed_lines(n: int) -> bytes:
    """Arrays, objects with ids of every JSON type, and bad lines, in a fixed pattern."""
    ids = ['"a"', "7", "-0.0", "true", "null", '"\\u00e9"']
    out = []
    for i, row in enumerate(rows(n, seed=3).tolist()):
        values = [None if v != v else v for v in row]
        if i % 101 == 7:
            out.append(b"[1, 2")
        elif i % 3 == 0:
            features = dict(zip(FEATURES, values, strict=True))
            out.append(
                b'{"id": %s, %s' % (ids[i % len(ids)].encode(), json.dumps(features)[1:].encode())
            )
        else:
            out.append(json.dumps(values).encode())
    return b"\n".join(out) + b"\n"


def test_overlapped_batches_answer_in_input_order(mc: BundleFiles, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(mixed_lines(9000))
    batched, batched_calls, stats = stream_file(path, batch_rows=BATCH_ROWS)
    single, _, _ = stream_file(path, batch_rows=1)
    assert batched_calls == -(-9000 // BATCH_ROWS)
    assert (stats.rows, stats.errors) == (9000, 90)
    assert batched == single
    assert scoring_threads() == []
    result = run(score_args(mc), path.read_bytes())
    assert result.returncode == ExitCode.ROW_ERRORS
    assert result.stdout == batched


def test_csv_overlapped_batches_answer_in_input_order(tmp_path: Path) -> None:
    x = rows(9000, seed=6)
    body = "\n".join(
        f"r_{i},{','.join('' if v != v else repr(v) for v in row)}"
        for i, row in enumerate(x.tolist())
    )
    path = tmp_path / "rows.csv"
    path.write_text("id,f0,f1,f2,f3\n" + body + "\nr,1,x,3,4\n")
    batched, calls, stats = stream_file(path, batch_rows=BATCH_ROWS, fmt="csv")
    single, _, _ = stream_file(path, batch_rows=1, fmt="csv")
    assert (calls, stats.rows, stats.errors) == (-(-9001 // BATCH_ROWS), 9001, 1)
    assert batched == single


def read_lines(fd: int, n: int) -> list[bytes]:
    """``n`` lines read straight from ``fd``, failing (instead of hanging) if they do not come."""
    data = b""
    while data.count(b"\n") < n:
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready, f"{n} answers due: the runtime waited for more input before answering"
        data += os.read(fd, 1 << 16)
    lines = data.split(b"\n")
    assert lines[n:] == [b""]
    return lines[:n]


def test_piped_lines_are_all_answered_while_input_stays_open(mc: BundleFiles) -> None:
    """A burst of lines is batched, and every answer is out before the runtime waits again."""
    burst = b"[1, 2, 3, 4]\n" * 3000  # fits a pipe's buffer, so the write does not block
    with subprocess.Popen(
        RUNTIME + score_args(mc), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        for _ in range(2):
            proc.stdin.write(burst)
            proc.stdin.flush()
            assert len(set(read_lines(proc.stdout.fileno(), 3000))) == 1
        proc.stdin.write(b"[1, 2]\n")
        proc.stdin.flush()
        (answer,) = read_lines(proc.stdout.fileno(), 1)
        assert json.loads(answer) == {"error": "line 6001: expected 4 values, got 2"}
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == ExitCode.ROW_ERRORS


def test_unwritable_output_stops_the_stream_with_one_line(mc: BundleFiles, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(mixed_lines(9000))
    with path.open("rb") as stdin, open("/dev/full", "wb") as stdout:
        result = subprocess.run(
            RUNTIME + score_args(mc),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
            check=False,
        )
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == b"error: cannot write output: No space left on device\n"


def test_closed_output_mid_stream_stops_after_the_answers_before_it(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(mixed_lines(9000))
    expected, _, _ = stream_file(path, batch_rows=BATCH_ROWS)
    model = multiclass()
    scorer = Scorer(model.onnx, model.features, model.outputs)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: writing fails as when `| head` has exited
    received: list[bytes] = []
    stats = StreamStats()

    def write(data: bytes) -> None:
        if not received:
            received.append(data)
        else:
            os.write(write_end, data)

    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BrokenPipeError):
            score_jsonl(scorer, LineSource(fd), write, stats)
    finally:
        os.close(fd)
        os.close(write_end)
    assert received == [expected[: len(received[0])]]
    assert expected[len(received[0]) - 1 : len(received[0])] == b"\n"
    assert stats.rows == 2 * BATCH_ROWS  # the second batch was encoded, then not written
    assert scoring_threads() == []


def test_no_scoring_thread_outlives_a_refused_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"f0,f1,f0\n1,2,3\n")
    with pytest.raises(InputError, match="repeats column 'f0'"):
        stream_file(path, batch_rows=BATCH_ROWS, fmt="csv")
    assert scoring_threads() == []


# --- npy ---------------------------------------------------------------------------------------


def npy_bytes(*arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    for array in arrays:
        np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_npy_arrays_back_to_back_score_as_their_jsonl_rows(mc: BundleFiles) -> None:
    x = rows(700, seed=8, missing=0.2).astype(np.float64)
    x[3, 1] = 1e39  # beyond float32: +inf, as in an array given to Model.predict
    whole = np.round(np.nan_to_num(x[10:15], posinf=0) * 100).astype(np.int64)
    data = npy_bytes(x, whole, x[:0], x[5:9].astype(">f4"))
    result = run(score_args(mc, "--format", "npy"), data)
    assert result.returncode == ExitCode.OK, result.stderr
    given = [*x.tolist(), *whole.tolist(), *x[5:9].astype(np.float32).astype(float).tolist()]
    as_json = "".join(json.dumps([None if v != v else v for v in row]) + "\n" for row in given)
    by_line = run(score_args(mc), as_json.encode())
    assert by_line.returncode == ExitCode.OK, by_line.stderr
    assert result.stdout == by_line.stdout
    assert len(result.stdout.splitlines()) == 709


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (npy_bytes(np.zeros((2, 3), np.float32)), "array 1: has shape [2, 3]; rows must have"),
        (npy_bytes(np.zeros(4, np.float32)), "array 1: has shape [4]"),
        (npy_bytes(np.zeros((2, 4), np.complex64)), "array 1: holds complex64"),
        (npy_bytes(np.array([["a"] * 4])), "array 1: holds <U1"),
        (npy_bytes(np.zeros((3, 4), np.float32))[:-8], "array 1: ends after 2 of its 3 rows"),
        (npy_bytes(np.zeros((1, 4), np.float32)) + b"x" * 20, "array 2: not a .npy array"),
        (b'{"f0": 1}\n', "array 1: not a .npy array"),
        (npy_bytes(np.asfortranarray(np.zeros((3, 4), np.float32))), "array 1: is column-major"),
    ],
)
def test_npy_input_that_is_not_usable_is_one_error_line(
    mc: BundleFiles, data: bytes, message: str
) -> None:
    result = run(score_args(mc, "--format", "npy"), data)
    assert result.returncode == ExitCode.USAGE
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"error: {message}"), line
    good_first = data.startswith(npy_bytes(np.zeros((1, 4), np.float32)))
    assert len(result.stdout.splitlines()) == (1 if good_first else 0)
