"""``selftest.json``: golden rows and the outputs the model gave for them at build time.

The builder records them; the device scores the rows with the real ``Scorer`` at install and
refuses a bundle whose answers moved (a broken onnxruntime, a kernel that differs on this CPU).
Floats must satisfy ``|got - expected| <= abs + rel * |expected|``; integer outputs (labels)
must match exactly.

Values are written as the shortest decimal that reads back as the same float32, so the rows
the device scores are bit-for-bit the rows the builder scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import (
    dumps_canonical,
    join,
    json_type,
    loads_strict,
    read_array,
    read_object,
)
from edgebundle.runtime.document import (
    NON_NEGATIVE,
    Document,
    Rule,
    constant,
    nested,
)
from edgebundle.runtime.errors import InputError, ManifestError
from edgebundle.runtime.scoring import Scorer, to_python

FORMAT = "edgebundle.selftest/1"

Number = int | float
Value = Number | tuple[Number, ...]  # one row of an [N] output, or of an [N, C] output


Row = tuple[Number | None, ...]  # None = missing


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerance(Document):
    abs: Annotated[float, NON_NEGATIVE]
    rel: Annotated[float, NON_NEGATIVE]


def _number(value: object, context: str) -> Number:
    """A finite JSON number, kept as the int or float it was written as (labels are ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"expected a number, got {json_type(value)}", context=context)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond float64
        finite = False
    if not finite:
        raise ManifestError("number out of range", context=context)
    return value


def _read_rows(value: object, path: str) -> tuple[Row, ...]:
    items = read_array(value, path)
    if not items:
        raise ManifestError("must hold at least one row", context=path)
    return tuple(_row(item, f"{path}[{i}]", items[0]) for i, item in enumerate(items))


def _row(item: object, path: str, first: list[Any]) -> Row:
    row = read_array(item, path)
    if not row:
        raise ManifestError("must not be empty", context=path)
    if len(row) != len(first):
        raise ManifestError(f"expected {len(first)} values like row 0, got {len(row)}", path)
    return tuple(None if v is None else _number(v, f"{path}[{j}]") for j, v in enumerate(row))


def _read_expected(value: object, path: str) -> Mapping[str, tuple[Value, ...]]:
    outputs = read_object(value, path)
    if not outputs:
        raise ManifestError("must name at least one output", context=path)
    # In the document's order, which is the order run_selftest reports failures in.
    return MappingProxyType(
        {name: _output_values(items, join(path, name)) for name, items in outputs.items()}
    )


def _output_values(value: object, path: str) -> tuple[Value, ...]:
    items = read_array(value, path)
    if not items or not isinstance(items[0], list):
        return tuple(_number(v, f"{path}[{i}]") for i, v in enumerate(items))
    width = len(items[0])
    values: list[Value] = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if not isinstance(item, list) or len(item) != width:
            raise ManifestError(f"expected an array of {width} numbers", item_path)
        if not item:
            raise ManifestError("must not be empty", item_path)
        values.append(tuple(_number(v, f"{item_path}[{j}]") for j, v in enumerate(item)))
    return tuple(values)


