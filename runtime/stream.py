"""Streaming JSONL/CSV scoring: answer each line as it arrives, batch when more is waiting.

A caller that writes one line and waits gets its answer at once; a caller that pipes a file
gets up to ``batch_rows`` rows per onnxruntime call. Whether more input is waiting is asked
of the file descriptor (``select``), which works for pipes, terminals and regular files.
"""

from __future__ import annotations

import csv
import os
import select
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from runtime.errors import InputError
from runtime.rows import (
    ERROR_KEY,
    CsvRowParser,
    CsvWriter,
    JsonRowParser,
    Observer,
    Row,
    RowError,
    encode_jsonl,
    output_columns,
    score_rows,
)
from runtime.scoring import Scorer

BATCH_ROWS = 256
_CHUNK_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"


class LineSource:
    """Lines (without their ``\\n``) read from a file descriptor as they become available."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._partial = bytearray()
        self._lines: deque[bytes] = deque()
        self._eof = False
        self.lineno = 0  # of the line last returned

    def ready(self) -> bool:
        """Whether ``next_line`` can answer without waiting for the writer."""
        while not self._lines and not self._eof and _readable(self._fd):
            self._fill()
        return bool(self._lines) or self._eof

    def next_line(self) -> bytes | None:
        """The next line, waiting for it if needed; ``None`` at the end of input."""
        while not self._lines and not self._eof:
            self._fill()
        if not self._lines:
            return None
        line = self._lines.popleft()
        self.lineno += 1
        # Spreadsheet tools start UTF-8 files with a byte order mark; it is not data.
        return line.removeprefix(_BOM) if self.lineno == 1 else line

    def _fill(self) -> None:
        try:
            data = os.read(self._fd, _CHUNK_BYTES)
        except OSError as e:
            raise InputError(f"cannot read input: {e.strerror}") from None
        if not data:
            self._eof = True
            if self._partial:
                self._lines.append(bytes(self._partial))
                self._partial.clear()
            return
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
            return
        self._partial += data[:end]
        self._lines.extend(bytes(self._partial).split(b"\n"))
        self._partial = bytearray(data[end + 1 :])


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@dataclass
class StreamStats:
    """Counts kept up to date while streaming, so they are known even if output breaks off."""

    rows: int = 0
    errors: int = 0


_Parsed = Row | RowError
_T = TypeVar("_T")
_Encoder = Callable[[list[dict[str, object]]], bytes]


def score_jsonl(
    scorer: Scorer,
    source: LineSource,
    write: Callable[[bytes], None],
    stats: StreamStats,
    batch_rows: int = BATCH_ROWS,
    observe: Observer | None = None,
) -> None:
    """Score JSONL from ``source``: one output line per input line, in order."""
    parser = JsonRowParser(scorer.features)
    for lines in _batches(source.next_line, source.ready, batch_rows):
        # Lines are parsed a batch at a time: whole batches convert to float32 much faster.
        parsed = parser.parse_lines(lines, source.lineno - len(lines) + 1)
        _answer(scorer, parsed, encode_jsonl, write, stats, observe)


def score_csv(
    scorer: Scorer,
    source: LineSource,
    write: Callable[[bytes], None],
    stats: StreamStats,
    batch_rows: int = BATCH_ROWS,
    observe: Observer | None = None,
) -> None:
    """Score CSV from ``source``: a header line, then one output row per input row, in order.

    Raises ``InputError`` when the header is unusable; nothing is scored then.
    """
    reader = csv.reader(_decoded(source))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InputError(f"line 1: bad CSV header: {e}") from None
    if header is None:
        return
    reserved = {*output_columns(scorer.outputs), ERROR_KEY}
    try:
        parser = CsvRowParser(header, scorer.features, reserved)
    except InputError as e:
        raise InputError(f"line 1: {e}") from None
    writer = CsvWriter(parser.passthrough_columns, scorer.outputs)
    write(writer.header())

    def next_row() -> _Parsed | None:
        where = f"line {reader.line_num + 1}"  # a quoted cell may span lines: name the first
        try:
            cells = next(reader)
        except StopIteration:
            return None
        except csv.Error as e:
            return RowError(f"{where}: {e}", {})
        return parser.parse_cells(cells, where)

    batches: Iterator[list[_Parsed]] = _batches(next_row, source.ready, batch_rows)
    for batch in batches:
        _answer(scorer, batch, writer.encode, write, stats, observe)


def _decoded(source: LineSource) -> Iterator[str]:
    # surrogateescape keeps bad bytes visible to the row parser, which turns them into an
    # error for that row instead of failing the stream.
    while (line := source.next_line()) is not None:
        yield line.decode("utf-8", "surrogateescape") + "\n"


def _batches(
    next_item: Callable[[], _T | None], ready: Callable[[], bool], batch_rows: int
) -> Iterator[list[_T]]:
    """Up to ``batch_rows`` items at a time; the caller answers each batch before the next."""
    while (first := next_item()) is not None:
        batch = [first]
        # Take more items only while they are already there: never wait with an answer due.
        while len(batch) < batch_rows and ready() and (item := next_item()) is not None:
            batch.append(item)
        yield batch


def _answer(
    scorer: Scorer,
    batch: list[_Parsed],
    encode: _Encoder,
    write: Callable[[bytes], None],
    stats: StreamStats,
    observe: Observer | None,
) -> None:
    records = score_rows(scorer, batch, observe)
    stats.rows += len(batch)
    stats.errors += sum(isinstance(row, RowError) for row in batch)
    write(encode(records))
