"""Flow control, windows, SACK, loss recovery, timers and robustness, with hand-built
segments. Expected values are worked out here from the RFC formulas."""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from simlink import Wire  # noqa: E402

from pyslirp.net.tcp import TCPConnection  # noqa: E402
from pyslirp.net.tcp_segment import ACK, FIN, RST, SYN, URG, TCPSegment  # noqa: E402
from pyslirp.net.tcp_types import Aborted, Closed, SendSpace, TCPConfig  # noqa: E402

ISS = 1000
PISS = 5000
MSS = 1460


def connect(cfg: TCPConfig = TCPConfig(), window: int = 1000, t_ack: float = 0.01,
            **synopts):
    """Passive connection, established at ``t_ack`` (so SRTT = t_ack). Returns
    (wire, conn, peer next seq, our next seq)."""
    w = Wire()
    o = {"mss": MSS, "wscale": 7, "sack_permitted": True}
    o.update(synopts)
    o = {k: v for k, v in o.items() if v is not None}
    c = TCPConnection.from_syn(w.seg(SYN, PISS, 0, 65535, **o), Wire.LOCAL, Wire.REMOTE,
                               iss=ISS, config=cfg, now=0.0)
    w.conn = c
    c.accept(0.0)
    w.out()
    w.feed(w.seg(ACK, PISS + 1, ISS + 1, window), t_ack)
    w.take_events()
    return w, c, PISS + 1, ISS + 1


# --------------------------------------------------------------------------- windows

def test_window_scale_shift_from_buffer():
    # RFC 7323 §2.3: the smallest shift with rcv_buf >> shift <= 65535.
    for buf, shift in ((65535, 0), (65536, 1), (256 * 1024, 3), (1 << 20, 5), (1 << 30, 14)):
        w, c, p, q = connect(TCPConfig(rcv_buf=buf))
        assert c.receiver.rcv_wscale == shift


def test_window_scaling_math():
    w, c, p, q = connect()
    assert c.sender.snd_wnd == 1000 << 7                           # peer's shift applied
    (a,) = w.feed(w.seg(ACK, p, q, 1000, b"x" * 2 * MSS), 0.1)   # 2 segments: ACK now
    unread = 2 * MSS
    assert a.window * 8 + unread <= 256 * 1024               # never beyond the buffer
    assert a.window * 8 + unread > 256 * 1024 - 16           # nor needlessly small
    assert a.window == math.ceil((256 * 1024 - 7 - unread) / 8)


def test_peer_window_scale_clamped_to_14():
    w, c, p, q = connect(wscale=15)
    assert c.options.snd_wscale == 14                                # RFC 7323 §2.3


def test_no_window_scaling_unless_both_offer():
    w, c, p, q = connect(wscale=None)
    assert c.options.snd_wscale == 0 and c.receiver.rcv_wscale == 0
    (a,) = w.feed(w.seg(ACK, p, q, 1000, b"x" * 2 * MSS), 0.1)
    assert a.window == 65535 and c.sender.snd_wnd == 1000


def test_receive_buffer_flow_control_and_window_update():
    buf = 4 * MSS
    w, c, p, q = connect(TCPConfig(rcv_buf=buf), wscale=None)
    (a,) = w.feed(w.seg(ACK, p, q, 1000, b"a" * 2 * MSS), 0.1)
    assert a.window == buf - 2 * MSS
    (a,) = w.feed(w.seg(ACK, p + 2 * MSS, q, 1000, b"b" * 2 * MSS), 0.2)
    assert a.window == 0
    # Beyond the (zero) window: dropped, counted, answered with the same window.
    (a,) = w.feed(w.seg(ACK, p + 4 * MSS, q, 1000, b"c" * MSS), 0.3)
    assert a.window == 0 and a.ack == p + 4 * MSS
    assert c.counters()["data_beyond_window"] == MSS
    assert c.rcv_buffered == buf
    # Reading less than min(MSS, buf/2) reopens nothing (receiver SWS avoidance).
    c.read(1000, 0.4)
    assert w.out() == []
    c.read(1000, 0.5)
    (u,) = w.out()
    assert u.flags == ACK and u.window == 2000 and c.counters()["window_update"] == 1


