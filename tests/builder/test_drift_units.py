"""``bundle drift``'s pure parts in memory: the analysis of a report counted by the device's
monitor, and what the text, JSON and HTML make of untrusted names."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from edgebundle.builder.drift.analysis import Drift, Histogram, analyse
from edgebundle.builder.drift.chart import bar_chart, escape
from edgebundle.builder.drift.formats import p_value_text, percent, points, psi_text
from edgebundle.builder.drift.page import format_html
from edgebundle.builder.drift.summary import summary_dict
from edgebundle.builder.drift.text import format_text, printable, sparklines
from edgebundle.runtime.monitor.counting import Monitor
from edgebundle.runtime.stats import Baseline, FeatureBaseline, PredictionBaseline

HOSTILE = "\"'><script>alert(1)</script>&amp;"
MODEL = 'm<1>&"x"'


def drifted(model: str = MODEL, feature: str = HOSTILE) -> Drift:
    """Three live rows against a two-row baseline: ``feature`` moves, ``sensor`` goes dark."""
    baseline = Baseline(
        rows=4,
        features=(
            FeatureBaseline(name=feature, edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.0),
            FeatureBaseline(name="steady", edges=(), shares=(1.0,), missing_rate=0.0),
            FeatureBaseline(name="sensor", edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.0),
        ),
        prediction=PredictionBaseline(kind="probability", edges=(0.5,), shares=(0.5, 0.5)),
    )
    monitor = Monitor(model, "1.0.0", baseline)
    monitor.observe(
        np.array([[0.1, 1.0, np.nan], [0.7, 2.0, np.nan], [0.8, 3.0, np.nan]], dtype=np.float32),
        np.array([0.2, 0.9, 0.4], dtype=np.float32),
    )
    return analyse(monitor.report())


# --- analysis and JSON -----------------------------------------------------------------------


def test_features_rank_all_missing_first_then_by_psi() -> None:
    drift = drifted()
    assert drift.window == "recent" and drift.rows == 3
    assert [f.name for f in drift.features] == ["sensor", HOSTILE, "steady"]
    assert {f.verdict for f in drift.features} == {"too_few_rows"}  # 3 rows: no verdict
    assert drift.verdict == "too_few_rows" and drift.shifted == ()
    moved = drift.features[1].histogram
    assert moved.labels == ("< 0.5", "≥ 0.5") and moved.live == pytest.approx((1 / 3, 2 / 3))


def test_summary_gives_each_feature_its_verdict() -> None:
    doc = summary_dict(drifted())
    assert doc["verdict"] == "too_few_rows" and doc["shifted"] == []
    assert [f["verdict"] for f in doc["features"]] == ["too_few_rows"] * 3
    assert doc["prediction"]["kind"] == "probability"
    assert [f["name"] for f in doc["features"]] == ["sensor", HOSTILE, "steady"]


def test_an_empty_recent_window_shows_the_one_since_start() -> None:
    drift = analyse(Monitor("m", "1.0.0", None).report())
    assert drift.window == "since_start" and drift.prediction is None
    doc = summary_dict(drift)  # the same keys without a baseline
    assert doc["features"] == [] and doc["prediction"] is None and doc["baseline"] is False


# --- text ------------------------------------------------------------------------------------


def test_printable_escapes_terminal_controls_and_bidi_overrides() -> None:
    assert printable("a\x1b[31m\u202eb\n") == "a\\x1b[31m\\u202eb\\n"
    assert printable("débit ≥ 5") == "débit ≥ 5"


def test_text_report_cannot_drive_the_terminal() -> None:
    text = format_text(drifted(model="red\x1b[31m", feature="bell\x07"))
    assert "\x1b" not in text and "\x07" not in text
    assert "red\\x1b[31m 1.0.0" in text and "\nbell\\x07 " in text


def test_sparklines_share_one_scale() -> None:
    # the live 1.0 is the peak: its bar is full, and the baseline's 0.5 is half (rounded up)
    assert sparklines([0.5, 0.5], [1.0, 0.0]) == "▅▅ │ █▁"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (psi_text(None), "—"),
        (psi_text(0.12345), "0.123"),
        (p_value_text(None), "—"),
        (p_value_text(0.0004), "<0.001"),
        (p_value_text(0.04567), "0.046"),
        (percent(0.0456), "4.6%"),
        (points(-0.0001), "+0.0 pp"),  # never -0.0
        (points(0.25), "+25.0 pp"),
    ],
)
def test_cell_formats(text: str, expected: str) -> None:
    assert text == expected


# --- HTML ------------------------------------------------------------------------------------


class Reading(HTMLParser):
    """What a browser would take from the page: tags, attribute values, and the text of each
    element by the tag that holds it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.open: list[str] = []
        self.attrs: dict[str, list[str]] = {}
        self.texts: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag != "meta":  # the page's only void element
            self.open.append(tag)
        for name, value in attrs:
            self.attrs.setdefault(name, []).append(value or "")

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.setdefault(self.open[-1], []).append(data)


def read(page: str) -> Reading:
    reading = Reading()
    reading.feed(page)
    reading.close()
    assert not reading.open
    return reading


def test_escape_covers_both_quotes() -> None:
    assert escape(HOSTILE) == "&quot;&#x27;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;"


def test_hostile_names_reach_the_reader_as_text_only() -> None:
    page = format_html(drifted())
    reading = read(page)
    assert "script" not in reading.tags
    assert "<script" not in page and "\"'>" not in page
    # every place a name is shown, a browser reads back exactly the name
    assert reading.texts["title"][0] == f"Drift: {MODEL} 1.0.0"  # then the SVG tooltips
    assert reading.texts["h1"] == [f"Drift: {MODEL} 1.0.0"]
    assert f"{HOSTILE} " in reading.texts["h2"]
    assert HOSTILE in reading.texts["a"]  # the table's link to its section
    assert f"{HOSTILE}: baseline and live share per bin" in reading.attrs["aria-label"]
    tooltips = [t for t in reading.texts["title"][1:] if t.startswith(HOSTILE)]
    assert tooltips == [
        f"{HOSTILE} < 0.5: baseline 50.0%, live 33.3%",
        f"{HOSTILE} < 0.5: baseline 50.0%, live 33.3%",
        f"{HOSTILE} ≥ 0.5: baseline 50.0%, live 66.7%",
        f"{HOSTILE} ≥ 0.5: baseline 50.0%, live 66.7%",
    ]
    assert set(reading.attrs["href"]) == {"#f0", "#f1", "#f2", "#prediction"}


def test_too_few_rows_get_the_neutral_badge() -> None:
    page = format_html(drifted())
    assert '<span class="level neutral">too_few_rows</span>' in page


def test_bar_chart_escapes_bin_labels_and_turns_them_when_crowded() -> None:
    labels = tuple(f'<b k="{k}">' for k in range(7))
    shares = (1 / 7,) * 7
    histogram = Histogram(
        labels=labels, baseline=shares, live=shares, psi=0.0, p_value=1.0, verdict="ok"
    )
    svg = bar_chart(histogram, "x")
    reading = read(svg)
    assert "b" not in reading.tags
    assert reading.texts["text"][-7:] == list(labels)
    assert svg.count('transform="rotate(-45') == 7
    upright = bar_chart(
        Histogram(
            labels=labels[:6],
            baseline=shares[:6],
            live=shares[:6],
            psi=0.0,
            p_value=1.0,
            verdict="ok",
        ),
        "x",
    )
    assert "rotate" not in upright
