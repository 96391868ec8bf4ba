"""The gateway's data path in one process (benchmarks/datapath.py): HDLC, PPP, VJ, the stack and
the service proxy to a loopback service, fed one frame per read as a virtio console delivers.

Run: PYTHONPATH=. pytest benchmarks/test_datapath_bench.py -s. Each direction moves 8 MB once
and records MB/s and the gateway's own per-frame processing time (p50/p99 from its histogram,
19%-wide buckets) in extra_info. The process CPU figure includes the scripted client's share.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import uvloop

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import datapath  # noqa: E402

SIZE = 8_000_000


@pytest.mark.parametrize("tap", ["no tap", "null tap"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_gateway_data_path(benchmark, direction: str, tap: str) -> None:
    """``null tap``: a frame tap that does nothing is attached, the cost of the seam itself."""
    results: list[datapath.Result] = []
    taps = [datapath.NullTap()] if tap == "null tap" else []

    def once() -> None:
        results.append(uvloop.run(datapath.run(direction, SIZE, taps)))

    benchmark.pedantic(once, rounds=1, iterations=1)
    r = results[0]
    assert r.frames_in and r.frames_out  # data moved through the gateway both ways
    info = {
        "MB/s": round(r.bytes_moved / r.seconds / 1e6, 1),
        "process CPU s/MB (client included)": round(r.cpu_seconds / (r.bytes_moved / 1e6), 4),
        "frames in": r.frames_in,
        "frames out": r.frames_out,
        "gateway µs per frame received p50": r.rx["p50_us"],
        "gateway µs per frame received p99": r.rx["p99_us"],
    }
    benchmark.extra_info.update(info)
    print(f"\n{direction} ({tap}): " + ", ".join(f"{k} {v}" for k, v in info.items()))