def test_reading_after_the_handshake_sends_no_window_update():
    """The SYN-ACK's window is unscaled (64 KB of a 256 KB buffer); a read that could widen it
    sends nothing by itself: the peer is not held back, and the next ACK carries the window."""
    w, c, p, q = connect()
    assert c.receiver.rcv_adv - c.receiver.rcv_nxt == 65535
    w.feed(w.seg(ACK, p, q, 1000, b"x"), 0.1)              # 1 byte: the ACK is delayed
    assert c.read(-1, 0.1) == b"x" and w.out() == []
    c.send(b"y", 0.11)
    (d,) = w.out()
    assert d.ack == p + 1 and d.window << c.receiver.rcv_wscale > 65535
    assert "window_update" not in c.counters()


def test_zero_window_probe_from_peer_gets_ack():
    w, c, p, q = connect(TCPConfig(rcv_buf=2 * MSS), wscale=None)
    w.feed(w.seg(ACK, p, q, 1000, b"x" * 2 * MSS), 0.1)
    (a,) = w.feed(w.seg(ACK, p + 2 * MSS, q, 1000, b"y"), 0.5)   # 1-octet probe
    assert a.ack == p + 2 * MSS and a.window == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["data", "ooo", "read"]), st.integers(1, 3000)),
                max_size=40), st.sampled_from([4 * MSS, 20000, 100_000]),
       st.booleans())
def test_right_edge_never_moves_left_and_buffer_bounded(ops, buf, ws):
    w, c, p, q = connect(TCPConfig(rcv_buf=buf), wscale=7 if ws else None)
    shift = c.receiver.rcv_wscale
    edge = None
    t = 0.1
    for op, n in ops:
        t += 0.01
        nxt = c.receiver.rcv_nxt
        if op == "data":
            segs = w.feed(w.seg(ACK, nxt, q, 1000, b"d" * min(n, MSS)), t)
        elif op == "ooo":
            segs = w.feed(w.seg(ACK, nxt + 2 * MSS, q, 1000, b"o" * min(n, MSS)), t)
        else:
            c.read(n, t)
            segs = w.out()
        c.handle_timer(t + 1)
        t += 1
        segs += w.out()
        for s in segs:
            right = (s.ack + (s.window << shift))
            if edge is not None:
                assert right >= edge                 # RFC 9293 §3.8.6.2.2
            edge = right
        assert c.rcv_buffered <= buf


# --------------------------------------------------------------------------- persist

def test_zero_window_persist_probe_and_backoff():
    w, c, p, q = connect(window=0)
    assert c.send(b"z" * 100, 1.0) == 100
    assert w.out() == []
    rto = c.rtt.srtt + max(4 * c.rtt.rttvar, 0.2)                    # 0.01 + 0.2
    assert c.next_deadline() == pytest.approx(1.0 + rto)
    c.handle_timer(1.0 + rto)
    (probe,) = w.out()
    assert probe.seq == q and probe.payload == b"z"          # one octet beyond the window
    assert c.next_deadline() == pytest.approx(1.0 + rto + 2 * rto)
    # The peer still has no room: ACK without the octet, window 0.
    assert w.feed(w.seg(ACK, p, q, 0), 1.5) == []
    c.handle_timer(1.0 + 3 * rto)
    (probe2,) = w.out()
    assert probe2.seq == q and probe2.payload == b"z"
    assert c.next_deadline() == pytest.approx(1.0 + 3 * rto + 4 * rto)
    assert c.counters()["zero_window_probe"] == 2
    assert "retrans_rto" not in c.counters()
    # The window opens: everything goes, from the probed octet on.
    segs = w.feed(w.seg(ACK, p, q, 10), 3.0)
    assert b"".join(s.payload for s in segs) == b"z" * 100 and segs[0].seq == q


def test_persist_probe_accepted_by_peer():
    w, c, p, q = connect(window=0)
    c.send(b"ab", 1.0)
    c.handle_timer(c.next_deadline())
    (probe,) = w.out()
    w.feed(w.seg(ACK, p, q + 1, 0), 1.5)                    # took the octet, still full
    c.handle_timer(c.next_deadline())
    (probe2,) = w.out()
    assert probe2.seq == q + 1 and probe2.payload == b"b"


