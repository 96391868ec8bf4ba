"""NewReno (pyslirp/net/tcp_congestion.py) on its own: the initial and restart windows, slow
start with byte counting, congestion avoidance, and the window after loss and after a timeout.
Expected values are worked out here from RFC 5681, RFC 3465, RFC 6928, RFC 6582 and RFC 6675;
an SMSS of 1000 keeps the arithmetic readable."""

from __future__ import annotations

import pytest

from pyslirp.net.tcp_congestion import CA_LOSS, CA_OPEN, CA_RECOVERY, MAX_CWND, NewReno

SMSS = 1000
ISS = 1000


def established(iw: int = 10, mss: int = SMSS, syn_retransmitted: bool = False) -> NewReno:
    cc = NewReno(mss, iw)
    cc.on_established(mss, syn_retransmitted, ISS + 1)
    cc.cwnd_limited = True               # RFC 7661: only a cwnd-limited sender grows the window
    return cc


# ---------------------------------------------------------------------------- initial window

def test_before_the_handshake():
    cc = NewReno(1460, 10)
    assert cc.cwnd == 1460
    assert cc.ssthresh == MAX_CWND       # RFC 5681 §3.1: arbitrarily high
    assert cc.state == CA_OPEN


@pytest.mark.parametrize("mss, iw, cwnd", [
    (1460, 10, 14600),                   # RFC 6928: min(10*MSS, max(2*MSS, 14600))
    (536, 10, 5360),                     # 10 segments fit under 14600
    (9000, 10, 18000),                   # large MSS: 2*MSS
    (1460, 4, 5840),                     # a smaller IW in segments
])
def test_initial_window_rfc6928(mss, iw, cwnd):
    cc = NewReno(mss, iw)
    cc.on_established(mss, False, ISS + 1)
    assert cc.cwnd == cwnd
    assert cc.recover == ISS + 1         # RFC 6582 §3.2 step 1: recover = ISS (the SYN's end)
    assert cc.state == CA_OPEN


def test_retransmitted_syn_gives_one_segment():
    # RFC 5681 §3.1: after a lost SYN or SYN-ACK the initial window is one segment.
    assert established(syn_retransmitted=True).cwnd == SMSS


# ---------------------------------------------------------------------------- growth

def test_slow_start_byte_counting_rfc3465():
    cc = established()
    assert cc.cwnd == 10 * SMSS
    cc.on_ack(SMSS, ISS + 1 + SMSS, SMSS)
    assert cc.cwnd == 11 * SMSS          # a full segment acknowledged: + SMSS
    cc.on_ack(300, ISS + 1 + SMSS + 300, SMSS)
    assert cc.cwnd == 11 * SMSS + 300    # bytes, not ACKs, are counted
    cc.on_ack(5 * SMSS, ISS + 1 + 6 * SMSS + 300, SMSS)
    assert cc.cwnd == 13 * SMSS + 300    # one ACK grows it by at most L = 2 SMSS


def test_no_growth_unless_cwnd_limited():
    # RFC 7661: an application-limited sender does not grow the window.
    cc = established()
    cc.cwnd_limited = False
    cc.on_ack(2 * SMSS, ISS + 1 + 2 * SMSS, SMSS)
    assert cc.cwnd == 10 * SMSS


def test_congestion_avoidance_one_smss_per_window_acked():
    # RFC 5681 §3.1 eq. 3 with byte counting (RFC 3465 §2.1): SMSS per cwnd octets acknowledged.
    cc = established()
    cc.ssthresh = 10 * SMSS              # cwnd == ssthresh: congestion avoidance
    una = ISS + 1
    for _ in range(9):
        una += SMSS
        cc.on_ack(SMSS, una, SMSS)
    assert cc.cwnd == 10 * SMSS
    assert cc.acked_in_avoidance == 9 * SMSS
    una += SMSS
    cc.on_ack(SMSS, una, SMSS)
    assert cc.cwnd == 11 * SMSS
    assert cc.acked_in_avoidance == 0
    for _ in range(10):                  # the next increment needs the new window, 11 SMSS
        una += SMSS
        cc.on_ack(SMSS, una, SMSS)
    assert cc.cwnd == 11 * SMSS
    una += SMSS
    cc.on_ack(SMSS, una, SMSS)
    assert cc.cwnd == 12 * SMSS


def test_cwnd_is_bounded():
    cc = established()
    cc.cwnd = MAX_CWND - SMSS
    cc.on_ack(2 * SMSS, ISS + 1 + 2 * SMSS, SMSS)
    assert cc.cwnd == MAX_CWND


# ---------------------------------------------------------------------------- loss

