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
from typing import Any

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import (
    dumps_canonical,
    get_float,
    get_list,
    get_obj,
    get_str,
    join,
    json_type,
    loads_strict,
    reject_unknown,
)
from edgebundle.runtime.errors import InputError, ManifestError
from edgebundle.runtime.scoring import Scorer, to_python

FORMAT = "edgebundle.selftest/1"

Number = int | float
Value = Number | tuple[Number, ...]  # one row of an [N] output, or of an [N, C] output


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerance:
    abs: float
    rel: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Tolerance:
        reject_unknown(d, ("abs", "rel"), context)
        return cls(abs=_non_negative(d, "abs", context), rel=_non_negative(d, "rel", context))

    def to_dict(self) -> dict[str, Any]:
        return {"abs": self.abs, "rel": self.rel}


@dataclass(frozen=True, kw_only=True, slots=True)
class Selftest:
    format: str
    rows: tuple[tuple[Number | None, ...], ...]  # None = missing
    expected: Mapping[str, tuple[Value, ...]]  # output name -> one value per row
    tolerance: Tolerance

    def __post_init__(self) -> None:
        object.__setattr__(self, "expected", MappingProxyType(dict(self.expected)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Selftest:
        fmt = get_str(d, "format", context)
        if fmt != FORMAT:
            raise ManifestError(
                f"unsupported selftest format {fmt!r} (this runtime reads {FORMAT!r})",
                context=join(context, "format"),
            )
        reject_unknown(d, ("format", "rows", "expected", "tolerance"), context)
        rows = _rows(d, "rows", context)
        return cls(
            format=fmt,
            rows=rows,
            expected=_expected(d, "expected", context, len(rows)),
            tolerance=Tolerance.from_dict(
                get_obj(d, "tolerance", context), join(context, "tolerance")
            ),
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "rows": [list(row) for row in self.rows],
            "expected": {
                name: [list(v) if isinstance(v, tuple) else v for v in values]
                for name, values in self.expected.items()
            },
            "tolerance": self.tolerance.to_dict(),
        }

    def to_bytes(self) -> bytes:
        """Canonical ``selftest.json``; refuses to write an invalid selftest."""
        data = self.to_dict()
        Selftest.from_dict(data)
        return dumps_canonical(data, compact=True)


def parse_selftest(data: bytes) -> Selftest:
    return Selftest.from_dict(loads_strict(data, "selftest.json"), "selftest")


def _non_negative(d: Mapping[str, Any], key: str, context: str) -> float:
    value = get_float(d, key, context)
    if value < 0:
        raise ManifestError(f"must be >= 0, got {value!r}", context=join(context, key))
    return value


def _number(value: object, context: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"expected a number, got {json_type(value)}", context=context)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond float64
        finite = False
    if not finite:
        raise ManifestError("number out of range", context=context)
    return value


def _rows(d: Mapping[str, Any], key: str, context: str) -> tuple[tuple[Number | None, ...], ...]:
    items = get_list(d, key, context)
    rows_context = join(context, key)
    if not items:
        raise ManifestError("must hold at least one row", context=rows_context)
    rows = []
    for i, item in enumerate(items):
        row_context = f"{rows_context}[{i}]"
        if not isinstance(item, list):
            raise ManifestError(f"expected an array, got {json_type(item)}", context=row_context)
        if not item:
            raise ManifestError("must not be empty", context=row_context)
        if len(item) != len(items[0]):
            raise ManifestError(
                f"expected {len(items[0])} values like row 0, got {len(item)}", row_context
            )
        rows.append(
            tuple(
                None if v is None else _number(v, f"{row_context}[{j}]") for j, v in enumerate(item)
            )
        )
    return tuple(rows)


def _expected(
    d: Mapping[str, Any], key: str, context: str, num_rows: int
) -> dict[str, tuple[Value, ...]]:
    outputs = get_obj(d, key, context)
    expected_context = join(context, key)
    if not outputs:
        raise ManifestError("must name at least one output", context=expected_context)
    return {name: _output_values(outputs, name, expected_context, num_rows) for name in outputs}


def _output_values(
    d: Mapping[str, Any], key: str, context: str, num_rows: int
) -> tuple[Value, ...]:
    items = get_list(d, key, context)
    values_context = join(context, key)
    if len(items) != num_rows:
        raise ManifestError(
            f"expected one value per row ({num_rows}), got {len(items)}", context=values_context
        )
    if isinstance(items[0], list):
        width = len(items[0])
        values: list[Value] = []
        for i, item in enumerate(items):
            item_context = f"{values_context}[{i}]"
            if not isinstance(item, list) or len(item) != width:
                raise ManifestError(f"expected an array of {width} numbers", item_context)
            if not item:
                raise ManifestError("must not be empty", item_context)
            values.append(tuple(_number(v, f"{item_context}[{j}]") for j, v in enumerate(item)))
        return tuple(values)
    return tuple(_number(v, f"{values_context}[{i}]") for i, v in enumerate(items))


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
