"""The fleet's pieces that need no broker: broker URLs, topics, the documents, the outbox's
bound, latency quantiles and drift deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebundle.runtime.errors import FleetError
from edgebundle.runtime.fleet.address import BrokerAddress, Topics, read_password
from edgebundle.runtime.fleet.documents import (
    NOTICE_FORMAT,
    DriftCounts,
    FeatureCounts,
    Notice,
    parse,
    to_bytes,
)
from edgebundle.runtime.fleet.outbox import Outbox
from edgebundle.runtime.fleet.telemetry import drift_delta, quantile
from edgebundle.runtime.monitor.report import FeatureWindow, PredictionWindow, Window
from edgebundle.runtime.serve.metrics import LATENCY_BUCKETS
from edgebundle.runtime.stats import FeatureBaseline


@pytest.mark.parametrize(
    ("url", "tls", "host", "port", "fleet", "user"),
    [
        ("mqtt://broker", False, "broker", 1883, "default", None),
        ("mqtts://broker:9000/shops-eu", True, "broker", 9000, "shops-eu", None),
        ("mqtt://dev%2D1@10.0.0.5/f", False, "10.0.0.5", 1883, "f", "dev-1"),
        ("mqtt://[::1]:1884/", False, "::1", 1884, "default", None),
    ],
)
def test_broker_urls(
    url: str, tls: bool, host: str, port: int, fleet: str, user: str | None
) -> None:
    address = BrokerAddress.parse(url)
    assert (address.tls, address.host, address.port, address.fleet, address.username) == (
        tls, host, port, fleet, user,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://u:pw@broker", "must not hold a password"),
        ("tcp://broker", "mqtt:// or mqtts://"),
        ("mqtt://broker/a/b", "fleet name"),
        ("mqtt://broker/+", "fleet name"),
        ("mqtt://broker?x=1", "mqtt[s]://HOST"),
        ("mqtt://broker:99999", "bad port"),
    ],
)
def test_bad_broker_urls(url: str, message: str) -> None:
    with pytest.raises(FleetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        BrokerAddress.parse(url)


def test_topics_and_the_device_they_name() -> None:
    topics = Topics("shops")
    assert topics.status("d-1") == "edgebundle/shops/devices/d-1/status"
    assert topics.device_of(topics.telemetry("d-1")) == "d-1"
    assert topics.device_of("edgebundle/other/devices/d-1/status") is None
    assert topics.device_of(topics.channel) is None


def test_the_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEBUNDLE_FLEET_PASSWORD", raising=False)
    assert read_password(None) is None
    monkeypatch.setenv("EDGEBUNDLE_FLEET_PASSWORD", "from-env")
    assert read_password(None) == "from-env"
    (tmp_path / "pw").write_text("from-file\nignored\n")
    assert read_password(tmp_path / "pw") == "from-file"
    (tmp_path / "empty").write_text("")
    with pytest.raises(FleetError, match="empty"):
        read_password(tmp_path / "empty")


def test_documents_are_read_strictly() -> None:
    notice = Notice(format=NOTICE_FORMAT, serial=4)
    assert parse(Notice, to_bytes(notice), "notice") == notice
    for bad, message in (
        ({"format": NOTICE_FORMAT, "serial": 0}, "serial"),
        ({"format": NOTICE_FORMAT, "serial": 1, "extra": 1}, "extra"),
        ({"format": "edgebundle.fleet-notice/9", "serial": 1}, "unsupported"),
    ):
        with pytest.raises(FleetError, match=message):
            parse(Notice, json.dumps(bad).encode(), "notice")


def test_the_outbox_keeps_the_newest_reports_within_its_bound(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox", max_reports=3)
    dropped = [outbox.put(f"report {n}".encode()) for n in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [p.read_text() for p in outbox.pending()] == ["report 2", "report 3", "report 4"]


def test_quantiles_are_the_upper_edge_of_their_bucket() -> None:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[0], buckets[4], buckets[-1] = 50, 49, 1
    assert quantile(tuple(buckets), 0.5) == LATENCY_BUCKETS[0]
    assert quantile(tuple(buckets), 0.9) == LATENCY_BUCKETS[4]
    assert quantile(tuple(buckets), 1.0) == LATENCY_BUCKETS[-1]


def test_drift_deltas_are_what_was_counted_since() -> None:
    base = FeatureBaseline(name="a", edges=(0.5,), shares=(0.5, 0.5), missing_rate=0.0)

    def window(
        rows: int, counts: tuple[int, int], missing: int, predicted: tuple[int, int]
    ) -> Window:
        feature = FeatureWindow.of("a", counts, missing, base)
        return Window(
            rows=rows, features=(feature,), prediction=PredictionWindow.of(predicted, (0.5, 0.5))
        )

    before, now = window(3, (1, 2), 0, (2, 1)), window(7, (2, 4), 1, (5, 2))
    delta = drift_delta(now, before)
    assert delta == DriftCounts(
        rows=4, features=(FeatureCounts(name="a", counts=(1, 2), missing=1),), prediction=(3, 1)
    )
    # without a baseline there are rows only
    assert drift_delta(Window(rows=5), Window(rows=2)) == DriftCounts(
        rows=3, features=(), prediction=()
    )
    assert drift_delta(now, None).rows == 7
