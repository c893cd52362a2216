"""``bundle drift``: a device's drift report read on the workstation.

The report comes from the real parts: a bundle built by the real CLI with ``--data``, its
signed baseline, live rows scored by the device's scorer and counted by the device's monitor.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost as xgb
from click.testing import CliRunner

from edgebundle.builder.cli import main
from edgebundle.builder.drift.analysis import NO_BASELINE
from edgebundle.builder.drift.formats import bin_labels, compact
from edgebundle.runtime.bundle import open_bundle, read_bundle_file
from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.monitor.report import DriftReport
from edgebundle.runtime.monitor.statistics import ALPHA, MIN_ROWS, PSI_SHIFTED
from edgebundle.runtime.scoring import Scorer
from edgebundle.runtime.signing import TrustedKeys
from edgebundle.runtime.stats import Baseline, FeatureBaseline, PredictionBaseline, parse_stats
from tests.conftest import KeyFiles
from tests.support.xgbmodels import NAMES, features, labels, run

SHIFTED = "age"
TRAIN_ROWS = 4000
LIVE_ROWS = 5000
BATCH = 100  # rows per request, as a device would see them
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    baseline: Baseline
    live: npt.NDArray[np.float32]
    output: npt.NDArray[Any]  # the bundle's first output for ``live``
    report: DriftReport
    path: Path  # the report as a device serves it
    bundle: Path
    x: npt.NDArray[np.float32]  # the training rows, the baseline's --data


def _train(x: npt.NDArray[np.float32], path: Path) -> Path:
    dtrain = xgb.DMatrix(
        x, label=labels("binary:logistic", x), missing=np.nan, feature_names=list(NAMES)
    )
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 3}
    xgb.train(params, dtrain, num_boost_round=30).save_model(path)
    return path


def _write_csv(path: Path, x: npt.NDArray[np.float32]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NAMES)
        writer.writerows(["" if math.isnan(v) else repr(float(v)) for v in row] for row in x)
    return path


@pytest.fixture(scope="module")
def scenario(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    tmp = tmp_path_factory.mktemp("drift")
    x = features(TRAIN_ROWS, seed=0)
    built = CliRunner().invoke(
        main,
        [
            "build", str(_train(x, tmp / "model.json")), "--name", "credit-score",
            "--version", "1.0.0", "--key", str(keys.private), "--out", str(tmp),
            "--data", str(_write_csv(tmp / "rows.csv", x)),
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    bundle = open_bundle(
        read_bundle_file(tmp / "credit-score-1.0.0.bundle"), TrustedKeys.from_paths([keys.public])
    )
    baseline = parse_stats(bundle.files["stats.json"])
    scorer = Scorer.from_bundle(bundle)
    first = bundle.manifest.outputs[0].name
    column = NAMES.index(SHIFTED)
    live = features(LIVE_ROWS, seed=11)
    live[:, column] += 1.5 * np.nanstd(x[:, column])
    monitor = Monitor(bundle.manifest.name, str(bundle.manifest.version), baseline)
    outputs = []
    for start in range(0, LIVE_ROWS, BATCH):
        rows = live[start : start + BATCH]
        outputs.append(scorer.predict(rows)[first])
        monitor.observe(rows, outputs[-1])
    report = monitor.report()
    path = tmp / "stats.json"
    path.write_bytes(report.to_bytes())
    bundle_path = tmp / "credit-score-1.0.0.bundle"
    return Scenario(baseline, live, np.concatenate(outputs), report, path, bundle_path, x)


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def drift(*args: str | Path) -> Outcome:
    """``bundle drift`` in this process (starting ``bundle`` takes seconds: it imports
    xgboost); an exception other than click's exit fails the test with its traceback."""
    result = CliRunner().invoke(main, ["drift", *map(str, args)], catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def drift_process(*args: str | Path) -> Outcome:
    """``bundle drift`` as the installed console script, exactly as an operator runs it."""
    proc = run("bundle", ["drift", *map(str, args)])
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Shown:
    outcome: Outcome
    page: Path


@pytest.fixture(scope="module")
def shown(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Shown:
    """``bundle drift STATS --html PAGE`` run once as a real process for the tests to read."""
    page = tmp_path_factory.mktemp("page") / "out.html"
    return Shown(drift_process(scenario.path, "--html", page), page)


def verdict_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("verdict: "))


def table_rows(stdout: str) -> list[list[str]]:
    """The table's cells, split on the two spaces between columns."""
    lines = stdout.split("\n\n")[-1].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


# --- the acceptance test: one shifted input, and only it, is flagged -----------------------


def test_only_the_shifted_feature_is_shifted(scenario: Scenario) -> None:
    window = scenario.report.since_start
    assert window.rows == LIVE_ROWS
    psis = {live.name: live.psi for live in window.features}
    assert list(psis) == list(NAMES)
    shifted = psis.pop(SHIFTED)
    assert shifted is not None and shifted > PSI_SHIFTED
    assert all(value is not None and value < 0.1 for value in psis.values()), psis
    verdicts = {live.name: live.verdict for live in window.features}
    assert verdicts == {name: "shift" if name == SHIFTED else "ok" for name in NAMES}


def test_cli_verdict_names_the_shifted_feature_only(shown: Shown) -> None:
    proc = shown.outcome
    assert proc.code == 0, proc.stderr
    head = verdict_line(proc.stdout).split(";")[0]
    assert re.fullmatch(
        rf"verdict: shift — 5,000 rows: 1 of {len(NAMES)} features shifted: "
        rf"age \(PSI \d+\.\d\d, p < 0\.001\)",
        head,
    )
    assert "showing the recent window" in proc.stdout  # the default, since it has rows
    table = table_rows(proc.stdout)
    assert table[0][:4] == ["feature", "verdict", "PSI", "p-value"]
    assert table[1][:2] == [SHIFTED, "shift"] and table[1][3] == "<0.001"
    assert all(row[1] == "ok" for row in table[2:-1])
    assert table[-1][0] == "(prediction)"
    # aligned: every row's verdict column starts where the header's does
    lines = proc.stdout.split("\n\n")[-1].splitlines()
    column = lines[0].index("verdict")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)