def test_entering_recovery_halves_the_flight_rfc5681_eq4():
    # RFC 5681 §3.1 eq. 4 / RFC 6675 §5 (4.2): ssthresh = cwnd = max(FlightSize/2, 2*SMSS);
    # RFC 6582 §3.2 step 2 / RFC 6675: recover = HighData.
    cc = established()
    cc.cwnd = 24 * SMSS
    cc.acked_in_avoidance = 500
    cc.on_enter_recovery(20 * SMSS, SMSS, 50_000)
    assert cc.state == CA_RECOVERY
    assert cc.ssthresh == 10 * SMSS
    assert cc.cwnd == 10 * SMSS
    assert cc.recover == 50_000
    assert cc.acked_in_avoidance == 0


def test_recovery_floor_is_two_segments():
    cc = established()
    cc.on_enter_recovery(3 * SMSS, SMSS, 9_000)
    assert cc.ssthresh == 2 * SMSS       # 1.5 SMSS is below the floor
    assert cc.cwnd == 2 * SMSS


def test_partial_acks_do_not_grow_the_window_and_a_full_ack_ends_recovery():
    cc = established()
    cc.on_enter_recovery(20 * SMSS, SMSS, 50_000)
    cc.on_ack(3 * SMSS, 40_000, SMSS)    # below recover: a partial ACK
    assert cc.state == CA_RECOVERY
    assert cc.cwnd == 10 * SMSS
    cc.cwnd = 12 * SMSS                  # (an algorithm may have inflated it)
    cc.on_ack(10 * SMSS, 50_000, SMSS)   # covers recover: RFC 6582 full ACK
    assert cc.state == CA_OPEN
    assert cc.cwnd == cc.ssthresh == 10 * SMSS   # deflated to ssthresh, not grown by this ACK
    cc.on_ack(SMSS, 51_000, SMSS)        # open again: congestion avoidance (cwnd >= ssthresh)
    assert cc.cwnd == 10 * SMSS
    assert cc.acked_in_avoidance == SMSS


def test_rto_collapses_the_window_to_one_segment():
    # RFC 5681 §3.1: ssthresh = max(FlightSize/2, 2*SMSS), cwnd = LW = 1 SMSS;
    # RFC 6675 §5.1: the recovery point becomes HighData.
    cc = established()
    cc.cwnd = 30 * SMSS
    cc.on_rto(16 * SMSS, SMSS, 80_000, True)
    assert cc.state == CA_LOSS
    assert cc.cwnd == SMSS
    assert cc.ssthresh == 8 * SMSS
    assert cc.recover == 80_000


def test_repeated_timeouts_hold_ssthresh():
    # RFC 5681 §3.1: when the retransmission is lost too, ssthresh is not halved again.
    cc = established()
    cc.on_rto(16 * SMSS, SMSS, 80_000, True)
    cc.on_rto(4 * SMSS, SMSS, 80_000, False)
    assert cc.ssthresh == 8 * SMSS
    assert cc.cwnd == SMSS
    # A first timeout of another segment computes it afresh.
    cc.on_rto(4 * SMSS, SMSS, 80_000, True)
    assert cc.ssthresh == 2 * SMSS


def test_timeout_during_fast_recovery_recomputes_ssthresh():
    cc = established()
    cc.on_enter_recovery(20 * SMSS, SMSS, 50_000)
    cc.on_rto(12 * SMSS, SMSS, 50_000, False)
    assert cc.state == CA_LOSS
    assert cc.ssthresh == 6 * SMSS
    assert cc.cwnd == SMSS


def test_slow_start_after_a_timeout_and_leaving_loss():
    cc = established()
    cc.on_rto(16 * SMSS, SMSS, 80_000, True)
    cc.on_ack(SMSS, 65_000, SMSS)
    assert cc.cwnd == 2 * SMSS           # slow start from the loss window
    cc.on_ack(3 * SMSS, 68_000, SMSS)
    assert cc.cwnd == 4 * SMSS           # still L = 2 per ACK
    assert cc.state == CA_LOSS
    cc.on_ack(12 * SMSS, 80_000, SMSS)   # past the recovery point
    assert cc.state == CA_OPEN
    assert cc.cwnd == 6 * SMSS           # the slow-start window is kept (no deflation)


# ---------------------------------------------------------------------------- idle

def test_idle_restart_window_rfc5681_4_1():
    # RW = min(IW, cwnd).
    cc = established()
    cc.cwnd = 50 * SMSS
    cc.on_idle_restart(SMSS)
    assert cc.cwnd == 10 * SMSS
    cc.cwnd = 3 * SMSS
    cc.on_idle_restart(SMSS)
    assert cc.cwnd == 3 * SMSS


@pytest.mark.parametrize("mss, iw", [(1460, 10), (1460, 20), (536, 4), (9000, 10)])
def test_restart_window_is_the_initial_window(mss, iw):
    # RFC 5681 §4.1: the restart window is the same IW as at the start, whatever IW is.
    cc = NewReno(mss, iw)
    cc.on_established(mss, False, ISS + 1)
    iw_octets = cc.cwnd
    cc.cwnd = 100 * mss
    cc.on_idle_restart(mss)
    assert cc.cwnd == iw_octets