def test_sender_sws_avoidance_waits_for_usable_window():
    # RFC 9293 §3.8.6.2.1: no small segment into a small window while data is in flight.
    w, c, p, q = connect(TCPConfig(nodelay=True), window=40, wscale=None)  # 40 octets
    c.send(b"x" * 100, 1.0)
    (s,) = w.out()
    assert len(s.payload) == 40      # >= half of the max window offered (40): allowed


# --------------------------------------------------------------------------- SACK

def test_sack_blocks_generated_most_recent_first():
    w, c, p, q = connect()
    (a,) = w.feed(w.seg(ACK, p + 1000, q, 1000, b"x" * 100), 0.1)
    assert a.ack == p and a.sack_blocks == ((p + 1000, p + 1100),)
    (a,) = w.feed(w.seg(ACK, p + 2000, q, 1000, b"x" * 100), 0.2)
    assert a.sack_blocks == ((p + 2000, p + 2100), (p + 1000, p + 1100))
    (a,) = w.feed(w.seg(ACK, p + 1100, q, 1000, b"x" * 50), 0.3)       # extends block 1
    assert a.sack_blocks == ((p + 1000, p + 1150), (p + 2000, p + 2100))
    (a,) = w.feed(w.seg(ACK, p, q, 1000, b"y" * 1000), 0.4)           # fills the hole
    assert a.ack == p + 1150 and a.sack_blocks == ((p + 2000, p + 2100),)
    (a,) = w.feed(w.seg(ACK, p + 1150, q, 1000, b"z" * 850), 0.5)
    assert a.ack == p + 2100 and a.sack_blocks == ()
    assert c.read(-1, 0.5) == b"y" * 1000 + b"x" * 150 + b"z" * 850 + b"x" * 100


def test_at_most_four_sack_blocks():
    w, c, p, q = connect()
    for i in range(6):
        (a,) = w.feed(w.seg(ACK, p + 1000 * (i + 1), q, 1000, b"x" * 10), 0.1 + i / 100)
    assert len(a.sack_blocks) == 4
    assert a.sack_blocks[0] == (p + 6000, p + 6010)


def _send_flight(w, c, n, t=1.0):
    c.send(b"d" * (n * MSS), t)
    segs = w.out()
    assert [len(s.payload) for s in segs] == [MSS] * n
    return segs


def test_sack_recovery_retransmits_only_the_hole():
    w, c, p, q = connect()
    _send_flight(w, c, 10)
    # Segment 0 lost; the peer SACKs 1..3: three SACKed segments above it -> lost
    # (RFC 6675 IsLost), fast recovery with ssthresh = cwnd = FlightSize/2.
    segs = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, q + 2 * MSS),)), 1.3)
    segs += w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, q + 3 * MSS),)), 1.3)
    assert segs == []                                       # two SACKed: not yet
    segs = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, q + 4 * MSS),)), 1.31)
    assert [(s.seq, len(s.payload)) for s in segs] == [(q, MSS)]
    ctr = c.counters()
    assert ctr["fast_recovery"] == 1 and ctr["retrans_sack"] == 1
    assert c.congestion.ssthresh == c.congestion.cwnd == 10 * MSS // 2
    # More SACKs: nothing else is retransmitted (segments 4..9 are in flight).
    segs = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, q + 9 * MSS),)), 1.32)
    assert all(s.seq >= q + 10 * MSS for s in segs)
    # The retransmission arrives: cumulative ACK of everything ends recovery.
    w.feed(w.seg(ACK, p, q + 10 * MSS, 1000), 1.6)
    assert c.info()["ca_state"] == "open" and c.congestion.cwnd == 5 * MSS
    assert c.counters()["retrans_sack"] == 1


def test_sack_lost_retransmission_detected():
    w, c, p, q = connect()
    c.send(b"d" * (30 * MSS), 1.0)
    w.out()                                                  # 10 segments (IW)
    (rx,) = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, q + 4 * MSS),)), 1.3)
    assert rx.seq == q                                       # retransmission of segment 0
    later = q + 10 * MSS
    segs = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, later),)), 1.5)
    assert segs and segs[0].seq == later                     # new data, sent at 1.5
    assert "lost_retransmit" not in c.counters()
    # A segment sent 0.2 s after the retransmission is SACKed, the retransmission is not:
    # it was lost too (RACK, RFC 8985 §6.2) and goes again without waiting for the RTO.
    segs = w.feed(w.seg(ACK, p, q, 1000, sack_blocks=((q + MSS, later + MSS),)), 1.7)
    assert segs[0].seq == q
    ctr = c.counters()
    assert ctr["lost_retransmit"] == 1 and ctr["retrans_sack"] == 2
    assert "rto" not in ctr