def _scored_report(scenario: Scenario, keys: KeyFiles, rows: Any, out: Path) -> Path:
    """``bundle-runtime score --drift-report``: the device's own CLI scores ``rows``."""
    lines = "".join(
        json.dumps(
            {n: None if math.isnan(v) else float(v) for n, v in zip(NAMES, row, strict=True)}
        )
        + "\n"
        for row in rows
    )
    args = ["score", "--bundle", str(scenario.bundle), "--trust", str(keys.public)]
    proc = run("bundle-runtime", [*args, "--drift-report", str(out)], stdin=lines)
    assert proc.returncode == 0, proc.stderr
    return out


def test_fail_on_shift_exits_7_naming_only_the_shifted_feature(
    scenario: Scenario, keys: KeyFiles, tmp_path: Path
) -> None:
    report = _scored_report(scenario, keys, scenario.live, tmp_path / "drift.json")
    proc = drift_process(report, "--fail-on", "shift")
    assert proc.code == 7, proc.stderr
    assert proc.stderr == f"error: shifted: {SHIFTED}\n"
    assert verdict_line(proc.stdout).startswith("verdict: shift — 5,000 rows: 1 of")
    as_json = drift_process(report, "--fail-on", "shift", "--json")
    assert as_json.code == 7 and json.loads(as_json.stdout)["shifted"] == [SHIFTED]


def test_five_rows_are_too_few_and_do_not_fail(
    scenario: Scenario, keys: KeyFiles, tmp_path: Path
) -> None:
    report = _scored_report(scenario, keys, scenario.live[:5], tmp_path / "drift.json")
    proc = drift_process(report, "--fail-on", "shift", "--json")
    assert proc.code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "too_few_rows" and doc["shifted"] == []
    assert {f["verdict"] for f in doc["features"]} == {"too_few_rows"}
    assert doc["prediction"]["verdict"] == "too_few_rows"
    # the PSIs that used to read as "6 of 6 features shifted"
    assert max(f["psi"] for f in doc["features"] if f["psi"] is not None) > PSI_SHIFTED
    assert "too few to judge (a verdict needs 200" in drift(report).stdout


def test_a_large_fleet_with_a_tiny_shift_reads_ok(scenario: Scenario, keys: KeyFiles) -> None:
    """200,000 rows with every feature moved by 2% of its spread: the chi-square test sees
    it beyond doubt, the PSI says it does not matter, and the verdict is ok."""
    bundle = open_bundle(read_bundle_file(scenario.bundle), TrustedKeys.from_paths([keys.public]))
    scorer = Scorer.from_bundle(bundle)
    live = features(200_000, seed=21)
    live += 0.02 * np.nanstd(scenario.x, axis=0)
    monitor = Monitor("credit-score", "1.0.0", scenario.baseline)
    monitor.observe(live, scorer.predict(live)[bundle.manifest.outputs[0].name])
    window = monitor.report().since_start
    significant = [f for f in window.features if f.p_value is not None and f.p_value < ALPHA]
    assert significant, "the tiny shift should be statistically significant at this size"
    assert all(f.psi is not None and f.psi < 0.05 for f in window.features)
    assert {f.verdict for f in window.features} == {"ok"}


def test_since_start_window_on_request(scenario: Scenario) -> None:
    proc = drift(scenario.path, "--window", "since_start")
    assert proc.code == 0, proc.stderr
    assert "showing the window since start" in proc.stdout
    assert verdict_line(proc.stdout).startswith(
        f"verdict: shift — 5,000 rows: 1 of {len(NAMES)} features shifted"
    )


