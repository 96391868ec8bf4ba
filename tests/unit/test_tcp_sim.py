"""Two TCP endpoints over the simulated link (tests/unit/simlink.py): acceptance tests.

The link drops, reorders, duplicates and delays; everything is seeded and deterministic.
"Retransmitted segments" are the sender's data retransmissions of every kind (RTO, SACK,
NewReno); "dropped" are the packets carrying payload the data direction of the link lost or
tail-dropped.
"""

from __future__ import annotations

import hashlib
import pathlib
import random
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from simlink import (  # noqa: E402
    BulkSender, LinkConfig, Simulator, Sink, TCPEndpoint, make_pair,
)

from pyslirp.net.tcp_types import TCPConfig  # noqa: E402


def _retransmitted(ep: TCPEndpoint) -> int:
    c = ep.counters
    return c.get("retrans_rto", 0) + c.get("retrans_sack", 0) + c.get("retrans_fast", 0)


def _transfer(size: int, link: LinkConfig, back: LinkConfig, cfg_a: TCPConfig,
              cfg_b: TCPConfig, seed: int, reader_rate=None, until: float = 50_000.0,
              iss_a: int = 1000, iss_b: int = 5000):
    sim = Simulator(seed)
    data = random.Random(seed).randbytes(size)
    sender = BulkSender(data)
    sink = Sink(rate=reader_rate)
    a, b = make_pair(sim, link, back, cfg_a, cfg_b, sender, sink, iss_a=iss_a, iss_b=iss_b)
    a.connect_to(b)
    t0 = time.perf_counter()
    sim.run(until=until, stop=lambda: sink.closed and a.conn.state.name == "CLOSED"
            and b.conn.state.name == "CLOSED")
    wall = time.perf_counter() - t0
    assert hashlib.sha256(sink.data).digest() == hashlib.sha256(data).digest()
    assert a.conn.state.name == "CLOSED" and b.conn.state.name == "CLOSED"
    return sim, a, b, sender, sink, wall


def _lossy(loss: float) -> LinkConfig:
    # 1 Mbit/s, 30-packet queue, 150 ms each way (RTT 300 ms), reordering and duplication.
    return LinkConfig(bandwidth=125_000, delay=0.150, queue_limit=30, loss=loss,
                      reorder=0.03, reorder_delay=0.015, duplicate=0.01)


@pytest.mark.parametrize("seed", [1, 2])
def test_10mb_over_10pct_loss_with_sack(seed):
    link = _lossy(0.10)
    sim, a, b, sender, sink, wall = _transfer(10_000_000, link, _lossy(0.10), TCPConfig(),
                                              TCPConfig(), seed)
    rtx = _retransmitted(a)
    dropped = a.link.dropped_data
    segs = a.link.sent + b.link.sent
    print(f"\n10 MB, 10% loss, SACK, seed {seed}: {sim.now:.0f} s simulated, "
          f"{segs} segments in {wall:.2f} s wall ({segs / wall:.0f} segments/s); "
          f"retransmitted {rtx}, link dropped {dropped} "
          f"(ratio {rtx / dropped:.3f}); reordered {a.link.reordered}, "
          f"duplicated {a.link.duplicated}; ACKs lost {b.link.lost}; "
          f"{a.counters.get('rto', 0)} RTOs")
    assert a.conn.config.sack and a.counters["retrans_sack"] > 0
    assert dropped > 500 and a.link.reordered > 100 and a.link.duplicated > 50
    assert rtx <= 1.3 * dropped
    assert sender.max_buffered <= a.conn.config.snd_buf
    assert sink.max_buffered <= b.conn.config.rcv_buf


def test_10mb_over_1pct_loss_newreno():
    cfg = TCPConfig(sack=False)
    sim, a, b, sender, sink, wall = _transfer(10_000_000, _lossy(0.01), _lossy(0.01), cfg,
                                              cfg, seed=3)
    rtx = _retransmitted(a)
    dropped = a.link.dropped_data
    print(f"\n10 MB, 1% loss, NewReno: {sim.now:.0f} s simulated; retransmitted {rtx}, "
          f"dropped {dropped}; fast recoveries {a.counters.get('fast_recovery', 0)}, "
          f"RTOs {a.counters.get('rto', 0)}")
    assert not a.conn.options.sack_ok and a.counters["retrans_fast"] > 0
    assert "retrans_sack" not in a.counters
    assert rtx <= 2 * dropped


def test_slow_reader_keeps_buffers_bounded():
    # A fast link, a receiving application reading 20 KB/s: the sender must stall on the
    # window (zero-window probing included) without either side's buffers growing.
    link = LinkConfig(bandwidth=1_000_000, delay=0.02, queue_limit=100, loss=0.01)
    cfg_a = TCPConfig(snd_buf=64 * 1024)
    cfg_b = TCPConfig(rcv_buf=32 * 1024)
    sim, a, b, sender, sink, wall = _transfer(600_000, link, link, cfg_a, cfg_b, seed=4,
                                              reader_rate=20_000, until=10_000)
    assert sim.now >= 600_000 / 20_000 - 1
    assert 0 < sender.max_buffered <= 64 * 1024
    assert 0 < sink.max_buffered <= 32 * 1024
    assert a.counters.get("zero_window_probe", 0) + b.counters.get("window_update", 0) > 0


def test_sequence_numbers_wrap_during_transfer():
    link = LinkConfig(bandwidth=500_000, delay=0.05, queue_limit=50, loss=0.02,
                      reorder=0.02, reorder_delay=0.005)
    _transfer(2_000_000, link, link, TCPConfig(), TCPConfig(), seed=5,
              iss_a=2**32 - 500_000, iss_b=2**32 - 3)


