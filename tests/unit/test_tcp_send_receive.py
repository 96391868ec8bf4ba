"""Sender and Receiver (pyslirp/net/tcp_send.py, tcp_receive.py) on their own, with the real
parts they compose (options, RTT estimator, NewReno, scoreboard) but no connection: the send
buffer, what an ACK does to the parts, the receive window and reassembly. SMSS is 1000."""

from __future__ import annotations

import pytest

from pyslirp.net.tcp_congestion import CA_LOSS, CA_OPEN, CA_RECOVERY, NewReno
from pyslirp.net.tcp_options import NegotiatedOptions
from pyslirp.net.tcp_receive import ReassemblyPool, Receiver
from pyslirp.net.tcp_rtt import RTTEstimator
from pyslirp.net.tcp_scoreboard import Scoreboard
from pyslirp.net.tcp_segment import ACK, FIN, SYN, TCPSegment
from pyslirp.net.tcp_send import Sender
from pyslirp.net.tcp_types import TCPConfig

SMSS = 1000
ISS = 1000
UNA = ISS + 1
DATA = bytes(range(256)) * 64          # 16384 octets


def sender(sack: bool = True, snd_buf: int = 64 * 1024):
    cfg = TCPConfig(mss=SMSS, sack=sack, snd_buf=snd_buf)
    ctr: dict = {}
    opts = NegotiatedOptions(cfg, ISS, 0.0)
    opts.agree(TCPSegment(40000, 80, 5000, 0, SYN, 65535, mss=SMSS, sack_permitted=sack), 0.0)
    rtt = RTTEstimator(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
    cc = NewReno(SMSS, cfg.initial_window)
    sb = Scoreboard(ISS, cfg.dup_thresh, ctr)
    snd = Sender(ISS, snd_buf, opts, rtt, cc, sb, ctr)
    snd.snd_una = snd.snd_nxt = UNA     # the handshake's SYN is acknowledged
    snd.open_window(65535, 5001, UNA)
    snd.on_established(False)
    return snd, ctr


def send_segments(snd: Sender, n: int, now: float = 0.0) -> None:
    snd.queue(DATA[: n * SMSS])
    for _ in range(n):
        snd.take_new(SMSS, 0, now)


def ack(snd: Sender, ack_no: int, now: float, sack: tuple = (), is_dup: bool = False) -> int:
    seg = TCPSegment(80, 40000, 5001, ack_no, ACK, 65535, sack_blocks=sack)
    return snd.on_ack(ack_no, seg, now, is_dup)


# ---------------------------------------------------------------------------- the send buffer

def test_queue_is_bounded_by_the_buffer():
    snd, _ = sender(snd_buf=4000)
    assert snd.queue(DATA[:5000]) == 4000
    assert snd.blocked
    assert snd.space() == 0
    assert snd.unsent() == 4000
    assert snd.queue(b"more") == 0


def test_take_new_records_and_returns_the_payload():
    snd, _ = sender()
    snd.queue(DATA[:2500])
    assert bytes(snd.take_new(SMSS, 0, 0.5)) == DATA[:SMSS]
    assert snd.snd_nxt == UNA + SMSS
    assert snd.unsent() == 1500
    assert bytes(snd.take_new(1500, FIN, 0.6)) == DATA[SMSS:2500]
    assert snd.fin_sent and snd.fin_seq == UNA + 2500
    assert snd.snd_nxt == UNA + 2501                     # the FIN takes a sequence number
    last = snd.scoreboard.records[-1]
    assert (last.seq, last.end, last.fin, last.xmit) == (UNA + SMSS, UNA + 2501, 1, 0.6)
    assert bytes(snd.payload(last)) == DATA[SMSS:2500]   # the FIN is not in the buffer
    assert snd.check_invariants(False) == []


def test_window_update_follows_the_wl1_wl2_rule():
    # RFC 9293 §3.10.7.4: only a segment newer than the last update (SEG.SEQ, then SEG.ACK).
    snd, _ = sender()
    snd.update_window(5001, UNA, 1000)
    assert snd.snd_wnd == 1000
    snd.update_window(5000, UNA + 10, 9000)              # older SEG.SEQ: ignored
    assert snd.snd_wnd == 1000
    snd.update_window(5001, UNA + 10, 2000)
    assert (snd.snd_wnd, snd.snd_wl1, snd.snd_wl2) == (2000, 5001, UNA + 10)
    assert snd.max_snd_wnd == 65535


# ---------------------------------------------------------------------------- ACKs

def test_ack_frees_the_buffer_samples_the_rtt_and_grows_the_window():
    snd, _ = sender(snd_buf=4000)
    send_segments(snd, 4, now=0.0)
    snd.congestion.cwnd_limited = True
    cwnd = snd.congestion.cwnd
    space = ack(snd, UNA + 2 * SMSS, 0.25)
    assert snd.snd_una == UNA + 2 * SMSS
    assert len(snd.buf) == 2 * SMSS and snd.buf_seq == UNA + 2 * SMSS
    assert space == -1                                  # the application was never refused
    assert snd.rtt.srtt == pytest.approx(0.25)          # the newest segment acked, sent at 0
    assert snd.rtt_sample == pytest.approx(0.25)
    assert snd.congestion.cwnd == cwnd + 2 * SMSS       # slow start, L = 2
    assert snd.in_flight() == 2 * SMSS
    assert snd.check_invariants(False) == []


def test_ack_reports_room_to_a_refused_application():
    snd, _ = sender(snd_buf=4000)
    assert snd.queue(DATA[:6000]) == 4000
    for _ in range(4):
        snd.take_new(SMSS, 0, 0.0)
    assert ack(snd, UNA + SMSS, 0.1) == 1000            # a quarter of the buffer is free
    assert not snd.blocked


def test_sack_loss_enters_fast_recovery():
    # RFC 6675: three SACKed segments above the first: it is lost, recovery begins with
    # ssthresh = cwnd = FlightSize / 2, and the hole is to be resent at once (4.3).
    snd, ctr = sender()
    send_segments(snd, 10)
    block = (UNA + SMSS, UNA + 4 * SMSS)
    ack(snd, UNA, 0.3, sack=(block,), is_dup=True)
    cc = snd.congestion
    assert cc.state == CA_RECOVERY
    assert cc.ssthresh == cc.cwnd == 5 * SMSS
    assert cc.recover == UNA + 10 * SMSS
    assert snd.force_rtx
    assert ctr["fast_recovery"] == 1 and ctr["dup_ack"] == 1
    assert snd.scoreboard.next_lost(snd.snd_nxt).seq == UNA
    assert snd.in_flight() == 10 * SMSS - 3 * SMSS - SMSS
    assert snd.check_invariants(False) == []


def test_newreno_third_duplicate_ack_is_a_fast_retransmit():
    snd, ctr = sender(sack=False)
    send_segments(snd, 10)
    for i in range(2):
        ack(snd, UNA, 0.3 + i * 0.01, is_dup=True)
        assert snd.congestion.state == CA_OPEN
    ack(snd, UNA, 0.33, is_dup=True)
    assert snd.congestion.state == CA_RECOVERY
    assert snd.congestion.ssthresh == 5 * SMSS
    assert snd.scoreboard.first().lost
    assert ctr["dup_ack"] == 3 and ctr["fast_recovery"] == 1
    assert snd.in_flight() == 10 * SMSS - 3 * SMSS - SMSS


def test_timeout_collapses_the_window_and_backs_off():
    snd, _ = sender()
    send_segments(snd, 10, now=0.0)
    snd.on_timeout(1.0)
    assert snd.congestion.state == CA_LOSS
    assert snd.congestion.cwnd == SMSS
    assert snd.congestion.ssthresh == 5 * SMSS
    assert snd.rtt.backoff == 1
    assert snd.rtt.rto() == 2.0
    # No RTT sample yet: segments sent more than the initial RTO (1 s) ago are lost: all ten.
    assert snd.scoreboard.lost_bytes == 10 * SMSS
    assert snd.in_flight() == 0
    assert snd.force_rtx
    assert snd.check_invariants(False) == []


# ---------------------------------------------------------------------------- the receiver

def receiver(rcv_buf: int = 8 * SMSS, wscale: int = 0) -> Receiver:
    rcv = Receiver(TCPConfig(mss=SMSS, rcv_buf=rcv_buf), {})
    rcv.start(5000, wscale)
    return rcv


def test_receiver_start_and_acceptability():
    # RFC 9293 §3.10.7.4 acceptability test, window 8000 from RCV.NXT = 5001.
    rcv = receiver()
    assert rcv.rcv_nxt == 5001 and rcv.rcv_adv == 5001 + 8000
    assert rcv.acceptable(5001, 0) and not rcv.acceptable(5000, 0)
    assert rcv.acceptable(5001 + 7999, 0) and not rcv.acceptable(5001 + 8000, 0)
    assert rcv.acceptable(4500, 1000)                   # its end falls in the window
    assert not rcv.acceptable(4000, 1000)               # wholly before RCV.NXT
    assert not rcv.acceptable(5001 + 8000, 10)          # wholly beyond the window


def test_out_of_order_text_is_held_and_joined():
    rcv = receiver()
    rcv.hold(5001 + SMSS, DATA[SMSS:2 * SMSS], False)
    assert rcv.ooo_used and rcv.ack_now
    assert rcv.buffered() == SMSS
    # RFC 2018: one block, NOP NOP SACK(10) and the 32-bit edges.
    assert rcv.sack_option(4) == b"\x01\x01\x05\x0a" + (6001).to_bytes(4, "big") + (7001).to_bytes(4, "big")
    assert rcv.take_in_order(DATA[:SMSS], False) == 2 * SMSS
    assert rcv.rcv_nxt == 5001 + 2 * SMSS
    assert not rcv.ooo_used
    assert rcv.read(-1) == DATA[:2 * SMSS]


def test_the_pool_bounds_out_of_order_octets_of_all_receivers_together():
    pool = ReassemblyPool(3 * SMSS)
    first, second = receiver(), receiver()
    first.pool = second.pool = pool
    first.hold(5001 + SMSS, DATA[:2 * SMSS], False)
    second.hold(5001 + SMSS, DATA[:SMSS], False)
    assert pool.held == 3 * SMSS
    # Full: a new out-of-order segment is dropped and counted, and still ACKed (with SACK) at once.
    second.ack_now = False
    second.hold(5001 + 3 * SMSS, DATA[:SMSS], False)
    assert second._ctr["ooo_memory_dropped"] == SMSS and second.ack_now and second.buffered() == SMSS
    # In-order data is never refused by the pool, and filling the hole frees what was held.
    assert first.take_in_order(DATA[:SMSS], False) == 3 * SMSS
    assert pool.held == SMSS
    second.hold(5001 + 3 * SMSS, DATA[:SMSS], False)
    assert pool.held == 2 * SMSS
    second.discard_held()  # the connection closed
    assert pool.held == 0 and first.pool_charged == second.pool_charged == 0


def test_in_order_fin_takes_a_sequence_number():
    rcv = receiver()
    assert rcv.take_in_order(b"abc", True) == 3
    assert rcv.fin_rcvd
    assert rcv.rcv_nxt == 5001 + 3 + 1


def test_window_right_edge_never_moves_left():
    # RFC 9293 §3.8.6.2.2: the window shrinks as data waits unread, never the right edge, and
    # reopens only by at least the SWS threshold min(RCV.BUFF/2, MSS).
    rcv = receiver()
    assert rcv.window_field() == 8000
    rcv.take_in_order(DATA[:3 * SMSS], False)
    assert rcv.window_field() == 5000                   # 8000 - 3000 unread
    assert rcv.rcv_adv == 5001 + 8000
    rcv.read(500)                                       # below the SWS threshold (1000)
    assert rcv.window_field() == 5000
    rcv.read(500)
    assert rcv.window_field() == 6000
    assert rcv.rcv_adv == 5001 + 3000 + 6000
