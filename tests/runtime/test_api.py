"""The public Python API: ``load`` → ``Model.predict`` / ``Model.score``, against XGBoost's own
predictions, with every input form a data scientist hands it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgebundle.runtime.api import Model, load
from edgebundle.runtime.errors import InputError, KeyFileError, SignatureError, StoreError
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.xgbmodels import NAMES, Trained, run, train

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module", params=["binary:logistic", "multi:softprob", "reg:squarederror"])
def built(
    request: pytest.FixtureRequest, keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Trained, Path]:
    out = tmp_path_factory.mktemp("api")
    trained = train(request.param, out, rounds=12)
    proc = run(
        "bundle",
        ["build", str(trained.path), "--name", "m", "--version", "1.0.0", "--precision", "float",
         "--key", str(keys.private), "--out", str(out)],
    )
    assert proc.returncode == 0, proc.stderr
    return trained, out / "m-1.0.0.bundle"


def test_predict_float64_equals_xgboost(built: tuple[Trained, Path], keys: KeyFiles) -> None:
    trained, bundle = built
    model = load(bundle, trust=keys.public)
    x64 = trained.x_test.astype(np.float64)  # what numpy and pandas hand you by default
    # equal up to float32 rounding in the link function (onnxruntime's exp is not XGBoost's)
    np.testing.assert_allclose(
        model.predict(x64), trained.predict(trained.x_test), rtol=1e-6, atol=1e-6
    )
    assert model.features == NAMES and model.version == "1.0.0" and model.name == "m"


def test_every_input_form_gives_the_same_answer(
    built: tuple[Trained, Path], keys: KeyFiles
) -> None:
    trained, bundle = built
    model = load(bundle, trust=[keys.public])
    x = trained.x_test[:20]
    expected = model.predict(x)
    as_lists = [[None if math.isnan(v) else float(v) for v in row] for row in x.tolist()]
    as_dicts = [
        {name: v for name, v in zip(NAMES, row, strict=True) if v is not None}
        for row in as_lists
    ]
    np.testing.assert_array_equal(model.predict(as_lists), expected)
    np.testing.assert_array_equal(model.predict(as_dicts), expected)
    np.testing.assert_array_equal(model.predict(tuple(as_lists)), expected)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), expected)
    ints = np.nan_to_num(x).astype(np.int32)
    np.testing.assert_array_equal(model.predict(ints), model.predict(ints.astype(np.float32)))


def test_score_gives_the_stdin_records_with_an_error_per_bad_row(
    built: tuple[Trained, Path], keys: KeyFiles
) -> None:
    trained, bundle = built
    model = load(bundle, trust=keys.public)
    records = model.score([{"age": 30, "id": "a"}, {"age": "old"}, [1.0] * len(NAMES)])
    assert records[0]["id"] == "a" and "error" not in records[0]
    assert records[1] == {"error": "row 1: feature 'age': expected a number, got a string"}
    assert set(records[2]) == set(records[0]) - {"id"}
    from_array = model.score(trained.x_test[:3])
    assert [set(r) for r in from_array] == [set(records[2])] * 3


class FakeFrame:
    """What the API reads of a pandas DataFrame, without pandas (the runtime never imports it):
    columns, column selection, to_numpy."""

    def __init__(self, columns: dict[str, list[float]]) -> None:
        self._columns = columns

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __getitem__(self, names: list[str]) -> FakeFrame:
        return FakeFrame({name: self._columns[name] for name in names})

    def to_numpy(self, dtype: object = None, copy: bool = False, na_value: object = None) -> object:
        return np.array(list(self._columns.values()), dtype=dtype).T


def test_a_dataframe_is_read_by_column_name(built: tuple[Trained, Path], keys: KeyFiles) -> None:
    trained, bundle = built
    model = load(bundle, trust=keys.public)
    x = trained.x_test[:10]
    shuffled = {name: x[:, i].tolist() for i, name in reversed(list(enumerate(NAMES)))}
    frame = FakeFrame({"customer": [0.0] * 10, **shuffled})
    np.testing.assert_array_equal(model.predict(frame), model.predict(x))
    with pytest.raises(InputError, match="the DataFrame has no column 'age'"):
        model.predict(FakeFrame({n: v for n, v in shuffled.items() if n != "age"}))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.zeros((2, 3)), r"rows must have shape \[N, 6\], got \[2, 3\]"),
        (np.zeros(6), r"rows must have shape \[N, 6\], got \[6\]"),
        (np.array([["a"] * 6]), "rows must be real numbers"),
        (np.zeros((1, 6), dtype=complex), "rows must be real numbers"),
        ([[1, 2]], "row 0: expected 6 values, got 2"),
        ([{"nope": 1}], "row 0: unknown key 'nope'"),
        ("1,2,3", "rows must be an array, a list of rows or a DataFrame, got str"),
    ],
)
def test_bad_rows_raise_one_line(
    built: tuple[Trained, Path], keys: KeyFiles, rows: object, message: str
) -> None:
    model = load(built[1], trust=keys.public)
    with pytest.raises(InputError, match=message):
        model.predict(rows)


def test_a_bundle_needs_trust_and_is_verified(
    built: tuple[Trained, Path], keys: KeyFiles, other_keys: KeyFiles
) -> None:
    with pytest.raises(KeyFileError, match="give trust="):
        load(built[1])
    with pytest.raises(SignatureError):
        load(built[1], trust=other_keys.public)


def test_load_from_a_store(built: tuple[Trained, Path], keys: KeyFiles, tmp_path: Path) -> None:
    trained, bundle = built
    store = Store.init(tmp_path / "store", [keys.public])
    store.install(bundle.read_bytes(), origin="test")
    for model in (load(store.root), load(str(store.root), model="m")):
        assert isinstance(model, Model) and model.version == "1.0.0"
        np.testing.assert_allclose(
            model.predict(trained.x_test), trained.predict(trained.x_test), rtol=1e-6, atol=1e-6
        )
    with pytest.raises(StoreError, match="a store trusts its own keys"):
        load(store.root, trust=keys.public)
    with pytest.raises(StoreError, match="no model named 'other'"):
        load(store.root, model="other")
