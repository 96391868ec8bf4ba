"""Per-packet processing times: a histogram whose percentiles are within a bucket (19%)."""

from __future__ import annotations

import pytest

from pyslirp.runtime.timing import ProcessingTimes


def test_percentiles_land_in_the_right_bucket() -> None:
    times = ProcessingTimes()
    assert times.stats() == {"packets": 0, "p50_us": None, "p99_us": None}
    times.add(0.000040 * 98, 98)  # 98 packets at 40 µs each
    times.add(0.002, 2)           # 2 slow ones at 1 ms each
    stats = times.stats()
    assert stats["packets"] == 100
    assert 40 <= stats["p50_us"] <= 40 * 1.19
    assert 1000 <= stats["p99_us"] <= 1000 * 1.19


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 1e-3, 100.0])
def test_any_duration_is_counted(seconds: float) -> None:
    times = ProcessingTimes()
    times.add(seconds, 1)
    times.add(seconds, 0)  # nothing handled: nothing counted
    assert times.packets == 1 and times.percentile(1.0) is not None