def test_dsack_and_invalid_sack_blocks_are_ignored():
    w, c, p, q = connect()
    _send_flight(w, c, 4)
    w.feed(w.seg(ACK, p, q + MSS, 1000, sack_blocks=((q, q + MSS),)), 1.2)           # D-SACK
    w.feed(w.seg(ACK, p, q + MSS, 1000, sack_blocks=((q + 2 * MSS, q + 99 * MSS),)), 1.2)
    ctr = c.counters()
    assert ctr["dsack_received"] == 1 and ctr["sack_invalid"] == 1


# --------------------------------------------------------------------------- NewReno

def test_newreno_fast_retransmit_and_partial_ack():
    w, c, p, q = connect(sack_permitted=None)
    c.send(b"d" * (12 * MSS), 1.0)
    w.out()                                                 # 10 segments (IW 10)
    # Segments 0 and 2 lost. Dup ACKs for 1, 3, 4: the third triggers fast retransmit.
    # (The first two send new data: limited transmit, RFC 3042.)
    new = []
    for i in range(2):
        new += w.feed(w.seg(ACK, p, q, 1000), 1.3 + i / 100)
    assert [s.seq for s in new] == [q + 10 * MSS, q + 11 * MSS]
    (rx,) = w.feed(w.seg(ACK, p, q, 1000), 1.32)
    assert rx.seq == q and len(rx.payload) == MSS
    assert c.congestion.ssthresh == 6 * MSS and c.counters()["retrans_fast"] == 1
    # Partial ACK (RFC 6582 §3.2 step 5): up to segment 2, which is resent at once.
    segs = w.feed(w.seg(ACK, p, q + 2 * MSS, 1000), 1.6)
    assert segs[0].seq == q + 2 * MSS
    assert c.counters()["retrans_fast"] == 2
    # Full ACK: recovery over, cwnd = ssthresh.
    w.feed(w.seg(ACK, p, q + 12 * MSS, 1000), 1.9)
    assert c.info()["ca_state"] == "open" and c.congestion.cwnd == c.congestion.ssthresh


# --------------------------------------------------------------------------- Nagle

def test_nagle_holds_small_segments_while_unacked():
    w, c, p, q = connect()
    c.send(b"a", 1.0)
    assert [s.payload for s in w.out()] == [b"a"]
    c.send(b"b", 1.1)
    c.send(b"c", 1.2)
    assert w.out() == []
    segs = w.feed(w.seg(ACK, p, q + 1, 1000), 1.3)
    assert [s.payload for s in segs] == [b"bc"]


def test_nodelay_sends_at_once():
    w, c, p, q = connect()
    c.nodelay = True
    for ch in b"abc":
        c.send(bytes([ch]), 1.0)
    assert [s.payload for s in w.out()] == [b"a", b"b", b"c"]


def test_interactive_marking():
    w, c, p, q = connect()
    c.send(b"k", 1.0)
    c.send(b"x" * 5000, 1.0)
    out = c.take_segments()
    assert out[0].interactive and not out[1].interactive
    c.interactive = True
    w.feed(w.seg(ACK, p, q + 5001, 1000), 1.1)
    c.send(b"x" * 3000, 1.2)
    assert all(o.interactive for o in c.take_segments())


# --------------------------------------------------------------------------- delayed ACK

def test_delayed_ack_timing():
    w, c, p, q = connect()
    assert w.feed(w.seg(ACK, p, q, 1000, b"x" * MSS), 1.0) == []
    assert c.next_deadline() == pytest.approx(1.04)
    c.handle_timer(1.04)
    (a,) = w.out()
    assert a.ack == p + MSS and c.counters()["delayed_ack"] == 1
    # Every second full-sized segment is acknowledged at once (RFC 5681 §4.2).
    assert w.feed(w.seg(ACK, p + MSS, q, 1000, b"x" * MSS), 2.0) == []
    (a,) = w.feed(w.seg(ACK, p + 2 * MSS, q, 1000, b"x" * MSS), 2.01)
    assert a.ack == p + 3 * MSS
    # Out-of-order: at once.
    (a,) = w.feed(w.seg(ACK, p + 4 * MSS, q, 1000, b"x" * MSS), 2.02)
    assert a.ack == p + 3 * MSS


