"""RFC 9293 §3.10 state machine, driven with hand-built segments.

Expected states and replies are written out here from the RFC text (§3.10.4 CLOSE,
§3.10.7 SEGMENT ARRIVES, RFC 5961 §3-5), never read back from the module's tables.
Peer ISS is 5000 and ours 1000; the peer sits at 10.0.0.2:40000 and we at 10.0.0.1:80.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from simlink import Wire  # noqa: E402

from pyslirp.net.tcp import TCPConnection  # noqa: E402
from pyslirp.net.tcp_segment import ACK, FIN, PSH, RST, SYN, parse_segment  # noqa: E402
from pyslirp.net.tcp_types import (  # noqa: E402
    Aborted, Closed, DataReceived, Established, PeerFinished, Reset, TCPConfig, TCPState,
    TCPUsageError, is_connection_request, isn, reset_for_segment, siphash24,
)

ISS = 1000
PISS = 5000
CFG = TCPConfig()
WND = 1000                 # peer window field; with its wscale 7: 128000 octets


def _syn(w: Wire, seq: int = PISS, **opts):
    o = {"mss": 1460, "wscale": 7, "sack_permitted": True}
    o.update(opts)
    return w.seg(SYN, seq, 0, 65535, **o)


def passive(cfg: TCPConfig = CFG, accept: bool = True, **synopts):
    w = Wire()
    conn = TCPConnection.from_syn(_syn(w, **synopts), Wire.LOCAL, Wire.REMOTE, iss=ISS,
                                  config=cfg, now=0.0)
    w.conn = conn
    out = []
    if accept:
        conn.accept(0.0)
        out = w.out()
    return w, conn, out


def established(cfg: TCPConfig = CFG, **synopts):
    w, c, _ = passive(cfg, **synopts)
    assert w.feed(w.seg(ACK, PISS + 1, ISS + 1, WND), 0.01) == []
    assert w.take_events() == [Established()]
    return w, c


def drive(state: str):
    """A connection in ``state`` via real segments; returns (wire, conn, peer's next seq,
    our next seq)."""
    w, c = established()
    p, q = PISS + 1, ISS + 1
    if state == "ESTABLISHED":
        return w, c, p, q
    if state in ("FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"):
        c.shutdown_write(0.1)
        (fin,) = w.out()
        assert fin.flags == FIN | ACK and fin.seq == q
        q += 1
        if state == "FIN_WAIT_1":
            return w, c, p, q
        if state == "CLOSING":
            w.feed(w.seg(FIN | ACK, p, q - 1, WND), 0.2)      # does not ack our FIN
            return w, c, p + 1, q
        w.feed(w.seg(ACK, p, q, WND), 0.2)
        if state == "FIN_WAIT_2":
            return w, c, p, q
        w.feed(w.seg(FIN | ACK, p, q, WND), 0.3)
        return w, c, p + 1, q
    if state in ("CLOSE_WAIT", "LAST_ACK"):
        w.feed(w.seg(FIN | ACK, p, q, WND), 0.1)
        p += 1
        if state == "CLOSE_WAIT":
            return w, c, p, q
        c.shutdown_write(0.2)
        w.out()
        return w, c, p, q + 1
    if state == "SYN_RECEIVED":
        w, c, _ = passive()
        return w, c, p, q
    raise AssertionError(state)


ALL_SYNC = ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
            "CLOSING", "LAST_ACK", "TIME_WAIT"]


def test_drive_reaches_every_state():
    for name in ALL_SYNC:
        w, c, _, _ = drive(name)
        assert c.state.name == name


# --------------------------------------------------------------------------- opening

def test_passive_open_deferred_accept():
    w, c, out = passive(accept=False)
    assert c.state == TCPState.LISTEN and w.out() == []
    # Retransmitted SYNs while the service is being tried are absorbed and counted.
    assert w.feed(_syn(w), 1.0) == [] and w.feed(_syn(w), 3.0) == []
    assert c.counters()["syn_while_pending"] == 2
    c.accept(3.5)
    (sa,) = w.out()
    assert sa.flags == SYN | ACK and sa.seq == ISS and sa.ack == PISS + 1
    assert sa.mss == 1460 and sa.sack_permitted and sa.wscale == 3   # 256 KiB >> 3 <= 65535
    assert sa.window == 65535                  # SYN-ACK windows are never scaled
    assert c.state == TCPState.SYN_RECEIVED
    assert w.feed(w.seg(ACK, PISS + 1, ISS + 1, WND), 3.6) == []
    assert c.state == TCPState.ESTABLISHED and w.take_events() == [Established()]
    assert c.sender.snd_wnd == WND << 7


def test_synack_options_only_those_offered():
    w, c, (sa,) = passive(wscale=None, sack_permitted=False, mss=None)
    assert sa.wscale is None and not sa.sack_permitted and sa.ts_val is None
    w.feed(w.seg(ACK, PISS + 1, ISS + 1, 60000), 0.1)
    assert c.sender.snd_wnd == 60000 and c.options.eff_mss == 536          # RFC 9293 §3.7.1 default
    c.send(b"x" * 3000, 0.2)
    assert [len(s.payload) for s in w.out()] == [536] * 5     # Nagle holds the 320 tail
    (t,) = w.feed(w.seg(ACK, PISS + 1, ISS + 1 + 5 * 536, 60000), 0.3)
    assert len(t.payload) == 320


def test_refuse_sends_rst_ack():
    w, c, _ = passive(accept=False)
    c.refuse(1.0)
    (rst,) = w.out()
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == PISS + 1
    assert c.state == TCPState.CLOSED and w.take_events() == [Closed()]


def test_from_syn_rejects_non_syn():
    w = Wire()
    for flags in (SYN | ACK, SYN | RST, SYN | FIN, ACK):
        with pytest.raises(ValueError):
            TCPConnection.from_syn(w.seg(flags, 1), Wire.LOCAL, Wire.REMOTE, iss=1)
        assert not is_connection_request(w.seg(flags, 1))


def test_synack_lost_peer_resends_syn():
    w, c, _ = passive()
    (sa,) = w.feed(_syn(w), 0.5)
    assert sa.flags == SYN | ACK and sa.seq == ISS and sa.ack == PISS + 1


def test_synack_retransmission_and_give_up():
    cfg = TCPConfig(synack_retries=2)
    w, c, _ = passive(cfg)
    assert c.next_deadline() == pytest.approx(1.0)
    c.handle_timer(1.0)
    assert [s.flags for s in w.out()] == [SYN | ACK]
    assert c.next_deadline() == pytest.approx(3.0)          # backed off: 1 + 2
    c.handle_timer(3.0)
    w.out()
    c.handle_timer(7.0)
    assert w.take_events() == [Aborted("syn_timeout"), Closed()]


def test_active_open():
    w = Wire()
    c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS, config=CFG, now=0.0)
    w.conn = c
    c.connect(0.0)
    (s,) = w.out()
    assert s.flags == SYN and s.seq == ISS and s.mss == 1460 and s.wscale == 3 \
        and s.sack_permitted
    assert c.state == TCPState.SYN_SENT
    # An ACK that does not acknowledge our SYN: <SEQ=SEG.ACK><CTL=RST>, stay in SYN-SENT.
    (r,) = w.feed(w.seg(SYN | ACK, PISS, ISS + 7, 1000, mss=1400), 0.1)
    assert r.flags == RST and r.seq == ISS + 7
    assert c.state == TCPState.SYN_SENT
    # A RST without an acceptable ACK is ignored.
    assert w.feed(w.seg(RST, 0, 0), 0.1) == [] and c.state == TCPState.SYN_SENT
    (a,) = w.feed(w.seg(SYN | ACK, PISS, ISS + 1, 2000, mss=1400, wscale=2), 0.3)
    assert a.flags == ACK and a.seq == ISS + 1 and a.ack == PISS + 1
    assert c.state == TCPState.ESTABLISHED and w.take_events() == [Established()]
    assert c.sender.snd_wnd == 2000                      # the SYN-ACK's window is not scaled
    assert c.options.eff_mss == 1400 and c.rtt.srtt == pytest.approx(0.3)


def test_active_open_refused():
    w = Wire()
    c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS)
    w.conn = c
    c.connect(0.0)
    w.out()
    assert w.feed(w.seg(RST | ACK, 0, ISS + 1), 0.1) == []
    assert w.take_events() == [Reset("SYN_SENT"), Closed()]


def test_syn_retries_and_give_up():
    w = Wire()
    c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS,
                      config=TCPConfig(syn_retries=3))
    w.conn = c
    c.connect(0.0)
    w.out()
    times = []
    while c.state != TCPState.CLOSED:
        t = c.next_deadline()
        times.append(t)
        c.handle_timer(t)
        w.out()
    assert times == pytest.approx([1, 3, 7, 15])        # RFC 6298 §5.5 doubling
    assert w.take_events()[-2:] == [Aborted("syn_timeout"), Closed()]


def test_simultaneous_open():
    # RFC 9293 §3.5 figure 7.
    w = Wire()
    c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS)
    w.conn = c
    c.connect(0.0)
    w.out()
    (sa,) = w.feed(_syn(w), 0.1)
    assert c.state == TCPState.SYN_RECEIVED
    assert sa.flags == SYN | ACK and sa.seq == ISS and sa.ack == PISS + 1
    assert sa.wscale == 3 and sa.sack_permitted
    # The peer's SYN-ACK (its answer to our SYN) completes the handshake.
    w.feed(w.seg(SYN | ACK, PISS, ISS + 1, WND), 0.2)
    assert c.state == TCPState.ESTABLISHED
    assert Established() in w.take_events()


def test_simultaneous_open_plain_ack():
    w = Wire()
    c = TCPConnection(Wire.LOCAL, 80, Wire.REMOTE, 40000, iss=ISS)
    w.conn = c
    c.connect(0.0)
    w.out()
    w.feed(_syn(w), 0.1)
    w.feed(w.seg(ACK, PISS + 1, ISS + 1, WND), 0.2)
    assert c.state == TCPState.ESTABLISHED


def test_syn_received_bad_ack_gets_rst():
    w, c, _ = passive()
    (r,) = w.feed(w.seg(ACK, PISS + 1, ISS + 50, WND), 0.1)
    assert r.flags == RST and r.seq == ISS + 50
    assert c.state == TCPState.SYN_RECEIVED


def test_data_with_handshake_ack_is_delivered():
    w, c, _ = passive()
    assert w.feed(w.seg(ACK | PSH, PISS + 1, ISS + 1, WND, b"GET /"), 0.1) == []  # delayed
    assert c.state == TCPState.ESTABLISHED
    c.handle_timer(c.next_deadline())
    (a,) = w.out()
    assert a.ack == PISS + 6
    assert c.read(-1, 0.1) == b"GET /"
    assert w.take_events() == [Established(), DataReceived(5)]


def test_send_before_established_is_queued():
    w, c, _ = passive(accept=False)
    assert c.send(b"banner", 0.0) == 6
    c.accept(0.1)
    assert [s.flags for s in w.out()] == [SYN | ACK]
    (d,) = w.feed(w.seg(ACK, PISS + 1, ISS + 1, WND), 0.2)
    assert d.payload == b"banner" and d.seq == ISS + 1


# --------------------------------------------------------------------------- closing

def test_close_transitions_we_close_first():
    w, c, p, q = drive("ESTABLISHED")
    c.shutdown_write(1.0)
    (fin,) = w.out()
    assert fin.flags == FIN | ACK and fin.seq == q and c.state == TCPState.FIN_WAIT_1
    w.feed(w.seg(ACK, p, q + 1, WND), 1.1)
    assert c.state == TCPState.FIN_WAIT_2
    # Half-closed: the peer may still send.
    w.feed(w.seg(ACK, p, q + 1, WND, b"late data"), 1.2)
    assert c.read(-1, 1.2) == b"late data"
    (a,) = w.feed(w.seg(FIN | ACK, p + 9, q + 1, WND), 1.3)
    assert a.flags == ACK and a.ack == p + 10
    assert c.state == TCPState.TIME_WAIT
    assert w.take_events() == [DataReceived(9, push=False), PeerFinished()]  # no PSH: may wait
    assert c.next_deadline() == pytest.approx(1.3 + CFG.time_wait)
    c.handle_timer(1.3 + CFG.time_wait)
    assert c.state == TCPState.CLOSED and w.take_events() == [Closed()]


def test_close_transitions_peer_closes_first():
    w, c, p, q = drive("ESTABLISHED")
    # The FIN's ACK waits for a segment of ours to carry it (as Linux's does).
    assert w.feed(w.seg(FIN | ACK, p, q, WND), 1.0) == []
    assert c.state == TCPState.CLOSE_WAIT and c.next_deadline() == pytest.approx(1.0 + CFG.delack)
    assert w.take_events() == [PeerFinished()] and c.at_eof
    # Half-closed the other way: we may still send, and that acknowledges the FIN.
    c.send(b"response", 1.01)
    (d,) = w.out()
    assert d.payload == b"response" and d.ack == p + 1
    c.shutdown_write(1.2)
    (fin,) = w.out()
    assert fin.flags & FIN and fin.seq == q + 8 and c.state == TCPState.LAST_ACK
    w.feed(w.seg(ACK, p + 1, q + 9, WND), 1.3)
    assert c.state == TCPState.CLOSED and w.take_events() == [Closed()]


def test_peer_fin_acked_with_our_fin_or_by_the_delayed_ack_timer():
    """Closing in turn sends one FIN+ACK, not an ACK and then a FIN; an application that keeps
    its side open gets the FIN acknowledged when the delayed-ACK timer runs out."""
    w, c, p, q = drive("ESTABLISHED")
    assert w.feed(w.seg(FIN | ACK, p, q, WND), 1.0) == []
    c.shutdown_write(1.001)
    (fin,) = w.out()
    assert fin.flags == FIN | ACK and fin.ack == p + 1 and c.state == TCPState.LAST_ACK

    w, c, p, q = drive("ESTABLISHED")
    assert w.feed(w.seg(FIN | ACK, p, q, WND), 1.0) == []
    c.handle_timer(1.0 + CFG.delack)
    (a,) = w.out()
    assert a.flags == ACK and a.ack == p + 1 and c.state == TCPState.CLOSE_WAIT


def test_fin_carried_on_last_data_segment():
    w, c, p, q = drive("ESTABLISHED")
    c.send(b"bye", 1.0)
    c.shutdown_write(1.0)
    segs = w.out()
    assert segs[-1].flags & FIN
    assert b"".join(s.payload for s in segs) == b"bye"


def test_simultaneous_close():
    w, c, p, q = drive("FIN_WAIT_1")
    (a,) = w.feed(w.seg(FIN | ACK, p, q - 1, WND), 1.0)      # peer FIN, ours not acked yet
    assert c.state == TCPState.CLOSING and a.ack == p + 1
    w.feed(w.seg(ACK, p + 1, q, WND), 1.1)
    assert c.state == TCPState.TIME_WAIT
    c.handle_timer(c.next_deadline())
    assert c.state == TCPState.CLOSED


def test_fin_and_ack_of_our_fin_together():
    w, c, p, q = drive("FIN_WAIT_1")
    w.feed(w.seg(FIN | ACK, p, q, WND), 1.0)
    assert c.state == TCPState.TIME_WAIT


def test_out_of_order_fin_waits_for_data():
    w, c, p, q = drive("ESTABLISHED")
    (a,) = w.feed(w.seg(FIN | ACK, p + 5, q, WND), 1.0)
    assert a.ack == p and c.state == TCPState.ESTABLISHED
    (a,) = w.feed(w.seg(ACK, p, q, WND, b"hello"), 1.1)
    assert a.ack == p + 6 and c.state == TCPState.CLOSE_WAIT
    assert c.read(-1, 1.1) == b"hello" and c.at_eof


def test_time_wait_retransmitted_fin_is_acked_and_restarts_timer():
    w, c, p, q = drive("TIME_WAIT")
    assert c.next_deadline() == pytest.approx(0.3 + CFG.time_wait)
    (a,) = w.feed(w.seg(FIN | ACK, p - 1, q, WND), 1.0)
    assert a.flags == ACK and a.ack == p
    assert c.next_deadline() == pytest.approx(1.0 + CFG.time_wait)


def test_time_wait_new_syn():
    w, c, p, q = drive("TIME_WAIT")
    assert c.accepts_new_syn(_syn(w, seq=p + 100000))
    assert not c.accepts_new_syn(_syn(w, seq=p - 10))


def test_shutdown_before_established_is_deferred():
    w, c, _ = passive(accept=False)
    c.shutdown_write(0.0)
    c.accept(0.1)
    w.out()
    segs = w.feed(w.seg(ACK, PISS + 1, ISS + 1, WND), 0.2)
    assert [s.flags for s in segs] == [FIN | ACK] and c.state == TCPState.FIN_WAIT_1
    with pytest.raises(TCPUsageError):
        c.send(b"x", 0.3)


def test_close_with_unread_data_resets():
    w, c, p, q = drive("ESTABLISHED")
    w.feed(w.seg(ACK, p, q, WND, b"unread"), 1.0)
    c.close(1.1)
    (r,) = w.out()
    assert r.flags & RST and r.seq == q
    assert w.take_events()[-1] == Closed()


def test_data_after_close_resets():
    w, c, p, q = drive("ESTABLISHED")
    c.close(1.0)
    w.out()
    w.feed(w.seg(ACK, p, q + 1, WND), 1.1)
    assert c.state == TCPState.FIN_WAIT_2
    (r,) = w.feed(w.seg(ACK, p, q + 1, WND, b"more"), 1.2)
    assert r.flags & RST
    assert w.take_events()[-2:] == [Aborted("data_after_close"), Closed()]


def test_fin_wait_2_timeout_after_close():
    w, c, p, q = drive("ESTABLISHED")
    c.close(1.0)
    w.out()
    w.feed(w.seg(ACK, p, q + 1, WND), 1.1)
    assert c.next_deadline() == pytest.approx(1.1 + CFG.fin_wait_2_timeout)
    c.handle_timer(c.next_deadline())
    assert w.take_events()[-2:] == [Aborted("fin_wait_2_timeout"), Closed()]


def test_abort_sends_rst():
    w, c, p, q = drive("ESTABLISHED")
    c.abort(1.0)
    (r,) = w.out()
    assert r.flags == RST and r.seq == q
    assert c.state == TCPState.CLOSED and w.take_events() == [Closed()]


# --------------------------------------------------------------------------- RST / SYN

@pytest.mark.parametrize("state", ALL_SYNC)
def test_rst_exact_sequence_resets(state):
    w, c, p, q = drive(state)
    w.take_events()
    assert w.feed(w.seg(RST, p), 5.0) == []
    assert c.state == TCPState.CLOSED
    # RFC 9293: CLOSING/LAST-ACK/TIME-WAIT just close; the others signal "connection reset".
    expected = [Closed()] if state in ("CLOSING", "LAST_ACK", "TIME_WAIT") \
        else [Reset(state), Closed()]
    assert w.take_events() == expected


@pytest.mark.parametrize("state", ALL_SYNC)
def test_rst_in_window_not_exact_gets_challenge_ack(state):
    # RFC 5961 §3.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, connection unchanged.
    w, c, p, q = drive(state)
    (a,) = w.feed(w.seg(RST, p + 1000), 5.0)
    assert a.flags == ACK and a.seq == q and a.ack == p
    assert c.state.name == state
    assert c.counters()["challenge_ack"] == 1 and c.counters()["rst_challenged"] == 1


@pytest.mark.parametrize("state", ALL_SYNC)
def test_rst_out_of_window_silently_dropped(state):
    w, c, p, q = drive(state)
    assert w.feed(w.seg(RST, p + 10_000_000), 5.0) == []
    assert w.feed(w.seg(RST | ACK, p - 1, q), 5.0) == []
    assert c.state.name == state and c.counters()["rst_rejected"] == 2


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_syn_in_synchronized_state_gets_challenge_ack(state):
    # RFC 5961 §4.2: any SYN, in window or not, gets a challenge ACK.
    w, c, p, q = drive(state)
    (a,) = w.feed(_syn(w, seq=p + 10), 5.0)
    assert a.flags == ACK and a.seq == q and a.ack == p
    assert c.state.name == state
    segs = w.feed(_syn(w, seq=p + 10_000_000), 5.1)
    assert [s.flags for s in segs] == [ACK]


def test_challenge_acks_are_rate_limited():
    w, c, p, q = drive("ESTABLISHED")
    n = sum(len(w.feed(w.seg(RST, p + 5), 5.0 + i * 0.01)) for i in range(15))
    assert n == CFG.challenge_ack_limit
    assert c.counters()["challenge_ack_ratelimited"] == 15 - CFG.challenge_ack_limit
    assert len(w.feed(w.seg(RST, p + 5), 7.0)) == 1          # a new second


def test_ack_acceptability_rfc5961():
    w, c, p, q = drive("ESTABLISHED")
    # SEG.ACK > SND.NXT: send ACK, drop the segment (its data is not taken).
    (a,) = w.feed(w.seg(ACK, p, q + 10, WND, b"data"), 1.0)
    assert a.flags == ACK and a.ack == p and c.readable == 0
    # SEG.ACK < SND.UNA - MAX.SND.WND: likewise.
    (a,) = w.feed(w.seg(ACK, p, q - (WND << 7) - 1, WND, b"data"), 1.1)
    assert c.readable == 0
    assert c.counters()["ack_unacceptable"] == 2
    # An old but acceptable ACK is ignored and the text processed.
    w.feed(w.seg(ACK, p, q - 1, WND, b"data"), 1.2)
    assert c.readable == 4


def test_segment_without_ack_dropped():
    w, c, p, q = drive("ESTABLISHED")
    assert w.feed(w.seg(PSH, p, 0, WND, b"x"), 1.0) == []
    assert c.readable == 0 and c.counters()["no_ack"] == 1


def test_unacceptable_segments_are_acked():
    w, c, p, q = drive("ESTABLISHED")
    # Beyond the window.
    (a,) = w.feed(w.seg(ACK, p + 10_000_000, q, WND, b"x"), 1.0)
    assert a.ack == p
    # An old duplicate.
    (a,) = w.feed(w.seg(ACK, p - 100, q, WND, b"x" * 50), 1.1)
    assert a.ack == p
    ctr = c.counters()
    assert ctr["out_of_window"] == 1 and ctr["duplicate_segment"] == 1
    # Out-of-window pure ACKs are answered at most every oow_ack_interval.
    assert len(w.feed(w.seg(ACK, p - 1, q, WND), 2.0)) == 1
    assert len(w.feed(w.seg(ACK, p - 1, q, WND), 2.1)) == 0
    assert c.counters()["oow_ack_ratelimited"] == 1


def test_partially_old_segment_keeps_new_part():
    w, c, p, q = drive("ESTABLISHED")
    w.feed(w.seg(ACK, p, q, WND, b"abcdef"), 1.0)
    w.feed(w.seg(ACK, p + 3, q, WND, b"defghi"), 1.1)
    assert c.read(-1, 1.1) == b"abcdefghi"


# --------------------------------------------------------------------------- misc

def test_isn_rfc6528():
    k = b"k" * 16
    loc, rem = (bytes([10, 0, 0, 1]), 80), (bytes([10, 0, 0, 2]), 40000)
    a = isn(k, loc, rem, 100.0)
    # M: a 4 µs clock.
    assert (isn(k, loc, rem, 101.0) - a) % 2**32 == 250_000
    assert isn(k, loc, (rem[0], 40001), 100.0) != a
    assert isn(k, (loc[0], 81), rem, 100.0) != a
    assert isn(k, loc, (bytes([10, 0, 0, 3]), 40000), 100.0) != a
    assert isn(b"o" * 16, loc, rem, 100.0) != a
    assert 0 <= a < 2**32
    # F is SipHash-2-4 of the 4-tuple: the same number by hand.
    k0 = k1 = int.from_bytes(k[:8], "little")
    assert a == (25_000_000 + siphash24(k0, k1, loc[0] + rem[0] + bytes([0, 80, 0x9C, 0x40]))) % 2**32


def test_isn_secret_is_a_siphash_key():
    with pytest.raises(ValueError, match=r"\(16 octets\), not 5"):
        isn(b"short", (bytes(4), 1), (bytes(4), 2), 0.0)


#: Aumasson and Bernstein's reference vectors (the paper's Appendix A; ``vectors.h`` of the
#: reference implementation): key 00..0f, message 00..(n-1), the 64-bit output in little endian
SIPHASH24_VECTORS = {
    0: "310e0edd47db6f72", 1: "fd67dc93c539f874", 7: "37d1018bf50002ab",
    8: "6224939a79f5f593", 9: "b0e4a90bdf82009e", 15: "e545be4961ca29a1",
}


@pytest.mark.parametrize("length", sorted(SIPHASH24_VECTORS))
def test_siphash24_reference_vectors(length: int) -> None:
    key = bytes(range(16))
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    digest = siphash24(k0, k1, bytes(range(length)))
    assert digest.to_bytes(8, "little").hex() == SIPHASH24_VECTORS[length]


def test_reset_for_segment_rfc9293_closed_state():
    w = Wire()
    seg = w.seg(ACK, 77, 1234, 100, b"abc")
    r = parse_segment(reset_for_segment(seg, Wire.LOCAL, Wire.REMOTE), Wire.LOCAL, Wire.REMOTE)
    assert r.flags == RST and r.seq == 1234 and (r.src_port, r.dst_port) == (80, 40000)
    seg = w.seg(SYN, 77, 0, 100, b"ab")
    r = parse_segment(reset_for_segment(seg, Wire.LOCAL, Wire.REMOTE), Wire.LOCAL, Wire.REMOTE)
    assert r.flags == RST | ACK and r.seq == 0 and r.ack == 77 + 3
    assert reset_for_segment(w.seg(RST, 1), Wire.LOCAL, Wire.REMOTE) is None


def test_segments_after_close_are_counted():
    w, c, p, q = drive("ESTABLISHED")
    c.abort(1.0)
    w.out()
    assert w.feed(w.seg(ACK, p, q), 2.0) == []
    assert c.counters()["closed_dropped"] == 1


def test_sequence_wraparound_handshake_and_data():
    w = Wire()
    top = 2**32 - 3
    conn = TCPConnection.from_syn(_syn(w, seq=top), Wire.LOCAL, Wire.REMOTE,
                                  iss=2**32 - 2, now=0.0)
    w.conn = conn
    conn.accept(0.0)
    (sa,) = w.out()
    assert sa.seq == 2**32 - 2 and sa.ack == top + 1
    w.feed(w.seg(ACK, top + 1, 2**32 - 1, WND, b"0123456789"), 0.1)
    assert conn.read(-1, 0.1) == b"0123456789"
    conn.send(b"abcdef", 0.2)
    segs = w.out()
    assert segs[-1].seq == 2**32 - 1 and segs[-1].ack == (top + 11) % 2**32
    w.feed(w.seg(ACK, top + 11, 5, WND), 0.3)                  # acks across 2^32
    assert conn.send_buffered == 0
