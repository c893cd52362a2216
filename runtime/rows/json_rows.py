"""JSON rows: JSONL lines, or already-decoded JSON values, as rows of the model's features.

A row is an object keyed by feature name (a missing key or ``null`` is a missing value,
``"id"`` is echoed, any other key is refused so that a typo never turns into a silent missing
value) or an array of exactly one value per feature in manifest order.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from edgebundle.runtime._json import json_type, strict_decoder
from edgebundle.runtime.errors import InputError
from edgebundle.runtime.rows.categories import CategoryNames, category_code, code_tables
from edgebundle.runtime.rows.json_block import (
    ID_KEY,
    Block,
    Decoded,
    block_of,
    decode,
    decode_block,
    no_strings_but_keys,
    only_keys_are_strings,
)
from edgebundle.runtime.rows.parsed import Row, RowError, to_float32

_MAX_NAMED = 5  # unknown keys named in one error message


@functools.lru_cache(maxsize=16)
def json_row_parser(features: tuple[str, ...], names: CategoryNames = ()) -> JsonRowParser:
    """The parser for ``features``, built once: an HTTP request must not rebuild the feature
    index (a dict of every feature name) each time."""
    return JsonRowParser(features, names)


class JsonRowParser:
    """Reads JSONL lines, or already-parsed JSON values, as rows of the model's features."""

    def __init__(self, features: Sequence[str], names: CategoryNames = ()) -> None:
        """``names``: the category names a categorical feature also takes as strings."""
        self._features = tuple(features)
        self._codes = code_tables(names)
        self._index = {name: i for i, name in enumerate(self._features)}
        # A model may have a feature called "id"; then it is a feature, not an echo.
        self._echo_id = ID_KEY not in self._index
        self._template = dict.fromkeys(self._features)
        self._keys = frozenset(self._features) | ({ID_KEY} if self._echo_id else set())

    def parse_line(self, line: bytes, where: str) -> Row | RowError:
        value = _decode_line(line, where)
        return value if isinstance(value, RowError) else self.parse_value(value, where)

    def parse_batch(
        self, lines: Sequence[bytes], first_lineno: int
    ) -> npt.NDArray[np.float32] | list[Row | RowError]:
        """``parse_numbers(lines)`` when that is an array, else ``parse_lines(lines,
        first_lineno)``, decoding the block once for both (stdin's way through a batch)."""
        decoded = decode(lines)
        x, block = (None, None) if decoded is None else self._numbers(decoded)
        return self._lines(lines, first_lineno, block) if x is None else x

    def parse_lines(self, lines: Sequence[bytes], first_lineno: int) -> list[Row | RowError]:
        """``parse_line`` of each line, numbered from ``first_lineno``, converted in one go."""
        return self._lines(lines, first_lineno, decode_block(lines))

    def _lines(
        self, lines: Sequence[bytes], first_lineno: int, block: Block | None
    ) -> list[Row | RowError]:
        """``parse_lines``, given ``decode_block(lines)``."""
        if block is not None:
            return self._parse_decoded(
                block.values, lambda i: f"line {first_lineno + i}", plain=self._is_plain(block)
            )
        decoded = [_decode_line(line, f"line {first_lineno + i}") for i, line in enumerate(lines)]
        good = [i for i, value in enumerate(decoded) if not isinstance(value, RowError)]
        parsed = self._parse_decoded(
            [decoded[i] for i in good],
            lambda k: f"line {first_lineno + good[k]}",
            plain=_numbers_only(lines),
        )
        by_line = dict(zip(good, parsed, strict=True))
        return [
            value if isinstance(value, RowError) else by_line[i] for i, value in enumerate(decoded)
        ]

    def parse_numbers(self, lines: Sequence[bytes]) -> npt.NDArray[np.float32] | None:
        """The rows of ``lines`` as one float32 ``[N, F]`` array, when every line is an array of
        one number or null per feature, or an object of features (no echoed id) whose values
        are numbers or null, all within float64's range: what ``parse_lines`` then gives row
        by row, without a ``Row`` each. ``None`` otherwise: then ``parse_lines`` says which
        line is what."""
        decoded = decode(lines)
        return None if decoded is None else self._numbers(decoded)[0]

    def _numbers(
        self, decoded: Decoded
    ) -> tuple[npt.NDArray[np.float32], None] | tuple[None, Block | None]:
        """``parse_numbers``, given the lines' ``decode``; when that is ``None``, their
        ``Block`` (``block_of``) too, which ``_lines`` takes.

        Every step runs in C, without a Python call per row: a row costs less to score than
        one such call per value would. No step needs a ``Block``'s counts: arrays of
        numbers are spelled without ``"``, ``{``, ``t`` or ``f`` (NaN and Infinity fail the
        decoding), and a container nested in a line's value (all a value spanning lines or
        sharing one needs, see ``decode_block``) fails the conversion.
        """
        values, text = decoded
        if not any(mark in text for mark in _NOT_NUMBERS):
            x = self._arrays_of_numbers(values)
        else:
            x = self._objects_of_numbers(values, text)
        return (None, block_of(decoded)) if x is None else (x, None)

    def _arrays_of_numbers(self, values: list[Any]) -> npt.NDArray[np.float32] | None:
        """``values`` (spelled without a string, object or boolean) as one array, when each
        is an array of one number or null per feature."""
        width = len(self._features)
        if set(map(type, values)) != {list} or set(map(len, values)) != {width}:
            return None
        return self._to_float32(values, len(values))

    def _objects_of_numbers(self, values: list[Any], text: bytes) -> npt.NDArray[np.float32] | None:
        """``values`` as one array, when each is an object of features only (an id needs a
        Row to carry it) whose values are numbers or null.

        Each object over a template of every feature (None: missing, as in _parse_decoded)
        gives its values in feature order; a key that is no feature makes it longer.
        """
        if set(map(type, values)) != {dict}:
            return None
        if self._echo_id and any(map(operator.contains, values, itertools.repeat(ID_KEY))):
            return None
        if not only_keys_are_strings(text, sum(map(len, values))):
            return None
        merged = list(map(operator.or_, itertools.repeat(self._template), values))
        if set(map(len, merged)) != {len(self._features)}:
            return None
        return self._to_float32(map(dict.values, merged), len(merged))

    def _to_float32(self, rows: Iterable[Iterable[Any]], n: int) -> npt.NDArray[np.float32] | None:
        """``n`` rows of one int, float or None per feature as float32 (None: NaN), as
        ``_json_number`` reads each; ``None`` for any other value, or one beyond float64."""
        width = len(self._features)
        try:
            wide = np.fromiter(itertools.chain.from_iterable(rows), np.float64, n * width)
        except (OverflowError, TypeError, ValueError):  # beyond float64; a container
            return None
        if np.isinf(wide).any():
            return None
        with np.errstate(over="ignore"):  # beyond float32 range is ±inf, as in to_float32
            return wide.astype(np.float32).reshape(n, width)

    def parse_values(
        self, values: Sequence[object], where: Callable[[int], str]
    ) -> list[Row | RowError]:
        """``parse_value`` of each decoded value (``where(i)`` names the i-th in errors)."""
        return self._parse_decoded(values, where, plain=False)

    def _parse_decoded(
        self, values: Sequence[object], where: Callable[[int], str], plain: bool
    ) -> list[Row | RowError]:
        """``parse_values``; ``plain`` says that ``values`` hold no string or boolean but an
        echoed id, and no object holds an array or object: any element of an array is a number,
        null or array, and any value of an object but its id a number or null.

        Per value, ``_json_number`` costs more than decoding the JSON or scoring the row. An
        array of exactly one plain number or null per feature cannot fail it except by
        overflowing float64, so such arrays are converted together by numpy, which turns int,
        float and None into float64 just as ``_json_number`` does. An object whose keys are
        all features (or the echoed id) becomes such an array by one ``dict.get`` per feature,
        run by ``map`` in C (None where a key is left out: missing). Any other value takes
        ``parse_value``. Checking each element's type costs as much as numpy's conversion;
        when ``plain`` it is left out, and an array nesting another shows up as a conversion of
        the wrong shape, after which every value is checked.
        """
        is_plain = self._has_one_per_feature if plain else self._is_plain_array
        plain_at: list[int] = []
        arrays: list[list[Any]] = []
        echoed: list[dict[str, object]] = []
        for i, value in enumerate(values):
            if type(value) is list:
                if is_plain(value):
                    plain_at.append(i)
                    arrays.append(value)
                    echoed.append({})
            elif type(value) is dict and value.keys() <= self._keys:
                array = list(map(value.get, self._features))
                passthrough = self._plain_id(value)
                if passthrough is not None and (plain or set(map(type, array)) <= _PLAIN_TYPES):
                    plain_at.append(i)
                    arrays.append(array)
                    echoed.append(passthrough)
        converted = self._from_plain_arrays(arrays, echoed)
        if converted is None:
            return self._parse_decoded(values, where, plain=False)
        parsed: list[Row | None] = [None] * len(values)
        for i, row in zip(plain_at, converted, strict=True):
            parsed[i] = row
        return [
            self.parse_value(value, where(i)) if row is None else row
            for i, (value, row) in enumerate(zip(values, parsed, strict=True))
        ]

    def _is_plain(self, block: Block) -> bool:
        """Whether ``block``'s flat arrays and objects hold no string or boolean but echoed
        ids: when its text has no ``true`` or ``false`` and no ``"`` but the two around each
        key and each string id (a string value or an escaped quote would add more)."""
        ids = 0
        if self._echo_id and block.objects:
            objects = (value for value in block.values if type(value) is dict)
            ids = sum(type(obj.get(ID_KEY)) is str for obj in objects)
        return no_strings_but_keys(block, ids)

    def _has_one_per_feature(self, value: object) -> TypeGuard[list[Any]]:
        return type(value) is list and len(value) == len(self._features)

    def _is_plain_array(self, value: object) -> TypeGuard[list[Any]]:
        # Exact types: bool is an int subclass, and JSON true is not a number.
        return self._has_one_per_feature(value) and set(map(type, value)) <= _PLAIN_TYPES

    def _plain_id(self, obj: dict[str, Any]) -> dict[str, object] | None:
        """The object's echoed id, or ``None`` when ``parse_value`` must say what is wrong."""
        try:
            return self._read_id(obj)
        except InputError:
            return None

    def _from_plain_arrays(
        self, arrays: list[list[Any]], echoed: list[dict[str, object]]
    ) -> list[Row | None] | None:
        """The rows of ``arrays`` (``None`` for one beyond float64, which ``parse_value`` names),
        or ``None`` if one of them nests arrays."""
        if not arrays:
            return []
        shape = (len(arrays), len(self._features))
        try:
            wide = np.array(arrays, dtype=np.float64)
        except OverflowError:  # an integer literal beyond float64: let each row say which
            wide = np.full(shape, np.inf)
        except ValueError:  # arrays nested unevenly
            return None
        if wide.shape != shape:  # arrays nested evenly
            return None
        out_of_range: list[bool] = np.any(np.isinf(wide), axis=1).tolist()
        with np.errstate(over="ignore"):  # beyond float32 range is ±inf, as in to_float32
            narrow = wide.astype(np.float32)
        return [
            None if bad else Row(values=values, passthrough=passthrough)
            for bad, values, passthrough in zip(out_of_range, narrow, echoed, strict=True)
        ]

    def parse_value(self, value: object, where: str) -> Row | RowError:
        passthrough: dict[str, object] = {}
        try:
            if isinstance(value, dict):
                passthrough = self._read_id(value)
                values = self._from_object(value)
            elif isinstance(value, list):
                values = self._from_array(value)
            else:
                raise InputError(f"expected a JSON object or array, got {json_type(value)}")
        except InputError as e:
            return RowError(f"{where}: {e}", passthrough)
        return Row(values=values, passthrough=passthrough)

    def _read_id(self, obj: dict[str, Any]) -> dict[str, object]:
        if not self._echo_id or ID_KEY not in obj:
            return {}
        value = obj[ID_KEY]
        if isinstance(value, (dict, list)):
            raise InputError(f"{ID_KEY!r} must be a JSON scalar, got {json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # 1e400: no JSON to echo
            raise InputError(f"{ID_KEY!r} is a number out of range")
        return {ID_KEY: value}

    def _from_object(self, obj: dict[str, Any]) -> npt.NDArray[np.float32]:
        unknown = [k for k in obj if k not in self._index and not (k == ID_KEY and self._echo_id)]
        if unknown:
            names = ", ".join(repr(k) for k in unknown[:_MAX_NAMED])
            more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
            hint = self._case_hint(unknown)
            raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {names}{more}{hint}")
        values = [math.nan] * len(self._features)
        for name, value in obj.items():
            if name in self._index:
                values[self._index[name]] = self._number(value, name)
        return to_float32(values)

    def _case_hint(self, unknown: list[str]) -> str:
        """Which feature the first unknown key differing from one only in case would be."""
        by_fold = {name.casefold(): name for name in self._features}
        for key in unknown:
            if (feature := by_fold.get(key.casefold())) is not None:
                return f" ({key!r} differs from feature {feature!r} only in case)"
        return ""

    def _from_array(self, array: list[Any]) -> npt.NDArray[np.float32]:
        if len(array) != len(self._features):
            raise InputError(f"expected {len(self._features)} values, got {len(array)}")
        return to_float32(
            [self._number(v, name) for v, name in zip(array, self._features, strict=True)]
        )

    def _number(self, value: object, feature: str) -> float:
        if isinstance(value, str) and self._codes:
            return category_code(self._codes, feature, value)
        return _json_number(value, feature)


def _decode_line(line: bytes, where: str) -> object:
    """The line's JSON value, or the ``RowError`` for a blank or undecodable line."""
    if not line.strip():
        return RowError(f"{where}: blank line", {})
    try:
        return _loads_row(line)
    except InputError as e:
        return RowError(f"{where}: {e}", {})


def _numbers_only(lines: Sequence[bytes]) -> bool:
    """Whether no line holds a JSON string, object or boolean: no ``"``, ``{``, ``t`` or ``f``."""
    text = b"".join(lines)
    return not any(mark in text for mark in _NOT_NUMBERS)


def _loads_row(line: bytes) -> object:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 (byte {e.start})") from None
    try:
        return _decode_json(text)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:  # ints beyond the interpreter's digit limit
        raise InputError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply") from None


_PLAIN_TYPES = frozenset({float, int, type(None)})
_NOT_NUMBERS = (b'"', b"{", b"t", b"f")
_JSON_SPACE = " \t\n\r"

_DECODER = strict_decoder(
    lambda key: InputError(f"duplicate key {key!r}"),
    lambda token: InputError(f"{token} is not a JSON number; leave the value out or use null"),
)


def _no_constant(token: str) -> float:
    raise ValueError(token)  # _DECODER's error is the one given: see _decode_json


# Dicts built in C (the last of a repeated key kept); NaN and Infinity refused as by _DECODER.
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _decode_json(text: str) -> object:
    """``_DECODER.decode(text)``: the same value, or the same error.

    ``_DECODER``'s duplicate-key hook is Python, called with every object's pairs: most of
    the cost of decoding an object row. So the text is decoded without it first, and its
    result kept when no key can have been repeated: every ``:`` of JSON text follows a key or
    is inside a string, so when the text holds no object, or as many ``:`` as its one object
    has keys, no object in it has a repeated key. Anything else, an error included, is
    decoded again by ``_DECODER``, which says what it says.
    """
    try:
        value = _raw_decode(_PLAIN_DECODER, text)
    except Exception:  # whatever it is, _DECODER raises its own
        return _raw_decode(_DECODER, text)
    if "{" in text and not (type(value) is dict and text.count(":") == len(value)):
        return _raw_decode(_DECODER, text)
    return value


def _raw_decode(decoder: json.JSONDecoder, text: str) -> object:
    """``decoder.decode(text)``.

    ``decode`` is ``raw_decode`` with two regular-expression matches for the JSON whitespace
    around the value, ~3% of the cost of decoding a row; a line rarely has any.
    """
    if text[:1] in _JSON_SPACE:  # also "": decode says why it is no JSON
        return decoder.decode(text)
    value, end = decoder.raw_decode(text)
    if text[end:].strip(_JSON_SPACE):
        return decoder.decode(text)  # says "Extra data" where it starts
    return value


def _json_number(value: object, feature: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"feature {feature!r}: expected a number, got {json_type(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond float64; 1e400 already parsed as inf
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"feature {feature!r}: number out of range")
    return number
