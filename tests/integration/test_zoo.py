"""The models other converters refuse (tests/support/zoo.py), built in both precisions and
scored the three ways a device scores: `bundle-runtime score` on stdin, the HTTP server's
/invocations, and the Python API. Every answer must equal XGBoost's predict() within the
bundle's error budget (float: to float32 summation order)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost as xgb

import edgebundle
from edgebundle.builder.build import BuildResult
from edgebundle.builder.convert.load import load_model
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.serverkit import post_json, rows_json, serve_in_process
from tests.support.xgbmodels import json_lines, run, score
from tests.support.zoo import (
    CATEGORICAL,
    SHOPS,
    ZOO,
    ZooModel,
    train_categorical,
    train_named,
    train_zoo,
)

pytestmark = pytest.mark.timeout(300)
PRECISIONS = ("float", "int8")


@dataclass(frozen=True)
class Built:
    model: ZooModel
    result: BuildResult

    @property
    def primary(self) -> str:
        return self.result.manifest.outputs[0].name

    def assert_close(self, got: npt.ArrayLike) -> None:
        """Within the budget the bundle was built to, of XGBoost's predict()."""
        got = np.asarray(got, dtype=np.float64)
        expected = self.model.expected.astype(np.float64)
        assert got.shape == expected.shape
        parity = self.result.manifest.parity
        if self.result.chosen.precision == "float":
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * parity.error_scale)
        else:
            error = np.abs(got - expected).max() / parity.error_scale
            assert error <= parity.budget.max_error


ALL = (*ZOO, *CATEGORICAL)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, keys: KeyFiles) -> dict[str, dict[str, Built]]:
    """Every zoo model built in each precision: {precision: {zoo name: built}}."""
    root = tmp_path_factory.mktemp("zoo")
    models = [train_zoo(name, root) for name in ALL]
    return {
        precision: {
            m.name: Built(
                m,
                edgebundle.build(
                    m.path,
                    name=m.name,
                    version="1.0.0",
                    key=keys.private,
                    out_dir=root / precision,
                    precision=precision,
                ),
            )
            for m in models
        }
        for precision in PRECISIONS
    }


CASES = [(p, n) for p in PRECISIONS for n in ALL]


@pytest.fixture(scope="module", params=PRECISIONS)
def served(
    request: pytest.FixtureRequest,
    zoo: dict[str, dict[str, Built]],
    keys: KeyFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, dict[str, Built]]]:
    """One store per precision holding the whole zoo, served on 127.0.0.1."""
    built = zoo[request.param]
    store = Store.init(tmp_path_factory.mktemp("store") / "s", [keys.public])
    for item in built.values():
        store.install(item.result.path.read_bytes(), origin="test")
    with serve_in_process(store.root) as (running, _):
        yield running.address[1], built


@pytest.mark.parametrize(("precision", "name"), CASES)
def test_stdin_scores_equal_predict(
    name: str, precision: str, zoo: dict[str, dict[str, Built]], keys: KeyFiles
) -> None:
    built = zoo[precision][name]
    rc, records, stderr = score(built.result.path, keys.public, json_lines(built.model.rows))
    assert rc == 0, stderr
    built.assert_close([r[built.primary] for r in records])


@pytest.mark.parametrize(("precision", "name"), CASES)
def test_python_api_predicts_what_xgboost_predicts(
    name: str, precision: str, zoo: dict[str, dict[str, Built]], keys: KeyFiles
) -> None:
    built = zoo[precision][name]
    model = edgebundle.load(built.result.path, trust=keys.public)
    built.assert_close(model.predict(built.model.rows))
    records = model.score(built.model.rows[:5])
    built.assert_close([r[built.primary] for r in records] + list(built.model.expected[5:]))


def test_http_invocations_score_every_zoo_model(served: tuple[int, dict[str, Built]]) -> None:
    port, built = served
    for name, item in built.items():
        body = {"inputs": rows_json(item.model.rows)}
        reply = post_json(port, f"/invocations?model={name}", body)
        assert reply.status == 200, reply.body
        item.assert_close([r[item.primary] for r in reply.json()["predictions"]])


