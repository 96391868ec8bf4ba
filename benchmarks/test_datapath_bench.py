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

from pyslirp.config import PacketCaptureConfig  # noqa: E402
from pyslirp.runtime.capture import PacketCapture  # noqa: E402

SIZE = 8_000_000


async def run_capturing(direction: str, path: pathlib.Path) -> datapath.Result:
    """The data path with packet capture on, rotating as configured by default."""
    settings = PacketCaptureConfig()
    capture = PacketCapture(path, settings.max_bytes, settings.keep)
    capture.start()
    try:
        return await datapath.run(direction, SIZE, [capture])
    finally:
        capture.stop()


@pytest.mark.parametrize("tap", ["no tap", "null tap", "capture", "metrics scraped"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_gateway_data_path(benchmark, tmp_path: pathlib.Path, direction: str, tap: str) -> None:
    """``null tap``: a frame tap that does nothing is attached, the cost of the seam itself.
    ``capture``: packet capture writes every frame to a file in a temporary directory; its
    writes happen once per turn of the loop, after the gateway's own per-frame time is taken,
    so their cost shows in MB/s and CPU per MB. ``metrics scraped``: the metrics observer is
    subscribed and /metrics rendered every 100 ms (Prometheus scrapes every 15 s), the cost of
    monitoring on."""
    results: list[datapath.Result] = []

    def once() -> None:
        if tap == "capture":
            results.append(uvloop.run(run_capturing(direction, tmp_path / "bench.pcap")))
        elif tap == "metrics scraped":
            results.append(uvloop.run(datapath.run(direction, SIZE, scrape=0.1)))
        else:
            taps = [datapath.NullTap()] if tap == "null tap" else []
            results.append(uvloop.run(datapath.run(direction, SIZE, taps)))

    benchmark.pedantic(once, rounds=1, iterations=1)
    r = results[0]
    assert r.frames_in and r.frames_out  # data moved through the gateway both ways
    info = {
        "MB/s": round(r.bytes_moved / r.seconds / 1e6, 1),
        "process CPU s/MB (client included)": round(r.cpu_seconds / (r.bytes_moved / 1e6), 4),
        "process CPU µs per frame (client included)": round(r.cpu_seconds / (r.frames_in + r.frames_out) * 1e6, 1),
        "frames in": r.frames_in,
        "frames out": r.frames_out,
        "gateway µs per frame received p50": r.rx["p50_us"],
        "gateway µs per frame received p99": r.rx["p99_us"],
    }
    benchmark.extra_info.update(info)
    print(f"\n{direction} ({tap}): " + ", ".join(f"{k} {v}" for k, v in info.items()))
