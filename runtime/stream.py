"""Streaming JSONL/CSV scoring: answer each line as it arrives, batch when more is waiting.

A caller that writes one line and waits gets its answer at once; a caller that pipes a file
gets up to ``batch_rows`` rows per batch. Whether more input is waiting is asked of the file
descriptor (``select``), which works for pipes, terminals and regular files.

A batch is scored in a worker thread while the main thread reads and parses the next one:
onnxruntime releases the GIL, so on two cores the scoring time is hidden. Everything else
(parsing, encoding, writing, counting) stays on the main thread, in input order, and every
answer due is written before the main thread waits for input.
"""

from __future__ import annotations

import csv
import fcntl
import itertools
import os
import select
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.answers import (
    ERROR_KEY,
    CsvWriter,
    Observer,
    encode_answers_jsonl,
    output_columns,
    stack_rows,
)
from edgebundle.runtime.rows.csv_rows import CsvRowParser
from edgebundle.runtime.rows.json_rows import JsonRowParser
from edgebundle.runtime.rows.npy_rows import BinaryInput, NpyReader
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.scoring import MAX_ROWS_PER_RUN, Scorer

# Bigger batches amortise onnxruntime's per-call cost, but that cost is paid in the worker
# thread, off the critical path; measured, 4096 rows (~15 MB of parsed JSON at 100 features
# where 256 rows stay in the CPU caches) parse 10-15% slower than 256 and end up slower overall.
BATCH_ROWS = 256
_CHUNK_BYTES = 1 << 16
# Linux's default ceiling for an unprivileged process (/proc/sys/fs/pipe-max-size).
_PIPE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


class LineSource:
    """Lines (without their ``\\n``) read from a file descriptor as they become available."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        _widen_pipe(fd)
        self._partial = bytearray()
        # Lines read and not yet taken are _lines[_taken:]: a list taken from by slicing, so
        # that a batch of lines costs one C call, not a Python call per line.
        self._lines: list[bytes] = []
        self._taken = 0
        self._eof = False
        self.lineno = 0  # of the line last returned

    def ready(self) -> bool:
        """Whether ``next_line`` can answer without waiting for the writer."""
        while not self._buffered() and not self._eof and _readable(self._fd):
            self._fill()
        return self._buffered() > 0 or self._eof

    def next_line(self, before_wait: Callable[[], None] = lambda: None) -> bytes | None:
        """The next line, waiting for it if needed (calling ``before_wait`` first);
        ``None`` at the end of input."""
        while not self._buffered() and not self._eof:
            if not _readable(self._fd):
                before_wait()
            self._fill()
        lines = self._take(1)
        return lines[0] if lines else None

    def take(self, most: int) -> list[bytes]:
        """Up to ``most`` lines that ``next_line`` would give without waiting; none only when
        ``ready`` is false or the input has ended."""
        if not self.ready():
            return []
        return self._take(most)

    def _buffered(self) -> int:
        return len(self._lines) - self._taken

    def _take(self, most: int) -> list[bytes]:
        lines = self._lines[self._taken : self._taken + most]
        self._taken += len(lines)
        if lines and self.lineno == 0:
            # Spreadsheet tools start UTF-8 files with a byte order mark; it is not data.
            lines[0] = lines[0].removeprefix(_BOM)
        self.lineno += len(lines)
        return lines

    def _fill(self) -> None:
        try:
            data = os.read(self._fd, _CHUNK_BYTES)
        except OSError as e:
            raise InputError(f"cannot read input: {e.strerror}") from None
        if not data:
            self._eof = True
            if self._partial:
                self._append([bytes(self._partial)])
                self._partial.clear()
            return
        if b"\n" not in data:
            self._partial += data
            return
        # One copy of the data, by split: the line left open from the last read is the only
        # other one copied.
        lines = data.split(b"\n")
        if self._partial:
            lines[0] = bytes(self._partial) + lines[0]
        self._partial = bytearray(lines.pop())
        self._append(lines)

    def _append(self, lines: list[bytes]) -> None:
        self._lines = self._lines[self._taken :] + lines
        self._taken = 0


def _widen_pipe(fd: int) -> None:
    """Let a pipe on ``fd`` hold up to ``_PIPE_BYTES`` (Linux; anything else is left as it is).

    With the default 64 KiB a writer piping rows in is stopped every ~60 rows until the
    reader catches up, and a batch ends where the pipe ran dry: more, smaller batches and more
    wake-ups. Measured through ``cat file |``, 100,000 rows at 100 features: JSON arrays
    1.12-1.26 -> 1.04-1.08 s, objects 1.87-1.94 -> 1.77-1.78 s, CSV 1.26-1.28 -> 1.17-1.18 s.
    A line written alone is answered as soon as before: only the room for input grows.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    # Not a pipe, or over the system's limit for this user: it keeps its size.
    with suppress(OSError):
        fcntl.fcntl(fd, set_size, _PIPE_BYTES)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@dataclass
