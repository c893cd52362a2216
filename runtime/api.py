"""The Python face of the device runtime: ``load`` a bundle or a store's model, then ``predict``
(an array, as ``xgboost.Booster.predict`` returns it) or ``score`` (the records stdin and HTTP
answer with). The CLIs and the server score through the same ``Scorer`` and row parser.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from edgebundle.runtime.bundle import DEFAULT_LIMITS, open_bundle, read_bundle_file
from edgebundle.runtime.errors import InputError, KeyFileError, StoreError
from edgebundle.runtime.manifest import Manifest
from edgebundle.runtime.rows.answers import answer_records, stack_rows
from edgebundle.runtime.rows.categories import category_code, code_tables
from edgebundle.runtime.rows.json_rows import json_row_parser
from edgebundle.runtime.rows.parsed import Row, RowError
from edgebundle.runtime.scoring import DEFAULT_THREADS, Scorer
from edgebundle.runtime.store import STORE_FILE, Store

PathLike = str | os.PathLike[str]


@runtime_checkable
class _DataFrame(Protocol):
    """What is used of a pandas DataFrame (duck-typed: the runtime never imports pandas)."""

    @property
    def columns(self) -> Any: ...

    def to_numpy(self, dtype: Any = ..., copy: bool = ..., na_value: Any = ...) -> Any: ...


class Model:
    """One loaded model version. Thread-safe: scoring shares no state but the session."""

    def __init__(self, manifest: Manifest, scorer: Scorer) -> None:
        self.manifest = manifest
        self._scorer = scorer
        self._row = (len(scorer.features),)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return str(self.manifest.version)

    @property
    def features(self) -> tuple[str, ...]:
        """The input columns, in order."""
        return self._scorer.features

    def predict(self, rows: object) -> npt.NDArray[Any]:
        """The primary output for ``rows``, as XGBoost's ``predict`` gives it (probabilities of
        a binary classifier, class probabilities ``[N, K]``, labels, values...).

        ``rows``: a 2-D array of any real dtype (converted to float32 once, as XGBoost does;
        NaN = missing), a list of lists, a list of dicts keyed by feature name (absent or None
        = missing), or a pandas DataFrame with a column per feature. One bad row raises
        ``InputError`` naming it.
        """
        if type(rows) is np.ndarray and rows.dtype == np.float32 and rows.shape[1:] == self._row:
            return self._scorer.predict_first(rows)  # the one-row fast path: no conversion
        return self._scorer.predict_first(self._matrix(rows))

    def score(self, rows: object) -> list[dict[str, object]]:
        """One record per row, as ``bundle-runtime score`` writes them: the outputs by name
        (an ``id`` key echoed), or ``{"error": ...}`` for a row that cannot be scored."""
        if isinstance(rows, list):
            parsed = self._parse(rows)
        else:
            parsed = [Row(values=r, passthrough={}) for r in self._matrix(rows)]
        return answer_records(parsed, self._scorer.predict(stack_rows(parsed, len(self.features))))

    def __repr__(self) -> str:
        return f"Model({self.name} {self.version}, {len(self.features)} features)"

    def _matrix(self, rows: object) -> npt.NDArray[np.float32]:
        if isinstance(rows, np.ndarray):
            return self._from_array(rows)
        if isinstance(rows, _DataFrame) and not isinstance(rows, (list, tuple)):
            return self._from_frame(rows)
        if isinstance(rows, (list, tuple)):
            parsed = self._parse(rows)
            for row in parsed:
                if isinstance(row, RowError):
                    raise InputError(row.message)
            return stack_rows(parsed, len(self.features))
        raise InputError(
            f"rows must be an array, a list of rows or a DataFrame, got {type(rows).__name__}"
        )

    def _parse(self, rows: Sequence[object]) -> list[Row | RowError]:
        parser = json_row_parser(self.features, self._scorer.category_names)
        return parser.parse_values(list(rows), lambda i: f"row {i}")

    def _from_array(self, array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if array.dtype.kind not in "iuf":
            raise InputError(f"rows must be real numbers, got an array of {array.dtype}")
        if array.ndim != 2 or array.shape[1] != len(self.features):
            shape = list(array.shape)
            raise InputError(f"rows must have shape [N, {len(self.features)}], got {shape}")
        with np.errstate(over="ignore"):  # beyond float32's range is ±inf, as XGBoost reads it
            return np.ascontiguousarray(array, dtype=np.float32)

    def _from_frame(self, frame: _DataFrame) -> npt.NDArray[np.float32]:
        columns = [str(c) for c in frame.columns]
        missing = [name for name in self.features if name not in columns]
        if missing:
            shown = ", ".join(repr(name) for name in missing[:5])
            raise InputError(f"the DataFrame has no column {shown}")
        named = code_tables(self._scorer.category_names)
        try:
            if named:  # columns of category names (pandas categoricals) become codes
                values = np.stack([_frame_column(frame, f, named) for f in self.features], axis=1)
            else:
                selected = frame[list(self.features)]  # type: ignore[index]
                values = np.asarray(selected.to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError) as e:
            raise InputError(f"the DataFrame's feature columns are not all numeric: {e}") from None
        return self._from_array(values)


def _frame_column(
    frame: _DataFrame, feature: str, named: dict[str, dict[str, int]]
) -> npt.NDArray[np.float64]:
    """One feature column as float64: numbers as they are, category names by their code."""
    column = frame[feature]  # type: ignore[index]
    if feature not in named:
        return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
    values = column.to_numpy(dtype=object)
    return np.asarray(
        [
            category_code(named, feature, v) if isinstance(v, str)
            else np.nan if v is None else float(v)
            for v in values
        ],
        dtype=np.float64,
    )


def load(
    source: PathLike,
    *,
    trust: PathLike | Sequence[PathLike] | None = None,
    model: str | None = None,
    threads: int = DEFAULT_THREADS,
) -> Model:
    """A model to score with, from a ``.bundle`` file or a store directory.

    A bundle is verified before anything in it is parsed: ``trust`` names the public key(s)
    (PEM) or a channel's key statement (``keys/N.json``) it must be signed by. A store trusts
    its own keys and gives its active version of ``model`` (which may be left out when the
    store holds one model).
    """
    path = Path(source)
    if (path / STORE_FILE).exists():
        if trust is not None:
            raise StoreError("a store trusts its own keys: give no trust with a store")
        store = Store.open(path)
        loaded = store.load_active(model or store.default_model(), threads)
        return Model(loaded.manifest, loaded.scorer)
    if trust is None:
        raise KeyFileError(f"{path} is a bundle: give trust=, the public key it must be signed by")
    from edgebundle.runtime.ota.keychain import (
        load_trust,  # cryptography only where a signature is checked
    )

    paths = [Path(trust)] if isinstance(trust, (str, os.PathLike)) else [Path(t) for t in trust]
    bundle = open_bundle(read_bundle_file(path, DEFAULT_LIMITS), load_trust(paths).trusted())
    if model is not None and model != bundle.manifest.name:
        raise InputError(f"{path} holds model {bundle.manifest.name!r}, not {model!r}")
    return Model(bundle.manifest, Scorer.from_bundle(bundle, threads))
