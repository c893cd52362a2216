"""How far apart two runtimes' answers to the same rows are: the largest absolute difference
over every number in the records, infinite when anything else differs."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

Record = dict[str, Any]


def jsonl_records(text: str) -> list[Record]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def csv_records(text: str) -> list[Record]:
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def max_difference(expected: list[Record], got: list[Record]) -> float:
    if len(expected) != len(got):
        return math.inf
    return max((_difference(a, b) for a, b in zip(expected, got, strict=True)), default=0.0)


def _difference(a: Any, b: Any) -> float:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if _is_number(a) and _is_number(b):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(float(a) - float(b))
    return 0.0 if a == b else math.inf


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text
