"""Loading real XGBoost models into the IR, and the clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import xgboost as xgb

from edgebundle.builder.convert.emit_float import emit_float
from edgebundle.builder.convert.emit_linear import emit_linear_float
from edgebundle.builder.convert.link import assemble
from edgebundle.builder.convert.load import load_model
from edgebundle.builder.errors import ConversionError
from tests.support.xgbmodels import NAMES, features, labels, threshold_rows, train
from tests.support.zoo import CATEGORICAL, categorical_predict, train_categorical


def float_predict(path: Path, rows: np.ndarray, **kwargs: bool) -> np.ndarray:
    source = load_model(path, **kwargs)
    linear = source.linear
    built = assemble(
        emit_float(source.ensemble) if linear is None else emit_linear_float(linear),
        source.objective.link,
        source.ensemble.num_features,
        source.ensemble.num_outputs,
        source.output_columns,
    )
    session = ort.InferenceSession(built.onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([built.outputs[0].name], {"input": rows})[0])


@pytest.mark.parametrize("filename", ["model.json", "model.ubj", "model.bin", "model"])
def test_loads_every_format_xgboost_saves(tmp_path: Path, filename: str) -> None:
    trained = train("binary:logistic", tmp_path, filename=filename)
    source = load_model(trained.path)
    assert source.feature_names == NAMES
    assert len(source.ensemble.trees) == 20
    np.testing.assert_allclose(
        float_predict(trained.path, trained.x_test), trained.predict(trained.x_test), atol=2e-7
    )


def test_sklearn_wrapper_with_early_stopping_uses_best_iteration(tmp_path: Path) -> None:
    x = features(1500)
    y = labels("binary:logistic", x)
    model = xgb.XGBClassifier(
        n_estimators=300, learning_rate=0.5, max_depth=4, early_stopping_rounds=5, n_jobs=1
    )
    model.fit(x[:1000], y[:1000], eval_set=[(x[1000:1200], y[1000:1200])], verbose=False)
    assert model.best_iteration < 299
    path = tmp_path / "clf.json"
    model.save_model(path)
    source = load_model(path)
    assert source.best_iteration == model.best_iteration
    assert source.iterations == model.best_iteration + 1
    rows = x[1200:]
    np.testing.assert_allclose(
        float_predict(path, rows), model.predict_proba(rows)[:, 1], atol=2e-7
    )
    assert len(load_model(path, use_best_iteration=False).ensemble.trees) > source.iterations


def test_deep_lossguide_trees(tmp_path: Path) -> None:
    trained = train(
        "reg:squarederror",
        tmp_path,
        rounds=5,
        grow_policy="lossguide",
        max_depth=0,
        max_leaves=400,
        min_child_weight=0,
        reg_lambda=0,
        max_bin=1024,
    )
    source = load_model(trained.path)
    assert max(t.depth() for t in source.ensemble.trees) >= 15
    rows = np.concatenate([trained.x_test, threshold_rows(trained.booster, len(NAMES))])
    expected = trained.predict(rows)
    np.testing.assert_allclose(
        float_predict(trained.path, rows), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_exact_and_approx_tree_methods(tmp_path: Path, method: str) -> None:
    trained = train("binary:logistic", tmp_path, tree_method=method)
    rows = np.concatenate([trained.x_test, threshold_rows(trained.booster, len(NAMES))])
    np.testing.assert_allclose(float_predict(trained.path, rows), trained.predict(rows), atol=2e-7)


def test_default_feature_names_are_positional(tmp_path: Path) -> None:
    x = features(300)
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=np.arange(300.0)), 3)
    booster.save_model(tmp_path / "m.json")
    assert load_model(tmp_path / "m.json").feature_names == tuple(f"f{i}" for i in range(6))


def refused(path: Path) -> str:
    with pytest.raises(ConversionError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic", "multi:softprob"])
def test_gblinear_is_a_linear_graph_that_skips_missing_values(
    tmp_path: Path, objective: str
) -> None:
    trained = train(objective, tmp_path, booster="gblinear")
    source = load_model(trained.path)
    assert source.linear is not None and not source.ensemble.trees
    x = trained.x_test
    assert np.isnan(x).any(axis=0).all()  # every feature is missing somewhere
    rows = np.concatenate([x, np.full((1, len(NAMES)), np.nan, np.float32)])
    expected = trained.predict(rows)
    np.testing.assert_allclose(
        float_predict(trained.path, rows), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max()
    )


def test_dart_tree_weights_fold_into_the_leaves(tmp_path: Path) -> None:
    trained = train(
        "reg:squarederror", tmp_path, booster="dart", rate_drop=0.5, skip_drop=0.0
    )
    weights = json.loads(trained.booster.save_raw("json"))["learner"]["gradient_booster"][
        "weight_drop"
    ]
    assert len(weights) == 20 and min(weights) < 0.9  # the weights matter for this model
    rows = np.concatenate([trained.x_test, threshold_rows(trained.booster, len(NAMES))])
    expected = trained.predict(rows)
    np.testing.assert_allclose(
        float_predict(trained.path, rows), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max()
    )


def _check_rows(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, threshold_rows(booster, x.shape[1])])


def test_several_quantiles_are_one_output_each(tmp_path: Path) -> None:
    x = features(300)
    dm = xgb.DMatrix(x, label=np.nan_to_num(x[:, 0]), feature_names=list(NAMES))
    alphas = [0.05, 0.5, 0.95]
    booster = xgb.train({"objective": "reg:quantileerror", "quantile_alpha": alphas}, dm, 5)
    booster.save_model(tmp_path / "q.json")
    source = load_model(tmp_path / "q.json")
    assert source.output_columns == ("quantile_0.05", "quantile_0.5", "quantile_0.95")
    rows = _check_rows(booster, x)
    expected = booster.predict(xgb.DMatrix(rows, feature_names=list(NAMES)))
    assert expected.shape == (len(rows), 3)
    np.testing.assert_allclose(float_predict(tmp_path / "q.json", rows), expected, atol=1e-5)


@pytest.mark.parametrize("strategy", ["one_output_per_tree", "multi_output_tree"])
def test_several_targets_are_one_output_each(tmp_path: Path, strategy: str) -> None:
    x = features(300)
    y = np.stack([np.nan_to_num(x[:, 0]), np.nan_to_num(x[:, 2]) * 10], axis=1)
    dm = xgb.DMatrix(x, y, feature_names=list(NAMES))
    booster = xgb.train({"tree_method": "hist", "multi_strategy": strategy}, dm, 5)
    booster.save_model(tmp_path / "mt.json")
    source = load_model(tmp_path / "mt.json")
    assert source.output_columns == ("target_0", "target_1")
    # a vector-leaf tree becomes one IR tree per target, with the same splits
    assert len(source.ensemble.trees) == 10
    rows = _check_rows(booster, x)
    expected = booster.predict(xgb.DMatrix(rows, feature_names=list(NAMES)))
    np.testing.assert_allclose(float_predict(tmp_path / "mt.json", rows), expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CATEGORICAL))
def test_categorical_splits_follow_xgboost_for_every_code(tmp_path: Path, name: str) -> None:
    """Every category, unseen ones, negative and non-integer codes and missing values: the
    float graph's set membership sends each row where predict() sends it."""
    booster, path, rows = train_categorical(name, tmp_path, rounds=5)
    source = load_model(path)
    assert source.ensemble.has_category_splits and source.ensemble.categorical == {0}
    np.testing.assert_allclose(
        float_predict(path, rows), categorical_predict(booster, rows), rtol=1e-6, atol=1e-6
    )