def test_timestamps_over_lossy_link():
    cfg = TCPConfig(timestamps=True)
    sim, a, b, *_ = _transfer(1_000_000, _lossy(0.05), _lossy(0.05), cfg, cfg, seed=6)
    assert a.conn.options.ts_ok and b.conn.options.ts_ok


def test_small_mss_and_buffers():
    cfg = TCPConfig(mss=536, rcv_buf=8 * 536, snd_buf=4096)
    link = LinkConfig(bandwidth=5_000, delay=0.1, queue_limit=8, loss=0.03)  # a 57600 line
    _transfer(100_000, link, link, cfg, cfg, seed=7)


def test_bidirectional_transfer_and_simultaneous_close():
    sim = Simulator(8)
    da = random.Random(1).randbytes(300_000)
    db = random.Random(2).randbytes(200_000)
    link = LinkConfig(bandwidth=200_000, delay=0.05, queue_limit=40, loss=0.03)

    class App:
        def __init__(self, data):
            self.sender = BulkSender(data)
            self.sink = Sink()

        def __call__(self, ep):
            self.sender(ep)
            if ep.conn.state.name != "LISTEN":
                self.sink(ep)

    app_a, app_b = App(da), App(db)
    a, b = make_pair(sim, link, link, None, None, app_a, app_b)
    a.connect_to(b)
    sim.run(until=1000, stop=lambda: a.conn.state.name == "CLOSED"
            and b.conn.state.name == "CLOSED")
    assert app_b.sink.data == da and app_a.sink.data == db
    assert a.conn.state.name == b.conn.state.name == "CLOSED"


def test_simultaneous_open_over_link():
    sim = Simulator(9)
    link = LinkConfig(delay=0.05)
    a, b = make_pair(sim, link, link)
    b.port, a.port = 40000, 80          # each connects to the other's port
    a.connect_to(b)
    b.connect_to(a)
    sim.run(until=5)
    assert a.conn.state.name == "ESTABLISHED" and b.conn.state.name == "ESTABLISHED"
    a.conn.send(b"ping", sim.now)
    a.flush()
    sim.run(until=10)
    assert b.conn.read(-1, sim.now) == b"ping"


def test_interactive_writes_nodelay():
    sim = Simulator(10)
    link = LinkConfig(bandwidth=10_000, delay=0.05, loss=0.05)
    keys = [bytes([65 + i % 26]) for i in range(300)]
    sink = Sink()
    a, b = make_pair(sim, link, link, TCPConfig(nodelay=True), None, None, sink)
    a.connect_to(b)
    sim.run(until=1)
    a.conn.interactive = True
    for i, k in enumerate(keys):
        sim.schedule(1 + i * 0.1, lambda k=k: (a.conn.send(k, sim.now), a.flush()))
    sim.run(until=200, stop=lambda: sink.received == len(keys))
    assert sink.data == b"".join(keys)


class _Checked:
    """Wraps an application hook: the connection's invariants hold after every step."""

    def __init__(self, app):
        self.app = app

    def __call__(self, ep):
        if self.app is not None:
            self.app(ep)
        assert ep.conn.check_invariants() == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), size=st.integers(0, 150_000),
       loss=st.floats(0, 0.2), reorder=st.floats(0, 0.2), reorder_delay=st.floats(0, 0.2),
       dup=st.floats(0, 0.1), bandwidth=st.sampled_from([None, 5_000, 100_000, 2_000_000]),
       queue=st.integers(2, 60), delay=st.floats(0.001, 0.3),
       sack=st.booleans(), ts=st.booleans(), nodelay=st.booleans(),
       mss=st.sampled_from([536, 1460]), rcv_buf=st.sampled_from([4000, 20_000, 300_000]),
       snd_buf=st.sampled_from([700, 3000, 64 * 1024]),
       rate=st.sampled_from([None, 30_000]))
def test_random_links_deliver_intact(seed, size, loss, reorder, reorder_delay, dup,
                                     bandwidth, queue, delay, sack, ts, nodelay, mss,
                                     rcv_buf, snd_buf, rate):
    rcv_buf = max(rcv_buf, 2 * mss)
    link = LinkConfig(bandwidth=bandwidth, delay=delay, queue_limit=queue, loss=loss,
                      reorder=reorder, reorder_delay=reorder_delay, duplicate=dup)
    cfg_a = TCPConfig(mss=mss, sack=sack, timestamps=ts, nodelay=nodelay, snd_buf=snd_buf)
    cfg_b = TCPConfig(mss=1460, sack=True, timestamps=True, rcv_buf=rcv_buf)
    sim = Simulator(seed)
    data = random.Random(seed).randbytes(size)
    sender = BulkSender(data)
    sink = Sink(rate=rate)
    a, b = make_pair(sim, link, link, cfg_a, cfg_b, _Checked(sender), _Checked(sink))
    a.connect_to(b)
    sim.run(until=1e6, stop=lambda: sink.closed and a.conn.state.name == "CLOSED"
            and b.conn.state.name == "CLOSED")
    assert sink.data == data
    assert sender.max_buffered <= snd_buf and sink.max_buffered <= rcv_buf


def test_one_octet_send_buffer():
    # One octet per round trip: every loss is an RTO, nothing may stall or overflow.
    link = LinkConfig(bandwidth=10_000, delay=0.05, queue_limit=5, loss=0.1, duplicate=0.05)
    cfg = TCPConfig(snd_buf=1)
    sim, a, b, sender, sink, wall = _transfer(300, link, link, cfg, TCPConfig(), seed=11)
    assert sender.max_buffered == 1