def _write_expected(expected: Mapping[str, tuple[Value, ...]]) -> dict[str, list[Any]]:
    return {
        name: [list(v) if isinstance(v, tuple) else v for v in values]
        for name, values in expected.items()
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class Selftest(Document):
    format: Annotated[str, constant(FORMAT, "selftest")]
    rows: Annotated[tuple[Row, ...], Rule(_read_rows, lambda rows: [list(row) for row in rows])]
    # output name -> one value per row
    expected: Annotated[Mapping[str, tuple[Value, ...]], Rule(_read_expected, _write_expected)]
    tolerance: Annotated[Tolerance, nested(Tolerance)]

    def __post_init__(self) -> None:
        object.__setattr__(self, "expected", MappingProxyType(dict(self.expected)))

    def check(self) -> None:
        for name, values in self.expected.items():
            if len(values) != len(self.rows):
                raise ManifestError(
                    f"expected one value per row ({len(self.rows)}), got {len(values)}",
                    context=join("expected", name),
                )

    @classmethod
    def from_arrays(
        cls,
        rows: npt.NDArray[np.float32],
        outputs: Mapping[str, npt.NDArray[Any]],
        tolerance: Tolerance,
    ) -> Selftest:
        """The selftest for float32 ``rows`` ``[N, F]`` (NaN = missing) and the model's outputs."""
        if np.isinf(rows).any():
            raise InputError("selftest rows must not hold inf: JSON cannot carry it")
        return cls.from_dict(
            {
                "format": FORMAT,
                "rows": to_python(rows),
                "expected": {name: to_python(value) for name, value in outputs.items()},
                "tolerance": tolerance.to_dict(),
            }
        )

    def to_bytes(self) -> bytes:
        """Canonical ``selftest.json``; refuses to write an invalid selftest."""
        data = self.to_dict()
        Selftest.from_dict(data)
        return dumps_canonical(data, compact=True)


def parse_selftest(data: bytes) -> Selftest:
    return Selftest.from_dict(loads_strict(data, "selftest.json"), "selftest")


@dataclass(frozen=True, kw_only=True, slots=True)
class SelftestResult:
    passed: bool
    rows: int
    max_abs_error: float  # over float outputs; inf when one came back NaN
    detail: str  # one line: what failed first, or a summary of the pass


def run_selftest(scorer: Scorer, selftest: Selftest) -> SelftestResult:
    """Score the golden rows with ``scorer`` and compare with what the builder recorded."""
    rows = len(selftest.rows)
    problem = _structure_problem(scorer, selftest)
    if problem:
        return SelftestResult(passed=False, rows=rows, max_abs_error=math.inf, detail=problem)
    x = np.array(
        [[math.nan if v is None else v for v in row] for row in selftest.rows], dtype=np.float64
    )
    with np.errstate(over="ignore"):  # as XGBoost does: beyond float32 range is ±inf
        outputs = scorer.predict(x.astype(np.float32))
    max_abs_error = 0.0
    failures: list[str] = []
    for name, want in selftest.expected.items():
        largest, messages = _compare(name, outputs[name], np.array(want), selftest.tolerance)
        max_abs_error = max(max_abs_error, largest)
        failures.extend(messages)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return SelftestResult(
            passed=False, rows=rows, max_abs_error=max_abs_error, detail=failures[0] + more
        )
    return SelftestResult(
        passed=True,
        rows=rows,
        max_abs_error=max_abs_error,
        detail=f"{rows} rows match (max abs error {max_abs_error:.3g})",
    )


def _structure_problem(scorer: Scorer, selftest: Selftest) -> str:
    width = len(selftest.rows[0])
    if width != scorer.num_features:
        return f"selftest rows have {width} values, the model takes {scorer.num_features}"
    names = sorted(spec.name for spec in scorer.outputs)
    if sorted(selftest.expected) != names:
        return f"selftest expects outputs {sorted(selftest.expected)}, the model has {names}"
    for spec in scorer.outputs:
        want_shape = np.shape(selftest.expected[spec.name])[1:]
        if want_shape != spec.shape[1:]:
            return (
                f"selftest values for {spec.name!r} have shape {_shape_text(want_shape)}, "
                f"the model's have {_shape_text(spec.shape[1:])}"
            )
    return ""


def _shape_text(tail: tuple[int, ...]) -> str:
    return "[" + ", ".join(["N", *map(str, tail)]) + "]"


def _compare(
    name: str, got: npt.NDArray[Any], want: npt.NDArray[Any], tolerance: Tolerance
) -> tuple[float, list[str]]:
    """The largest float error and one message per value out of tolerance."""
    if got.dtype == np.float32:
        # Expected values are float32 written as their shortest decimal: read them back as
        # float32, or 0.1f would be compared with the double 0.1 and differ by 1.5e-9.
        with np.errstate(over="ignore"):
            want = want.astype(np.float32)
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        error = np.where(np.isnan(error), math.inf, error)
        bad = ~(error <= tolerance.abs + tolerance.rel * np.abs(want.astype(np.float64)))
        largest = float(error.max()) if error.size else 0.0
        allowed = f" (tolerance abs {tolerance.abs:g}, rel {tolerance.rel:g})"
    else:
        bad = got != want
        largest = 0.0
        allowed = " (must match exactly)"
    messages = [
        f"output {name!r} row {index[0]}{''.join(f'[{i}]' for i in index[1:])}: "
        f"got {got[index]!s}, expected {want[index]!s}{allowed}"
        for index in map(tuple, np.argwhere(bad))
    ]
    return largest, messages
