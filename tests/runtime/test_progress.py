"""The download meter: one line rewritten with \\r, throttled, ended with a newline."""

from __future__ import annotations

import io

import pytest

from edgebundle.runtime.progress import Meter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_rewrites_one_line_at_most_four_times_a_second() -> None:
    out, clock = io.StringIO(), Clock()
    with Meter(out, "downloading m 1.0.0", 2_000_000, clock=clock) as meter:
        for step in range(1, 101):  # 100 reads over 1 s of the fake clock
            clock.now = step / 100
            meter.update(step * 20_000)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    drawings = text.rstrip("\n").split("\r")[1:]
    # the opening line, one every 0.25 s of the 1 s (the first read draws), the closing one
    assert 4 <= len(drawings) <= 7
    assert drawings[0] == "downloading m 1.0.0: 0 bytes of 2.0 MB (0%)"
    assert drawings[-1] == "downloading m 1.0.0: 2.0 MB of 2.0 MB (100%)"


def test_meter_says_failed_when_the_download_fails() -> None:
    out = io.StringIO()
    with pytest.raises(OSError), Meter(out, "downloading m 1.0.0", 5_000) as meter:
        meter.update(1_200)
        raise OSError("connection reset")
    assert out.getvalue().endswith("\rdownloading m 1.0.0: 1.2 kB of 5.0 kB (24%) failed\n")