def test_ack_piggybacks_on_data():
    w, c, p, q = connect()
    w.feed(w.seg(ACK, p, q, 1000, b"x" * 10), 1.0)
    c.send(b"reply", 1.01)
    (d,) = w.out()
    assert d.payload == b"reply" and d.ack == p + 10
    assert c.next_deadline() == pytest.approx(1.01 + c.rtt.rto())   # only the RTO


# --------------------------------------------------------------------------- RTO

def test_rtt_estimation_rfc6298():
    w, c, p, q = connect(t_ack=0.1)                 # first sample R = 0.1
    assert c.rtt.srtt == pytest.approx(0.1) and c.rtt.rttvar == pytest.approx(0.05)
    c.send(b"x" * 10, 1.0)
    w.out()
    w.feed(w.seg(ACK, p, q + 10, 1000), 1.3)        # R' = 0.3
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)
    srtt = 0.875 * 0.1 + 0.125 * 0.3
    assert c.rtt.rttvar == pytest.approx(rttvar) and c.rtt.srtt == pytest.approx(srtt)
    assert c.info()["rto"] == pytest.approx(srtt + max(4 * rttvar, 0.2))


def test_rto_backoff_and_give_up():
    w, c, p, q = connect(TCPConfig(max_retries=4))
    rto = 0.01 + 0.2
    c.send(b"x" * 10, 1.0)
    w.out()
    t = 1.0
    fired = []
    for k in range(4):
        d = c.next_deadline()
        fired.append(d - t)
        t = d
        c.handle_timer(t)
        (r,) = w.out()
        assert r.seq == q and r.payload == b"x" * 10
    assert fired == pytest.approx([rto, 2 * rto, 4 * rto, 8 * rto])   # RFC 6298 §5.5
    assert c.counters()["retrans_rto"] == 4 and c.congestion.cwnd == c.options.eff_mss   # RFC 5681 LW
    c.handle_timer(c.next_deadline())
    (r,) = w.out()
    assert r.flags & RST
    assert w.take_events()[-2:] == [Aborted("timeout"), Closed()]


def test_rto_capped_at_max():
    w, c, p, q = connect(TCPConfig(max_rto=3.0, max_retries=10))
    c.send(b"x", 0.0)
    w.out()
    t = 0.0
    for _ in range(6):
        t = c.next_deadline()
        c.handle_timer(t)
    assert c.next_deadline() - t == pytest.approx(3.0)


def test_karn_no_sample_from_retransmitted_segment():
    w, c, p, q = connect()
    c.send(b"x" * 10, 1.0)
    w.out()
    c.handle_timer(c.next_deadline())
    w.out()
    srtt = c.rtt.srtt
    w.feed(w.seg(ACK, p, q + 10, 1000), 5.0)
    assert c.rtt.srtt == srtt


def test_rto_does_not_resend_what_is_in_flight():
    # After an RTO only the head and segments that should have been acknowledged by now
    # are resent (RFC 6675 §5.1 care; no go-back-N).
    w, c, p, q = connect(TCPConfig(initial_window=4))
    c.send(b"d" * (4 * MSS), 1.0)
    w.out()
    w.feed(w.seg(ACK, p, q + MSS, 1000), 1.2)            # cwnd 5: one more goes at 1.2
    c.send(b"e" * MSS, 1.2)
    w.out()
    c.handle_timer(c.next_deadline())
    segs = w.out()
    assert [s.seq for s in segs] == [q + MSS]


# --------------------------------------------------------------------------- buffers

def test_send_buffer_bound_and_send_space_event():
    w, c, p, q = connect(TCPConfig(snd_buf=10_000))
    assert c.send(b"x" * 25_000, 1.0) == 10_000
    assert c.send_space == 0 and c.send(b"y", 1.0) == 0
    assert c.send_buffered == 10_000
    w.out()
    w.feed(w.seg(ACK, p, q + 3 * MSS, 1000), 1.2)
    assert SendSpace(3 * MSS) in w.take_events()
    assert c.send_space == 3 * MSS


