"""Drift monitoring on the device: live rows counted into the bundle's own baseline bins.

Real parts throughout: an XGBoost model built with ``bundle build --data``, the runtime's
scorer, the HTTP server on 127.0.0.1 (in process and as ``bundle-runtime serve``), and the CLIs
as subprocesses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgebundle.builder.drill import repacked
from edgebundle.runtime.bundle import open_bundle, read_bundle_file, read_members_unverified
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.report import parse_report, window_summary
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import TrustedKeys, load_private_key
from edgebundle.runtime.stats import Baseline, baseline_of
from tests.conftest import KeyFiles
from tests.support import serverkit
from tests.support.serverkit import (
    init_store,
    install,
    post_json,
    request,
    rows_json,
    serve_in_process,
    serve_process,
)
from tests.support.xgbmodels import NAMES, features, run, train

F32 = npt.NDArray[np.float32]
SHIFTED = "age"  # feature 0: moved by 1.5 standard deviations in the live stream


@dataclass(frozen=True)
class Drift:
    bundle: Path
    bundle_v2: Path
    baseline_rows: F32
    live_rows: F32  # same distribution, SHIFTED moved


def shifted(rows: int, seed: int) -> F32:
    x = features(rows, seed=seed)
    x[:, NAMES.index(SHIFTED)] += 1.5
    return x


def build(model: Path, keys: KeyFiles, out: Path, version: str, data: Path) -> Path:
    args = ["build", str(model), "--name", "m", "--version", version, "--key", str(keys.private)]
    proc = run("bundle", [*args, "--out", str(out), "--data", str(data)])
    assert proc.returncode == 0, proc.stderr
    return out / f"m-{version}.bundle"


@pytest.fixture(scope="module")
def drift(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Drift:
    out = tmp_path_factory.mktemp("drift")
    trained = train("binary:logistic", out, rounds=30)
    baseline_rows = features(3000, seed=10)
    data = out / "baseline.npy"
    np.save(data, baseline_rows)
    return Drift(
        bundle=build(trained.path, keys, out, "1.0.0", data),
        bundle_v2=build(trained.path, keys, out, "1.1.0", data),
        baseline_rows=baseline_rows,
        live_rows=shifted(4000, seed=11),
    )


def load(bundle: Path, keys: KeyFiles) -> tuple[Scorer, Baseline, str]:
    verified = open_bundle(read_bundle_file(bundle), TrustedKeys.from_paths([keys.public]))
    baseline = baseline_of(verified)
    assert baseline is not None
    return Scorer.from_bundle(verified), baseline, verified.manifest.outputs[0].name


def fed(drift: Drift, keys: KeyFiles, x: F32, window_rows: int = 10_000, batch: int = 1) -> Monitor:
    scorer, baseline, output = load(drift.bundle, keys)
    monitor = Monitor("m", "1.0.0", baseline, window_rows)
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        monitor.observe(rows, scorer.predict(rows)[output])
    return monitor


def psis(report_window: Any, baseline: Baseline) -> dict[str, float]:
    assert len(report_window.features) == len(baseline.features)
    return {live.name: live.psi for live in report_window.features}


def verdicts(report_window: Any) -> dict[str, str]:
    return {live.name: live.verdict for live in report_window.features}


# --- counting ------------------------------------------------------------------------------


def test_the_baseline_rows_counted_live_give_the_baseline_exactly(
    drift: Drift, keys: KeyFiles
) -> None:
    report = fed(drift, keys, drift.baseline_rows, batch=500).report()
    baseline = report.baseline
    assert baseline is not None
    for live, base in zip(report.since_start.features, baseline.features, strict=True):
        present = live.rows - live.missing
        # the same rows, bins and edges: equal to the 6 decimals the baseline is written with
        assert [c / present for c in live.counts] == pytest.approx(base.shares, abs=5e-7)
        assert live.missing_rate == pytest.approx(base.missing_rate, abs=1e-12)
        assert live.psi == pytest.approx(0.0, abs=1e-9)
        assert live.verdict == "ok" and live.p_value == pytest.approx(1.0, abs=1e-6)
    assert report.since_start.prediction is not None
    assert report.since_start.prediction.psi == pytest.approx(0.0, abs=1e-9)


def test_a_stream_shifted_in_one_feature_moves_exactly_that_features_psi(
    drift: Drift, keys: KeyFiles
) -> None:
    report = fed(drift, keys, drift.live_rows, batch=7).report()
    assert report.baseline is not None
    values = psis(report.since_start, report.baseline)
    assert values[SHIFTED] > 0.2
    assert all(v < 0.1 for name, v in values.items() if name != SHIFTED), values
    assert verdicts(report.since_start) == {n: "shift" if n == SHIFTED else "ok" for n in NAMES}
    assert window_summary(report, report.since_start).startswith(
        f"4,000 rows: 1 of {len(NAMES)} features shifted: {SHIFTED} (PSI "
    )


def test_single_rows_and_batches_count_the_same(drift: Drift, keys: KeyFiles) -> None:
    x = drift.live_rows[:700]
    one = fed(drift, keys, x, window_rows=200, batch=1).report()
    many = fed(drift, keys, x, window_rows=200, batch=333).report()
    assert (one.since_start, one.recent) == (many.since_start, many.recent)


def test_the_recent_window_holds_only_the_latest_rows(drift: Drift, keys: KeyFiles) -> None:
    """100-row window in blocks of 10: after 1,000 baseline rows and 95 shifted ones, the
    window holds exactly the 95 shifted rows (9 full blocks and 5 rows of the next)."""
    x = np.concatenate([drift.baseline_rows[:1000], drift.live_rows[:95]])
    report = fed(drift, keys, x, window_rows=100, batch=13).report()
    alone = fed(drift, keys, drift.live_rows[:95], window_rows=100, batch=95).report()
    assert report.since_start.rows == 1095
    assert report.recent == alone.since_start


def test_a_report_survives_its_json_and_refuses_to_contradict_itself(
    drift: Drift, keys: KeyFiles
) -> None:
    report = fed(drift, keys, drift.live_rows[:300], batch=300).report()
    assert parse_report(report.to_bytes()) == report
    doc = json.loads(report.to_bytes())
    doc["recent"]["features"][0]["psi"] = 0.0
    with pytest.raises(ManifestError, match="does not match the counts"):
        parse_report(json.dumps(doc).encode())
    doc = json.loads(report.to_bytes())
    doc["since_start"]["features"][1]["counts"][0] += 1
    with pytest.raises(ManifestError, match="add up to"):
        parse_report(json.dumps(doc).encode())
    doc = json.loads(report.to_bytes())
    doc["since_start"]["features"][2]["name"] = "other"
    with pytest.raises(ManifestError, match="expected feature"):
        parse_report(json.dumps(doc).encode())


def test_without_a_baseline_only_rows_are_counted() -> None:
    monitor = Monitor("m", "1.0.0", None, window_rows=100)
    x = features(250)
    monitor.observe(x, np.zeros(len(x), dtype=np.float32))
    report = monitor.report()
    assert (report.since_start.rows, report.recent.rows) == (250, 100)
    assert report.since_start.features == ()
    assert parse_report(report.to_bytes()) == report
    assert "no baseline" in window_summary(report, report.recent)


def test_a_signed_baseline_for_other_features_is_refused_at_install(
    drift: Drift, keys: KeyFiles, tmp_path: Path
) -> None:
    members = read_members_unverified(drift.bundle.read_bytes())
    stats = json.loads(members["stats.json"])
    stats["features"][0]["name"] = "not a feature"
    bad = tmp_path / "m-1.0.0.bundle"
    bad.write_bytes(
        repacked(
            drift.bundle.read_bytes(),
            load_private_key(keys.private, None),
            Version.parse("1.0.0"),
            {"stats.json": json.dumps(stats).encode()},
        )
    )
    store = init_store(keys, tmp_path / "store")
    proc = run("bundle-runtime", ["install", str(bad), "--store", str(store)])
    assert proc.returncode != 0
    assert "stats.json features differ from the manifest's" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the server ----------------------------------------------------------------------------


def stats(port: int) -> Any:
    reply = request(port, "GET", "/v2/models/m/stats")
    assert reply.status == 200, reply.body
    return reply


def test_the_server_reports_drift_on_stats_and_metrics_and_restarts_on_a_switch(
    drift: Drift, keys: KeyFiles, tmp_path: Path
) -> None:
    store = init_store(keys, tmp_path / "store")
    install(store, drift.bundle)
    x = drift.live_rows[:3000]
    with serve_in_process(store, reload_interval=0.05) as (running, _):
        port = running.address[1]
        for start in range(0, 2500, 50):  # OIP v2 JSON, 50 rows a request
            rows = x[start : start + 50]
            data = [None if np.isnan(v) else float(v) for v in rows.reshape(-1)]
            tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": data}
            assert post_json(port, "/v2/models/m/infer", {"inputs": [tensor]}).status == 200
        for row in x[2500:]:  # MLflow /invocations, a row a request
            body = {"dataframe_split": {"columns": list(NAMES), "data": rows_json(row[None])}}
            assert post_json(port, "/invocations", body).status == 200

        report = parse_report(stats(port).body)
        assert (report.version, report.since_start.rows, report.recent.rows) == (
            "1.0.0",
            3000,
            3000,
        )
        assert report.baseline is not None
        values = psis(report.since_start, report.baseline)
        assert values[SHIFTED] > 0.2
        assert all(v < 0.1 for name, v in values.items() if name != SHIFTED), values

        metrics = request(port, "GET", "/metrics").body.decode()
        gauges = {
            (s.labels.get("feature"), s.labels.get("window")): s.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "edgebundle_feature_psi"
            for s in family.samples
            if s.labels["model"] == "m" and s.labels["version"] == "1.0.0"
        }
        assert gauges[SHIFTED, "since_start"] == pytest.approx(values[SHIFTED])
        assert gauges[SHIFTED, "recent"] > 0.2
        assert len(gauges) == 2 * len(NAMES)
        assert 'edgebundle_drift_baseline{model="m",version="1.0.0"} 1' in metrics

        install(store, drift.bundle_v2)
        deadline = time.monotonic() + 10
        while parse_report(stats(port).body).version != "1.1.0":
            assert time.monotonic() < deadline, "the server did not switch to 1.1.0"
            time.sleep(0.05)
        fresh = parse_report(stats(port).body)
        assert (fresh.since_start.rows, fresh.recent.rows) == (0, 0)
        assert window_summary(fresh, fresh.recent) == "no rows yet"
        assert request(port, "GET", "/v2/models/m/versions/1.0.0/stats").status == 404
        assert request(port, "GET", "/v2/models/other/stats").status == 404


def test_with_monitoring_off_stats_say_so(drift: Drift, keys: KeyFiles, tmp_path: Path) -> None:
    store = init_store(keys, tmp_path / "store")
    install(store, drift.bundle)
    with serve_in_process(store, monitor_window=None) as (running, _):
        port = running.address[1]
        reply = request(port, "GET", "/v2/models/m/stats")
        assert reply.status == 404
        assert "--no-monitor" in reply.json()["error"]
        assert "edgebundle_feature_psi{" not in request(port, "GET", "/metrics").body.decode()


def test_status_shows_the_drift_a_served_model_saw(
    drift: Drift, keys: KeyFiles, tmp_path: Path
) -> None:
    store = init_store(keys, tmp_path / "store")
    install(store, drift.bundle)
    with serve_process(store, tmp_path / "serve.log", "--report-interval", "0.1") as server:
        body = {"dataframe_split": {"columns": list(NAMES), "data": rows_json(drift.live_rows)}}
        assert post_json(server.port, "/invocations", body).status == 200
        deadline = time.monotonic() + 10
        while not (store / "monitor" / "m.json").exists():
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
    proc = run("bundle-runtime", ["status", "--store", str(store)])
    assert proc.returncode == 0, proc.stderr
    assert f"features shifted: {SHIFTED} (PSI " in proc.stdout
    assert f"{len(drift.live_rows):,} rows: 1 of" in proc.stdout
    doc = json.loads(run("bundle-runtime", ["status", "--store", str(store), "--json"]).stdout)
    since = doc["drift"]["m"]["since_start"]
    assert since["rows"] == len(drift.live_rows)
    assert {f["name"]: f["verdict"] for f in since["features"]} == {
        n: "shift" if n == SHIFTED else "ok" for n in NAMES
    }


def test_score_writes_a_drift_report_of_its_input(
    drift: Drift, keys: KeyFiles, tmp_path: Path
) -> None:
    lines = "".join(
        json.dumps(dict(zip(NAMES, row, strict=True))) + "\n" for row in rows_json(drift.live_rows)
    )
    out = tmp_path / "drift.json"
    args = ["score", "--bundle", str(drift.bundle), "--trust", str(keys.public)]
    proc = run("bundle-runtime", [*args, "--drift-report", str(out)], stdin=lines)
    assert proc.returncode == 0, proc.stderr
    report = parse_report(out.read_bytes())
    assert report.since_start.rows == len(drift.live_rows)
    assert report.baseline is not None
    assert psis(report.since_start, report.baseline)[SHIFTED] > 0.2
    unwritable = tmp_path / "missing-dir" / "drift.json"
    proc = run("bundle-runtime", [*args, "--drift-report", str(unwritable)], stdin=lines)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot write") and "Traceback" not in proc.stderr


def test_status_survives_an_unreadable_drift_report(
    drift: Drift, keys: KeyFiles, tmp_path: Path
) -> None:
    store = init_store(keys, tmp_path / "store")
    install(store, drift.bundle)
    (store / "monitor").mkdir()
    (store / "monitor" / "m.json").write_text('{"format": "edgebundle.drift/1"')
    proc = run("bundle-runtime", ["status", "--store", str(store)])
    assert proc.returncode == 0, proc.stderr
    assert "  drift:    " in proc.stdout and "m.json is corrupt" in proc.stdout
    doc = json.loads(run("bundle-runtime", ["status", "--store", str(store), "--json"]).stdout)
    assert "is corrupt" in doc["drift"]["m"]["error"]


def test_a_bundle_without_a_baseline_is_served_and_says_so(keys: KeyFiles, tmp_path: Path) -> None:
    built = serverkit.build(keys, tmp_path, "plain", "1.0.0")  # no --data
    store = init_store(keys, tmp_path / "store")
    install(store, built.bundle)
    with serve_in_process(store) as (running, _):
        port = running.address[1]
        body = {"instances": rows_json(built.trained.x_test[:5])}
        assert post_json(port, "/invocations", body).status == 200
        report = parse_report(request(port, "GET", "/v2/models/plain/stats").body)
        assert report.baseline is None and report.since_start.rows == 5
        assert "no baseline" in window_summary(report, report.since_start)
        metrics = request(port, "GET", "/metrics").body.decode()
        assert 'edgebundle_drift_baseline{model="plain",version="1.0.0"} 0' in metrics
        assert (
            'edgebundle_drift_rows{model="plain",version="1.0.0",window="since_start"} 5' in metrics
        )
        assert "edgebundle_feature_psi{" not in metrics