def test_several_outputs_are_named_in_the_manifest(zoo: dict[str, dict[str, Built]]) -> None:
    for precision in PRECISIONS:
        quantiles = zoo[precision]["quantiles-3"].result.manifest
        spec = quantiles.outputs[0]
        assert (spec.name, spec.shape) == ("prediction", (-1, 3))
        assert spec.columns == ("quantile_0.1", "quantile_0.5", "quantile_0.9")
        targets = zoo[precision]["targets-2-vector-leaves"].result.manifest.outputs[0]
        assert targets.columns == ("target_0", "target_1")
        # a single-output model's manifest carries no column names at all
        dart = json.loads(zoo[precision]["dart-regression"].result.manifest.to_bytes())
        assert "columns" not in dart["outputs"][0]


def test_csv_output_names_each_quantile(zoo: dict[str, dict[str, Built]], keys: KeyFiles) -> None:
    built = zoo["float"]["quantiles-3"]
    csv = "age,income,debt ratio,lines,late_30d,utilization\n1,50000,0.3,2,0,0.5\n"
    args = ["score", "--bundle", str(built.result.path), "--trust", str(keys.public)]
    proc = run("bundle-runtime", [*args, "--format", "csv"], csv)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    columns = ["prediction_quantile_0.1", "prediction_quantile_0.5", "prediction_quantile_0.9"]
    assert header.split(",")[:3] == columns
    x = np.asarray([[1, 50000, 0.3, 2, 0, 0.5]], dtype=np.float32)
    expected = edgebundle.load(built.result.path, trust=keys.public).predict(x)[0]
    np.testing.assert_array_equal(np.asarray(row.split(",")[:3], dtype=np.float32), expected)


def test_int8_of_categorical_splits_builds_and_auto_chooses_by_its_usual_rule(
    zoo: dict[str, dict[str, Built]], keys: KeyFiles, tmp_path: Path
) -> None:
    """--precision int8 builds every categorical model within budget; auto --optimize size
    ships whichever model.onnx is smaller (float for 3 categories, int8 for 1000)."""
    for name in CATEGORICAL:
        assert zoo["int8"][name].result.chosen.precision in ("int8", "int16")
        assert zoo["int8"][name].result.manifest.parity.passed
    for name in ("cat-3-onehot", "cat-1000-partition"):
        args = ["build", str(zoo["float"][name].model.path), "--name", "c", "--version", "1.0.0",
                "--key", str(keys.private), "--out", str(tmp_path / name), "--json"]
        auto = run("bundle", [*args, "--optimize", "size"])  # --precision auto, the default
        assert auto.returncode == 0, auto.stderr
        report = json.loads(auto.stdout)
        exact, quantized = report["candidates"][0], report["candidates"][-1]
        assert exact["precision"] == "float" and quantized["precision"] in ("int8", "int16")
        smaller = quantized if quantized["model_bytes"] <= exact["model_bytes"] else exact
        assert report["precision"] == smaller["precision"]
        assert report["choice"]["reason"].startswith(
            f"optimize size: {smaller['precision']} model.onnx is {smaller['model_bytes']:,} bytes"
        )


def test_manifest_lists_the_categories_the_splits_name(zoo: dict[str, dict[str, Built]]) -> None:
    for name, (categories, _) in CATEGORICAL.items():
        shop = zoo["float"][name].result.manifest.inputs.features[0]
        assert shop.type == "c" and shop.codes is not None and shop.categories is None
        assert set(shop.codes) <= set(range(categories)) and len(shop.codes) > 1


def test_manifest_writes_the_codes_as_runs_and_inspect_shows_them(
    zoo: dict[str, dict[str, Built]], keys: KeyFiles
) -> None:
    """1000 listed codes are one short string in manifest.json, read back as the same codes."""
    built = zoo["float"]["cat-1000-partition"]
    listed = load_model(built.model.path).ensemble.categories_per_feature()[0]
    shop = built.result.manifest.inputs.features[0]
    assert shop.codes is not None and list(shop.codes) == listed.tolist()
    args = ["inspect", str(built.result.path), "--trust", str(keys.public)]
    document = json.loads(run("bundle", [*args, "--json"]).stdout)
    written = document["manifest"]["inputs"]["features"][0]["codes"]
    assert written == str(shop.codes) and len(written) < 40  # "0-999" and a few gaps at most
    assert f"shop (categorical: codes {written}), z, w" in run("bundle", args).stdout


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", sorted(CATEGORICAL))
def test_categorical_bundle_within_twice_the_ordinal_one(
    name: str, precision: str, zoo: dict[str, dict[str, Built]], keys: KeyFiles, tmp_path: Path
) -> None:
    """The same data and parameters with the shop code as a number, in the same precision: the
    bundle of category sets may be at most twice its size."""
    _, ordinal, _ = train_categorical(name, tmp_path, ordinal=True)
    plain = edgebundle.build(
        ordinal, name="o", version="1.0.0", key=keys.private, out_dir=tmp_path, precision=precision
    )
    assert zoo[precision][name].result.bundle_bytes <= 2 * plain.bundle_bytes


