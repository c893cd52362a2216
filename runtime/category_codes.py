"""The category codes a categorical feature's splits name, as the manifest writes them.

In ``manifest.json`` they are one string of ascending codes and runs of consecutive codes,
``"0-999"`` or ``"0-3,7,9-12"``: a model on 1,000 shop ids names each of them, and a JSON
array took ~12 KB of the manifest (one number a line in the canonical layout) where the
string takes 7 bytes; scattered codes cost no more than the array did. Exactly one string
stands for a set of codes (runs merged, a single code alone, nothing padded), so the JSON stays
canonical. In memory they stay runs too: the list a string of a few bytes stands for can be
millions long (codes go up to XGBoost's bound, 2**24).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from edgebundle.runtime._json import quote
from edgebundle.runtime.errors import ManifestError

# XGBoost treats a category at or above 2**24 as invalid (float32 holds every integer below).
CODE_BOUND = 1 << 24
_ITEM = re.compile(r"(0|[1-9][0-9]{0,7})(?:-(0|[1-9][0-9]{0,7}))?")


@dataclass(frozen=True, slots=True)
class CategoryCodes(Sequence[int]):
    """Ascending category codes, held as runs ``(first, last)`` (inclusive, ascending, with a
    gap between runs)."""

    runs: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, codes: Iterable[int]) -> CategoryCodes:
        runs: list[tuple[int, int]] = []
        for code in sorted(set(codes)):
            if not 0 <= code < CODE_BOUND:
                raise ValueError(f"category code {code} is outside [0, 2**24)")
            if runs and runs[-1][1] + 1 == code:
                runs[-1] = (runs[-1][0], code)
            else:
                runs.append((code, code))
        return cls(tuple(runs))

    @classmethod
    def parse(cls, text: str, path: str) -> CategoryCodes:
        """Read the manifest's string; a string that is not the one form of its codes is
        refused, naming what is wrong with it."""
        runs: list[tuple[int, int]] = []
        for item in text.split(",") if text else []:
            match = _ITEM.fullmatch(item)
            if match is None:
                raise ManifestError(
                    f"{quote(item)} is neither a code nor a run of codes like '3-7' in "
                    f"{quote(text)}",
                    context=path,
                )
            first = int(match[1])
            last = first if match[2] is None else int(match[2])
            if last >= CODE_BOUND:
                raise ManifestError(f"code {last} is not below 2**24 ({CODE_BOUND})", path)
            if last <= first and match[2] is not None:
                raise ManifestError(f"run {quote(item)} must go from a code to a higher one", path)
            if runs and first <= runs[-1][1] + 1:
                raise ManifestError(
                    f"{quote(item)} after {runs[-1][1]}: codes must ascend, consecutive ones "
                    "joined in a run",
                    context=path,
                )
            runs.append((first, last))
        return cls(tuple(runs))

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.runs)

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.runs)

    def __iter__(self) -> Iterator[int]:
        for first, last in self.runs:
            yield from range(first, last + 1)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        at = bisect.bisect_right(self.runs, (value, CODE_BOUND)) - 1
        return at >= 0 and self.runs[at][0] <= value <= self.runs[at][1]

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return tuple(self)[index]
        position = index + len(self) if index < 0 else index
        for first, last in self.runs:
            if 0 <= position <= last - first:
                return first + position
            position -= last - first + 1
        raise IndexError("category code index out of range")
