"""TCP segment path throughput (pytest-benchmark): segments per second.

Run: PYTHONPATH=. pytest benchmarks/test_tcp_bench.py. Each benchmark records
``segments/s`` (from the median round) in extra_info.
"""

from __future__ import annotations

import pathlib
import random
import sys

from pyslirp.net.tcp import TCPConnection
from pyslirp.net.tcp_segment import ACK, SYN, TCPSegment, build_segment, parse_segment
from pyslirp.net.tcp_types import TCPConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "tests" / "unit"))
from simlink import BulkSender, LinkConfig, Simulator, Sink, make_pair  # noqa: E402

LOCAL = bytes([10, 0, 0, 1])
REMOTE = bytes([10, 0, 0, 2])
MSS = 1460
N = 2000
PAYLOAD = random.Random(9293).randbytes(MSS)


def _record(benchmark, segments: int) -> None:
    benchmark.extra_info["segments"] = segments
    benchmark.extra_info["segments/s"] = round(segments / benchmark.stats.stats.median)


def _established() -> TCPConnection:
    syn = TCPSegment(40000, 80, 5000, 0, SYN, 65535, mss=MSS, wscale=7, sack_permitted=True)
    c = TCPConnection.from_syn(syn, LOCAL, REMOTE, iss=1000, config=TCPConfig(rcv_buf=1 << 22),
                               now=0.0)
    c.accept(0.0)
    c.receive_segment(TCPSegment(40000, 80, 5001, 1001, ACK, 1000), 0.01)
    c.take_segments()
    c.events()
    return c


def test_receive_in_order_data(benchmark):
    """Receiver: in-order full segments, delayed ACKs, the application reading."""
    segs = [TCPSegment(40000, 80, (5001 + i * MSS) & 0xFFFFFFFF, 1001, ACK, 1000, PAYLOAD)
            for i in range(N)]

    def run(c):
        t = 0.02
        for s in segs:
            t += 0.001
            c.receive_segment(s, t)
            c.take_segments()
            c.read(-1, t)

    benchmark.pedantic(run, setup=lambda: ((_established(),), {}), rounds=5, iterations=1)
    _record(benchmark, N)


def test_send_bulk_with_acks(benchmark):
    """Sender: the application writes, an ACK every second segment opens the window."""
    data = PAYLOAD * N

    def run(c):
        t = 0.02
        off = c.send(data, t)
        c.take_segments()
        una = 1001
        while una < 1001 + len(data):
            t += 0.001
            una += 2 * MSS
            c.receive_segment(TCPSegment(40000, 80, 5001, una & 0xFFFFFFFF, ACK, 1000), t)
            if off < len(data):
                off += c.send(memoryview(data)[off:], t)
            c.take_segments()

    benchmark.pedantic(run, setup=lambda: ((_established(),), {}), rounds=5, iterations=1)
    _record(benchmark, N + N // 2)


def test_parse_segment(benchmark):
    raws = [build_segment(TCPSegment(40000, 80, i, 7, ACK, 1000, PAYLOAD[: 100 + i % 1300],
                                     sack_blocks=((1, 2),) if i % 3 == 0 else ()),
                          REMOTE, LOCAL) for i in range(N)]

    def run():
        for r in raws:
            parse_segment(r, REMOTE, LOCAL)

    benchmark(run)
    _record(benchmark, N)


def test_simulated_lossy_transfer(benchmark):
    """Both endpoints, the simulated link and parsing: 2 MB over 10% loss, 300 ms RTT."""
    data = random.Random(1).randbytes(2_000_000)
    counted = {}

    def run():
        sim = Simulator(1)
        sender, sink = BulkSender(data), Sink()
        link = LinkConfig(bandwidth=125_000, delay=0.15, queue_limit=30, loss=0.1,
                          reorder=0.03, reorder_delay=0.015, duplicate=0.01)
        a, b = make_pair(sim, link, link, None, None, sender, sink)
        a.connect_to(b)
        sim.run(stop=lambda: sink.closed and a.conn.state.name == "CLOSED"
                and b.conn.state.name == "CLOSED")
        assert sink.data == data
        counted["segments"] = a.link.sent + b.link.sent

    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, counted["segments"])