class StreamStats:
    """Counts kept up to date while streaming, so they are known even if output breaks off."""

    rows: int = 0
    errors: int = 0


_Parsed = Row | RowError
_Outputs = Mapping[str, npt.NDArray[Any]]
_Answer = Callable[[list[_Parsed], _Outputs], bytes]
_CsvRecord = tuple[list[str], str] | RowError  # cells and where they start, or why not


def score_jsonl(
    scorer: Scorer,
    source: LineSource,
    write: Callable[[bytes], None],
    stats: StreamStats,
    batch_rows: int = BATCH_ROWS,
    observe: Observer | None = None,
) -> None:
    """Score JSONL from ``source``: one output line per input line, in order."""
    parser = JsonRowParser(scorer.features, scorer.category_names)
    with _pipeline(scorer, write, stats, observe) as pipeline:
        for lines in _batches(source, pipeline.flush, batch_rows):
            # Lines are parsed a batch at a time: whole batches convert to float32 much faster,
            # and a batch of numbers only (the usual case) becomes the scorer's input.
            batch = parser.parse_batch(lines, source.lineno - len(lines) + 1)
            if isinstance(batch, np.ndarray):
                pipeline.submit([_NUMBERS] * len(batch), encode_answers_jsonl, batch)
            else:
                pipeline.submit(batch, encode_answers_jsonl)


def score_csv(
    scorer: Scorer,
    source: LineSource,
    write: Callable[[bytes], None],
    stats: StreamStats,
    batch_rows: int = BATCH_ROWS,
    observe: Observer | None = None,
    note: Callable[[str], None] = lambda _: None,
) -> None:
    """Score CSV from ``source``: a header line, then one output row per input row, in order.

    Raises ``InputError`` when the header is unusable; nothing is scored then. ``note`` is
    told what the header means for every row (a feature it has no column for).
    """
    with _pipeline(scorer, write, stats, observe) as pipeline:
        try:
            header = next(csv.reader(_decoded(source, pipeline.flush)), None)
        except csv.Error as e:
            raise InputError(f"line 1: bad CSV header: {e}") from None
        if header is None:
            return
        reserved = {*output_columns(scorer.outputs), ERROR_KEY}
        try:
            parser = CsvRowParser(header, scorer.features, reserved, scorer.category_names)
        except InputError as e:
            raise InputError(f"line 1: {e}") from None
        for line in parser.notes:
            note(line)
        writer = CsvWriter(parser.passthrough_columns, scorer.outputs)
        write(writer.header())

        for raw in _batches(source, pipeline.flush, batch_rows):
            # A batch at a time: plain lines (the usual case) convert in bulk, from their bytes
            # when every cell is a JSON number or empty, and anything else is read by the csv
            # module, which also follows a quoted cell across lines.
            lines: list[str] = []
            x = parser.parse_numbers_bytes(raw)
            if x is None:
                lines = b"\n".join(raw).decode("utf-8", "surrogateescape").split("\n")
                x = parser.parse_plain_numbers(lines)
            if x is not None:
                pipeline.submit([_NUMBERS] * len(x), writer.encode_answers, x)
                continue
            first = source.lineno - len(raw) + 1
            plain = parser.parse_plain_lines(lines)
            if plain is None:
                records = _csv_records(lines, first, _decoded(source, pipeline.flush))
                pipeline.submit(parser.parse_rows(list(records)), writer.encode_answers)
            else:
                pipeline.submit(list[_Parsed](plain), writer.encode_answers)


# Binary rows cost nothing to parse: bigger batches only amortise the per-batch Python (the
# scorer still runs them in slices of MAX_ROWS_PER_RUN).
NPY_BATCH_ROWS = 4 * MAX_ROWS_PER_RUN