def test_pretty_printed_report_reads_the_same(scenario: Scenario, tmp_path: Path) -> None:
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(scenario.path.read_bytes()), indent=2))
    assert drift(pretty).stdout == drift(scenario.path).stdout


def test_json_summary(scenario: Scenario) -> None:
    proc = drift(scenario.path, "--json")
    assert proc.code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {
        "model", "version", "started", "generated", "window", "rows", "baseline", "thresholds",
        "verdict", "shifted", "summary", "features", "prediction",
    }  # fmt: skip
    assert doc["verdict"] == "shift" and doc["shifted"] == [SHIFTED]
    assert doc["thresholds"] == {
        "min_rows": MIN_ROWS, "psi": PSI_SHIFTED, "p_value": ALPHA, "missing_rate_shift": 0.1
    }  # fmt: skip
    assert [f["verdict"] for f in doc["features"]] == ["shift"] + ["ok"] * (len(NAMES) - 1)
    psis = [f["psi"] for f in doc["features"]]
    assert psis == sorted(psis, reverse=True)
    assert doc["features"][0]["p_value"] < ALPHA
    prediction = scenario.report.recent.prediction
    assert prediction is not None and doc["prediction"]["psi"] == prediction.psi


# --- the HTML page -------------------------------------------------------------------------


