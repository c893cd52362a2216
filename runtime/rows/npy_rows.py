"""Binary rows: ``.npy`` arrays ``[N, F]`` of real numbers, as ``numpy.save`` writes them.

For bulk scoring where the rows already are numbers: nothing is parsed but a header, and the
values become float32 as ``Model.predict`` converts an array (NaN = missing, beyond float32's
range ±inf). Several arrays may follow each other (``numpy.save`` called again on the same
file); each is read a slice of rows at a time, so an array larger than memory streams through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npy_format

from edgebundle.runtime.errors import InputError

_MAX_HEADER = 10_000  # bytes; numpy's own default limit on what it parses


class BinaryInput(Protocol):
    """A buffered binary stream (``io.BufferedReader``): ``read`` gives all it is asked for
    unless the input ends first."""

    def read(self, size: int = ..., /) -> bytes: ...

    def peek(self, size: int = ..., /) -> bytes: ...


class NpyReader:
    """Reads ``.npy`` arrays back to back from a binary stream, as float32 slices of rows."""

    def __init__(self, stream: BinaryInput, num_features: int) -> None:
        self._stream = stream
        self._num_features = num_features
        self.arrays = 0  # arrays begun

    def slices(self, rows_per_slice: int) -> Iterator[npt.NDArray[np.float32]]:
        """The rows of every array in turn, up to ``rows_per_slice`` at a time; raises
        ``InputError`` naming the array when one is not a usable ``.npy`` array."""
        while (header := self._header()) is not None:
            rows, dtype = header
            row_bytes = self._num_features * dtype.itemsize
            for start in range(0, rows, rows_per_slice):
                count = min(rows_per_slice, rows - start)
                data = self._stream.read(count * row_bytes)
                if len(data) != count * row_bytes:
                    raise InputError(
                        f"array {self.arrays}: ends after {start + len(data) // row_bytes} of "
                        f"its {rows} rows"
                    )
                values = np.frombuffer(data, dtype=dtype).reshape(count, self._num_features)
                with np.errstate(over="ignore"):  # beyond float32 is ±inf, as XGBoost reads it
                    yield values.astype(np.float32)

    def _header(self) -> tuple[int, np.dtype[Any]] | None:
        """The next array's row count and element type; ``None`` at the end of the input."""
        if not self._stream.peek(1)[:1]:
            return None
        self.arrays += 1
        what = f"array {self.arrays}"
        try:
            version = npy_format.read_magic(self._stream)
            read = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read(self._stream, max_header_size=_MAX_HEADER)
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            raise InputError(f"{what}: not a .npy array ({e})") from None
        if dtype.kind not in "iuf":
            raise InputError(f"{what}: holds {dtype}; rows must be real numbers")
        if len(shape) != 2 or shape[1] != self._num_features:
            raise InputError(
                f"{what}: has shape {list(shape)}; rows must have shape [N, {self._num_features}]"
            )
        if fortran_order and shape[0] > 1 and shape[1] > 1:
            raise InputError(f"{what}: is column-major; save it row-major (np.ascontiguousarray)")
        return int(shape[0]), dtype