def score_npy(
    scorer: Scorer,
    source: BinaryInput,
    write: Callable[[bytes], None],
    stats: StreamStats,
    batch_rows: int = NPY_BATCH_ROWS,
    observe: Observer | None = None,
) -> None:
    """Score ``.npy`` arrays from ``source`` back to back: one JSON line per row, in order.

    Raises ``InputError`` when an array is unusable; the rows before it are answered.
    """
    reader = NpyReader(source, scorer.num_features)
    with _pipeline(scorer, write, stats, observe) as pipeline:
        for x in reader.slices(batch_rows):
            pipeline.submit([_NUMBERS] * len(x), encode_answers_jsonl, x)


# A row of an array the parser gave whole: its values are the array's, and it echoes nothing.
_NUMBERS = Row(values=np.zeros(0, dtype=np.float32), passthrough={})


def _csv_records(lines: list[str], first: int, more: Iterator[str]) -> Iterator[_CsvRecord]:
    """The CSV records of ``lines`` (numbered from ``first``), reading on from ``more`` only
    while a quoted cell that started in ``lines`` is still open."""
    reader = csv.reader(itertools.chain([line + "\n" for line in lines], more))
    while reader.line_num < len(lines):
        where = f"line {first + reader.line_num}"  # a quoted cell may span lines: the first
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield RowError(f"{where}: {e}", {})
            continue
        yield cells, where


def _decoded(source: LineSource, before_wait: Callable[[], None]) -> Iterator[str]:
    # surrogateescape keeps bad bytes visible to the row parser, which turns them into an
    # error for that row instead of failing the stream.
    while (line := source.next_line(before_wait)) is not None:
        yield line.decode("utf-8", "surrogateescape") + "\n"


def _batches(
    source: LineSource, before_wait: Callable[[], None], batch_rows: int
) -> Iterator[list[bytes]]:
    """Up to ``batch_rows`` lines at a time, taking more only while they are already there."""
    while (first := source.next_line(before_wait)) is not None:
        batch = [first]
        while len(batch) < batch_rows and (more := source.take(batch_rows - len(batch))):
            batch += more
        yield batch


class _Pipeline:
    """Scores submitted batches in a worker thread and answers them in order on the caller's.

    ``submit`` answers all but the newest batch, which scores while the caller reads on;
    ``flush`` answers it too. After an answer fails, nothing more is answered: the batches
    after it would not have been answered without the worker either.
    """

    def __init__(
        self,
        scorer: Scorer,
        executor: ThreadPoolExecutor,
        write: Callable[[bytes], None],
        stats: StreamStats,
        observe: Observer | None,
    ) -> None:
        self._scorer = scorer
        self._executor = executor
        self._write = write
        self._stats = stats
        self._observe = observe
        self._pending: deque[_Pending] = deque()

    def submit(
        self, batch: list[_Parsed], answer: _Answer, x: npt.NDArray[np.float32] | None = None
    ) -> None:
        """Score ``batch``: its good rows' values, or ``x`` when given (rows read as an array)."""
        if x is None:
            x = stack_rows(batch, self._scorer.num_features)
        future = self._executor.submit(self._scorer.predict, x)
        self._pending.append(_Pending(batch, x, future, answer))
        while len(self._pending) > 1:
            self._answer_oldest()

    def flush(self) -> None:
        while self._pending:
            self._answer_oldest()

    def _answer_oldest(self) -> None:
        pending = self._pending.popleft()
        try:
            outputs = pending.future.result()
            if self._observe is not None and len(pending.x):
                self._observe(pending.x, outputs)
            data = pending.answer(pending.batch, outputs)
            self._stats.rows += len(pending.batch)
            self._stats.errors += sum(isinstance(row, RowError) for row in pending.batch)
            self._write(data)
        except BaseException:
            self._pending.clear()
            raise


@dataclass(frozen=True, slots=True)
class _Pending:
    batch: list[_Parsed]
    x: npt.NDArray[np.float32]
    future: Future[dict[str, npt.NDArray[Any]]]
    answer: _Answer


@contextmanager
def _pipeline(
    scorer: Scorer,
    write: Callable[[bytes], None],
    stats: StreamStats,
    observe: Observer | None,
) -> Iterator[_Pipeline]:
    """A pipeline whose batches are all answered when the block ends, even when reading the
    input fails (the answers due came before the failure); its thread is gone on every exit."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
    try:
        pipeline = _Pipeline(scorer, executor, write, stats, observe)
        try:
            yield pipeline
        except Exception:
            pipeline.flush()
            raise
        pipeline.flush()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