def test_urgent_data_is_inline():
    w, c, p, q = connect()
    w.feed(w.seg(ACK | URG, p, q, 1000, b"!x", urgent=1), 1.0)
    assert c.read(-1, 1.0) == b"!x" and c.counters()["urg_ignored"] == 1


# --------------------------------------------------------------------------- timestamps

def test_timestamps_negotiated_rttm_and_paws():
    cfg = TCPConfig(timestamps=True)
    w = Wire()
    syn = w.seg(SYN, PISS, 0, 65535, mss=MSS, ts_val=100, ts_ecr=0)
    c = TCPConnection.from_syn(syn, Wire.LOCAL, Wire.REMOTE, iss=ISS, config=cfg, now=10.0)
    w.conn = c
    c.accept(10.0)
    (sa,) = w.out()
    assert sa.ts_val is not None and sa.ts_ecr == 100
    w.feed(w.seg(ACK, PISS + 1, ISS + 1, 1000, ts_val=101, ts_ecr=sa.ts_val), 10.05)
    assert c.options.eff_mss == MSS - 12                              # RFC 9293 §3.7.1
    c.send(b"x" * 10, 11.0)
    (d,) = w.out()
    assert d.ts_ecr == 101
    # RTTM (RFC 7323 §4): the sample is now - TSecr, even for a retransmission.
    c.handle_timer(c.next_deadline())
    w.out()
    w.feed(w.seg(ACK, PISS + 1, ISS + 11, 1000, ts_val=102, ts_ecr=d.ts_val), 11.25)
    assert c.rtt.srtt < 0.2 and c.rtt.srtt > 0.03
    # PAWS (RFC 7323 §5.3): an older TSval is dropped with an ACK.
    (a,) = w.feed(w.seg(ACK, PISS + 1, ISS + 11, 1000, b"old", ts_val=50, ts_ecr=0), 12.0)
    assert c.readable == 0 and c.counters()["paws_rejected"] == 1 and a.flags == ACK


# --------------------------------------------------------------------------- robustness

def _conn_in(state: str):
    w, c, p, q = connect()
    if state == "FIN_WAIT_1":
        c.send(b"pending" * 100, 0.5)
        c.shutdown_write(0.5)
    elif state == "CLOSE_WAIT":
        w.feed(w.seg(FIN | ACK, p, q, 1000), 0.5)
    elif state == "LISTEN":
        w = Wire()
        c = TCPConnection.from_syn(w.seg(SYN, PISS, 0, 100), Wire.LOCAL, Wire.REMOTE, iss=ISS)
        w.conn = c
    elif state == "SYN_SENT":
        w = Wire()
        c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS)
        w.conn = c
        c.connect(0.0)
    elif state == "ESTABLISHED":
        c.send(b"q" * 50_000, 0.5)
    w.out()
    return w, c


_u32 = st.integers(0, 2**32 - 1)
_near = st.integers(-70000, 70000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["LISTEN", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "CLOSE_WAIT"]),
       st.lists(st.tuples(st.integers(0, 255), st.one_of(_u32, _near), st.one_of(_u32, _near),
                          st.integers(0, 0xFFFF), st.binary(max_size=80),
                          st.lists(st.tuples(st.one_of(_u32, _near), st.one_of(_u32, _near)),
                                   max_size=4),
                          st.none() | _u32),
                min_size=1, max_size=25))
def test_random_segments_never_raise(state, segs):
    w, c = _conn_in(state)
    p = c.receiver.rcv_nxt
    q = c.sender.snd_una
    t = 1.0
    for flags, ds, da, wnd, payload, sack, ts in segs:
        t += 0.05
        seg = TCPSegment(40000, 80, (p + ds) & 0xFFFFFFFF, (q + da) & 0xFFFFFFFF, flags, wnd,
                         payload, sack_blocks=tuple((a & 0xFFFFFFFF, b & 0xFFFFFFFF)
                                                    for a, b in sack),
                         ts_val=ts, ts_ecr=ts)
        c.receive_segment(seg, t)
        w.out()
        d = c.next_deadline()
        if d is not None and d <= t + 0.05:
            c.handle_timer(t + 0.05)
            w.out()
        assert c.check_invariants() == []
        c.read(-1, t)
    # Timers keep working after anything.
    for _ in range(50):
        d = c.next_deadline()
        if d is None:
            break
        c.handle_timer(d)
        w.out()