class PageChecker(HTMLParser):
    """Records tags, attributes and text, and every end tag that does not close the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.problems.append(f"</{tag}> while {self.open[-1:]} is open")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_page(page: str) -> PageChecker:
    checker = PageChecker()
    checker.feed(page)
    checker.close()
    assert page.startswith("<!DOCTYPE html>")
    assert not checker.problems and not checker.open, (checker.problems, checker.open)
    lowered = page.lower()
    for banned in ("<script", "http://", "https://", "url(", "@import"):
        assert banned not in lowered
    assert {"script", "img", "link", "iframe", "object", "embed"}.isdisjoint(checker.tags)
    names = {name for name, _ in checker.attrs}
    assert "src" not in names and not any(name.startswith("on") for name in names)
    assert all(value and value.startswith("#") for name, value in checker.attrs if name == "href")
    return checker


def test_html_page_is_self_contained(shown: Shown) -> None:
    proc = shown.outcome
    assert proc.code == 0, proc.stderr
    assert proc.stderr == f"wrote {shown.page}\n"
    page = shown.page.read_text(encoding="utf-8")
    checker = check_page(page)
    assert checker.tags["svg"] == len(NAMES) + 1  # one per feature, one for the prediction
    text = " ".join(checker.text)
    assert SHIFTED in text and verdict_line(proc.stdout) in text
    assert 'class="level shift">shift<' in page
    assert [p.name for p in shown.page.parent.iterdir()] == ["out.html"]  # no temp file left


def test_html_page_renders_in_a_headless_browser(shown: Shown) -> None:
    browser = next((path for b in BROWSERS if (path := shutil.which(b))), None)
    if browser is None:
        pytest.skip(f"no headless browser on PATH ({', '.join(BROWSERS)})")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", shown.page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert dom.count("<svg") == len(NAMES) + 1
    assert "<rect" in dom and SHIFTED in dom


def test_untrusted_names_cannot_inject_markup_or_terminal_codes(tmp_path: Path) -> None:
    script = "<script>alert(1)</script>"
    feature = FeatureBaseline(name=script, edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.0)
    terminal = FeatureBaseline(name="red\x1b[31m", edges=(), shares=(1.0,), missing_rate=0.0)
    baseline = Baseline(
        rows=2,
        features=(feature, terminal),
        prediction=PredictionBaseline(kind="probability", edges=(0.5,), shares=(0.5, 0.5)),
    )
    monitor = Monitor('"><img src=x onerror=alert(1)>', "1.0.0", baseline)
    monitor.observe(
        np.array([[0.1, 1.0], [0.7, 2.0], [np.nan, 3.0]], dtype=np.float32),
        np.array([0.2, 0.9, 0.4], dtype=np.float32),
    )
    report = tmp_path / "stats.json"
    report.write_bytes(monitor.report().to_bytes())
    proc = drift(report, "--html", tmp_path / "out.html")
    assert proc.code == 0, proc.stderr
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    check_page(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "\x1b" not in proc.stdout and "red\\x1b[31m" in proc.stdout


# --- reports with nothing to compare -------------------------------------------------------


def test_no_baseline_shows_row_counts(scenario: Scenario, tmp_path: Path) -> None:
    monitor = Monitor("credit-score", "1.0.0", None)
    monitor.observe(scenario.live, scenario.output)
    report = tmp_path / "stats.json"
    report.write_bytes(monitor.report().to_bytes())
    proc = drift(report, "--html", tmp_path / "out.html")
    assert proc.code == 0, proc.stderr
    assert NO_BASELINE in proc.stdout
    assert f"rows: {LIVE_ROWS:,} since start" in proc.stdout
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert check_page(page).tags["svg"] == 0 and NO_BASELINE in page
    assert json.loads(drift(report, "--json").stdout)["baseline"] is False


def test_no_rows_yet(scenario: Scenario, tmp_path: Path) -> None:
    report = tmp_path / "stats.json"
    report.write_bytes(Monitor("credit-score", "1.0.0", scenario.baseline).report().to_bytes())
    proc = drift(report)
    assert proc.code == 0, proc.stderr
    assert "no rows yet" in proc.stdout and "showing the window since start" in proc.stdout


def test_a_feature_gone_missing_ranks_first(tmp_path: Path) -> None:
    # Every live value missing leaves no PSI to compute: a dead sensor must not read as ok.
    baseline = Baseline(
        rows=10,
        features=(
            FeatureBaseline(name="temp", edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.1),
            FeatureBaseline(name="sensor", edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.0),
        ),
        prediction=PredictionBaseline(kind="class", edges=(0.5,), shares=(0.5, 0.5)),
    )
    # temp: present as often as the baseline's 90%, split as it was
    rows = np.array(
        [[0.1, np.nan], [0.9, np.nan]] * 9 * 15 + [[np.nan, np.nan]] * 2 * 15, dtype=np.float32
    )
    for count, verdict in ((2, "too_few_rows"), (len(rows), "shift")):
        monitor = Monitor("m", "1.0.0", baseline)
        monitor.observe(rows[:count], np.array([[0.8, 0.2], [0.3, 0.7]] * 150)[:count])
        report = tmp_path / "stats.json"
        report.write_bytes(monitor.report().to_bytes())
        proc = drift(report)
        assert proc.code == 0, proc.stderr
        table = table_rows(proc.stdout)
        assert table[1][:3] == ["sensor", verdict, "—"] and "+100.0 pp" in table[1]
    assert "1 of 2 features shifted: sensor (all missing, p < 0.001)" in verdict_line(proc.stdout)


# --- bad input: one line on stderr, never a traceback --------------------------------------


def _edit(data: bytes, change: str) -> bytes:
    doc = json.loads(data)
    if change == "psi":
        doc["since_start"]["features"][0]["psi"] += 0.5
    elif change == "format":
        doc["format"] = "edgebundle.drift/1"
    elif change == "counts":
        doc["recent"]["features"][0]["counts"][0] += 1
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda data: data[: len(data) // 2], "not valid JSON"),
        (lambda data: _edit(data, "psi"), "since_start.features[0].psi: does not match the counts"),
        (lambda data: _edit(data, "counts"), "recent.features[0]: counts add up to"),
        (lambda data: _edit(data, "format"), "unsupported drift report format"),
        (lambda data: b"\xff\xfe", "not valid UTF-8"),
        (lambda data: b"[]", "must be a JSON object"),
    ],
    ids=["truncated", "psi-disagrees", "counts-disagree", "format", "not-utf8", "not-object"],
)
def test_bad_report_fails_in_one_line(
    scenario: Scenario, tmp_path: Path, make: Any, message: str
) -> None:
    bad = tmp_path / "stats.json"
    bad.write_bytes(make(scenario.path.read_bytes()))
    proc = drift(bad, "--html", tmp_path / "out.html")  # raises on any error but click's
    assert proc.code == 1 and proc.stdout == ""
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "out.html").exists()


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_unreadable_file_fails_in_one_line(tmp_path: Path, name: str) -> None:
    proc = drift(tmp_path / name)
    assert proc.code == 1 and proc.stdout == ""
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert "cannot read" in proc.stderr


# --- labels --------------------------------------------------------------------------------


def test_bin_labels_are_edge_ranges() -> None:
    edges = (0.5, float(np.float32(1.2)), 3.1)  # model thresholds are float32
    assert bin_labels(edges) == ("< 0.5", "0.5 – 1.2", "1.2 – 3.1", "≥ 3.1")
    assert bin_labels(()) == ("all values",)
    # Two edges the same at 4 digits get more, so two bins never read as one.
    assert bin_labels((22026.0, 22034.0)) == ("< 22.026k", "22.026k – 22.034k", "≥ 22.034k")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (-0.0, "0"), (1.23456, "1.235"), (-0.000123456, "-0.0001235"), (999.96, "1k"),
     (22026.47, "22.03k"), (999_999.0, "1M"), (3.2e9, "3.2G")],
)  # fmt: skip
def test_compact_numbers(value: float, text: str) -> None:
    assert compact(value) == text