# --- category names (a model trained on pandas categoricals) -----------------------------------


@pytest.fixture(scope="module")
def named(
    tmp_path_factory: pytest.TempPathFactory, keys: KeyFiles
) -> tuple[BuildResult, Any, npt.NDArray[np.float32]]:
    """The float bundle of a model trained with shop names, a DataFrame of names to score and
    XGBoost's predictions on it."""
    root = tmp_path_factory.mktemp("named")
    booster, path, frame = train_named(root)
    result = edgebundle.build(
        path, name="named", version="1.0.0", key=keys.private, out_dir=root, precision="float"
    )
    expected = booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    return result, frame, expected


def _records(frame: Any) -> list[dict[str, Any]]:
    return [
        {"shop": None if not isinstance(s, str) else s, "z": float(z), "w": float(w)}
        for s, z, w in zip(frame["shop"], frame["z"], frame["w"], strict=True)
    ]


def _json_rows(frame: Any) -> list[dict[str, Any]]:
    """Rows as JSON objects: NaN (no JSON for it) as null."""
    return [{k: (None if v != v else v) for k, v in r.items()} for r in _records(frame)]


def test_manifest_names_the_categories(named: tuple[BuildResult, Any, Any]) -> None:
    shop = named[0].manifest.inputs.features[0]
    assert (shop.name, shop.type, shop.categories) == ("shop", "c", SHOPS)


def test_names_score_as_xgboost_predicts_the_dataframe(
    named: tuple[BuildResult, Any, npt.NDArray[np.float32]], keys: KeyFiles
) -> None:
    result, frame, expected = named
    model = edgebundle.load(result.path, trust=keys.public)
    np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-6, atol=1e-6)
    records = [json.dumps(row) for row in _json_rows(frame)]
    rc, scored, stderr = score(result.path, keys.public, "\n".join(records) + "\n")
    assert rc == 0, stderr
    np.testing.assert_allclose([r["prediction"] for r in scored], expected, rtol=1e-6, atol=1e-6)
    csv = "shop,z,w\n" + "".join(
        f"{r['shop'] or ''},{r['z']!r},{r['w']!r}\n".replace("nan", "") for r in _records(frame)
    )
    proc = run(
        "bundle-runtime",
        ["score", "--bundle", str(result.path), "--trust", str(keys.public), "--format", "csv"],
        csv,
    )
    assert proc.returncode == 0, proc.stderr
    values = [float(line.split(",")[0]) for line in proc.stdout.splitlines()[1:]]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)


def test_names_over_http_and_an_unknown_name_is_a_422(
    named: tuple[BuildResult, Any, npt.NDArray[np.float32]],
    keys: KeyFiles,
    tmp_path: Path,
) -> None:
    result, frame, expected = named
    store = Store.init(tmp_path / "store", [keys.public])
    store.install(result.path.read_bytes(), origin="test")
    rows = _json_rows(frame)
    with serve_in_process(store.root) as (running, _):
        port = running.address[1]
        reply = post_json(port, "/invocations", {"instances": rows})
        assert reply.status == 200, reply.body
        got = [r["prediction"] for r in reply.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        bad = post_json(port, "/invocations", {"instances": [{"shop": "lyon", "z": 0, "w": 0}]})
        assert bad.status == 422
        assert "unknown category 'lyon'" in bad.json()["error"]


def test_an_unknown_name_is_one_error_record(
    named: tuple[BuildResult, Any, Any], keys: KeyFiles
) -> None:
    result = named[0]
    lines = '{"shop": "lyon", "z": 1}\n{"shop": "shop-03", "z": 1}\n{"z": "shop-03"}\n'
    rc, records, _ = score(result.path, keys.public, lines)
    assert rc == 1
    assert records[0] == {"error": "line 1: feature 'shop': unknown category 'lyon'"}
    assert "prediction" in records[1]
    assert records[2]["error"].startswith("line 3: feature 'z': expected a number")
    model = edgebundle.load(result.path, trust=keys.public)
    with pytest.raises(edgebundle.BundleError, match="unknown category 'lyon'"):
        model.predict([{"shop": "lyon"}])