def test_pandas_category_names_are_read_by_code(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    shops = ["berlin", "oslo", "paris", "zurich"]
    frame = pandas.DataFrame(
        {
            "shop": pandas.Categorical(rng.choice(shops, 300), categories=shops),
            "city": pandas.Categorical(rng.choice(["zürich", "köln"], 300)),
            "z": rng.normal(size=300),
        }
    )
    booster = xgb.train(
        {"tree_method": "hist"},
        xgb.DMatrix(frame, label=(frame.shop == "paris") * 2.0, enable_categorical=True),
        3,
    )
    booster.save_model(tmp_path / "pd.json")
    source = load_model(tmp_path / "pd.json")
    # xgboost 3.2 stores non-ASCII names cut short: that feature keeps its codes only
    assert source.category_names == {0: tuple(shops)}
    assert source.feature_types == ("c", "c", "float")


def test_refuses_pickles_without_reading_them(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"not even read")
    assert "pickle" in refused(path)


@pytest.mark.parametrize("content", [b"", b"{not json", b"\x00\x01garbage"])
def test_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(content)
    assert "cannot load" in refused(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in refused(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("name", "form"), [("cat-1000-partition", "bits"), ("cat-3-onehot", "members")]
)
def test_float_category_sets_take_bit_tables_only_where_they_halve_the_bytes(
    tmp_path: Path, name: str, form: str
) -> None:
    """1000 categories partitioned: each set listed as float32 members is ~8x the bit tables,
    so the float graph gathers 0/1 set columns instead and stays exact, also for codes far
    past the listed ones; 3 categories one-hot keep BRANCH_MEMBER."""
    booster, path, rows = train_categorical(name, tmp_path)
    graph = emit_float(load_model(path).ensemble)
    (trees,) = [n for n in graph.nodes if n.op_type == "TreeEnsemble"]
    listed = any(a.name == "membership_values" for a in trees.attribute)
    assert listed == (form == "members")
    assert any(n.op_type == "Gather" for n in graph.nodes) == (form == "bits")
    far = np.repeat(rows[:4], 4, axis=0)
    far[:, 0] = np.tile([2.0**24 + 2, 1e9, -1e9, 3e38], 4)
    every = np.concatenate([rows, far]).astype(np.float32)
    np.testing.assert_allclose(
        float_predict(path, every), categorical_predict(booster, every), rtol=1e-6, atol=1e-6
    )
