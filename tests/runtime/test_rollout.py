"""Staged rollouts: the stable hash that picks devices, shares, and the rollout document."""

from __future__ import annotations

import json

import pytest

from edgebundle.runtime.errors import ChannelError
from edgebundle.runtime.ota.channel import ChannelEntry
from edgebundle.runtime.ota.rollout import (
    ROLLOUT_FORMAT,
    Revoked,
    Rollout,
    Staged,
    bucket,
    parse_rollout,
    parse_share,
    selected,
)
from edgebundle.runtime.semver import Version

DEVICES = [f"shop-{i:03d}" for i in range(200)]
V2 = Version.parse("2.0.0")
ENTRY = ChannelEntry.of("credit", V2, b"bundle bytes")


def staged(share: int, halted: bool = False) -> Staged:
    return Staged(entry=ENTRY, share=share, halted=halted)


def chosen(share: int) -> set[str]:
    return {d for d in DEVICES if selected(d, staged(share))}


def test_a_share_picks_about_that_share_and_growing_it_only_adds() -> None:
    ten, fifty = chosen(1000), chosen(5000)
    assert 10 <= len(ten) <= 30  # 10% of 200, binomial spread
    assert 80 <= len(fifty) <= 120
    assert ten < fifty
    assert chosen(9999) >= fifty


def test_the_hash_is_stable_and_differs_per_version() -> None:
    assert [bucket(d, "credit", V2) for d in DEVICES] == [
        bucket(d, "credit", V2) for d in DEVICES
    ]
    other = {d for d in DEVICES if bucket(d, "credit", Version.parse("3.0.0")) < 1000}
    assert other != chosen(1000)


def test_halted_or_no_device_id_takes_no_part() -> None:
    assert not any(selected(d, staged(9999, halted=True)) for d in DEVICES)
    assert not selected(None, staged(9999))


@pytest.mark.parametrize(
    ("text", "share"), [("10%", 1000), ("2.5%", 250), ("100%", 10000), (" 50% ", 5000)]
)
def test_parse_share(text: str, share: int) -> None:
    assert parse_share(text) == share


@pytest.mark.parametrize("text", ["10", "0%", "101%", "x%", "-5%"])
def test_parse_share_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_share(text)


def test_the_rollout_document_round_trips_and_refuses_contradictions() -> None:
    revoked = Revoked(name="credit", version=Version.parse("1.5.0"), reason="bad scores")
    rollout = Rollout(format=ROLLOUT_FORMAT, serial=7, staged=(staged(1000),), revoked=(revoked,))
    assert parse_rollout(rollout.to_bytes()) == rollout
    both = Rollout(
        format=ROLLOUT_FORMAT,
        serial=7,
        staged=(staged(1000),),
        revoked=(Revoked(name="credit", version=V2, reason="x"),),
    )
    with pytest.raises(Exception, match="staged and revoked"):
        both.to_bytes()
    for share in (0, 10000):
        document = json.loads(rollout.to_bytes())
        document["staged"][0]["share"] = share
        with pytest.raises(ChannelError, match=r"staged\[0\]\.share"):
            parse_rollout(json.dumps(document).encode())
