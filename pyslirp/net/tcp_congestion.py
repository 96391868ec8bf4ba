"""Congestion control: the congestion window, the slow-start threshold and the recovery state,
behind a small interface the connection calls at each event (an ACK that advances SND.UNA,
loss detected, a retransmission timeout, an idle restart). :class:`NewReno` is the algorithm
(RFC 5681 with RFC 3465 byte counting, RFC 6582 / RFC 6675 recovery); another (CUBIC, PRR)
overrides the same methods.

Which segments are lost is the scoreboard's business (``tcp_scoreboard``); this module only
decides how much may be in flight.
"""

from __future__ import annotations

#: the largest congestion window (octets): a bound, not a tuning knob
MAX_CWND = 1 << 30

# Congestion-control states (Linux's names for RFC 5681/6582/6675 phases).
CA_OPEN = 0
CA_RECOVERY = 1        # fast recovery (SACK: RFC 6675 §5; no SACK: RFC 6582)
CA_LOSS = 2            # after an RTO, until SND.UNA passes the recovery point
CA_STATE_NAMES = ("open", "recovery", "loss")


class CongestionControl:
    """What every algorithm keeps and is told. ``cwnd_limited``: the connection sets it when
    the congestion window, not the application or the peer's window, held data back (RFC 7661:
    only then may an ACK grow the window)."""

    def __init__(self, mss: int, initial_window: int) -> None:
        self.cwnd = mss
        self.ssthresh = MAX_CWND
        self.state = CA_OPEN
        #: RFC 6582 "recover" / RFC 6675 RecoveryPoint: recovery ends when SND.UNA passes it
        self.recover = 0
        self.cwnd_limited = False
        #: IW in segments (RFC 6928)
        self.initial_window = initial_window

    def on_established(self, mss: int, syn_retransmitted: bool, snd_una: int) -> None:
        """The handshake completed: the initial window, and RFC 6582 §3.2 step 1 recover = ISS."""
        raise NotImplementedError

    def on_ack(self, acked: int, snd_una: int, mss: int) -> None:
        """An ACK advanced SND.UNA by ``acked`` octets (to ``snd_una``)."""
        raise NotImplementedError

    def on_enter_recovery(self, flight: int, mss: int, snd_nxt: int) -> None:
        """The scoreboard found loss while in the open state: fast recovery begins."""
        raise NotImplementedError

    def on_recovery_end(self) -> None:
        """SND.UNA passed the recovery point: back to the open state."""
        raise NotImplementedError

    def on_rto(self, flight: int, mss: int, snd_nxt: int, first_timeout: bool) -> None:
        """The retransmission timer expired (``first_timeout``: not a repeated one of the same
        segment)."""
        raise NotImplementedError

    def on_idle_restart(self, mss: int) -> None:
        """Data is sent after an idle period longer than the RTO."""
        raise NotImplementedError


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance with byte counting (RFC 3465, L=2), RFC 6582
    NewReno and RFC 6675 SACK recovery (which share the machinery: ssthresh = FlightSize/2,
    recovery until the recovery point is acknowledged)."""

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        #: octets acknowledged toward the next congestion-avoidance increment
        self.acked_in_avoidance = 0

    def iw_octets(self, mss: int) -> int:
        """The initial window in octets (RFC 6928: min(IW*MSS, max(2*MSS, IW*1460)), which for
        the default IW of 10 is the RFC's 14600); the restart window is the same (RFC 5681
        §4.1)."""
        iw = self.initial_window
        return min(iw * mss, max(2 * mss, iw * 1460))

    def on_established(self, mss: int, syn_retransmitted: bool, snd_una: int) -> None:
        # RFC 5681 §3.1: one segment if the SYN or SYN-ACK was retransmitted.
        self.cwnd = mss if syn_retransmitted else self.iw_octets(mss)
        self.recover = snd_una               # RFC 6582 §3.2 step 1: recover = ISS

    def on_ack(self, acked: int, snd_una: int, mss: int) -> None:
        state = self.state
        if state != CA_OPEN and snd_una >= self.recover:
            self.on_recovery_end()
        if state == CA_RECOVERY or not self.cwnd_limited:
            return
        cw = self.cwnd
        if cw < self.ssthresh:
            cw += acked if acked < 2 * mss else 2 * mss        # RFC 5681 §3.1, ABC L=2
        else:
            self.acked_in_avoidance += acked                   # RFC 5681 §3.1 eq. 3,
            if self.acked_in_avoidance >= cw:                  # byte counting
                self.acked_in_avoidance -= cw
                cw += mss
        self.cwnd = cw if cw < MAX_CWND else MAX_CWND

    def on_enter_recovery(self, flight: int, mss: int, snd_nxt: int) -> None:
        # RFC 6675 §5 (4.2) / RFC 5681 eq. 4 / RFC 6582 §3.2 step 2.
        half = flight >> 1
        self.ssthresh = half if half > 2 * mss else 2 * mss
        self.cwnd = self.ssthresh
        self.acked_in_avoidance = 0
        self.recover = snd_nxt
        self.state = CA_RECOVERY

    def on_recovery_end(self) -> None:
        # Recovery over (RFC 6675 §5 / RFC 6582 full ACK): cwnd = ssthresh.
        if self.state == CA_RECOVERY and self.cwnd > self.ssthresh:
            self.cwnd = self.ssthresh
        self.state = CA_OPEN

    def on_rto(self, flight: int, mss: int, snd_nxt: int, first_timeout: bool) -> None:
        # RFC 5681 §3.1 eq. 4 (ssthresh held on repeated timeouts of the same segment),
        # RFC 6675 §5.1 (the recovery point becomes HighData).
        if first_timeout or self.state != CA_LOSS:
            half = flight >> 1
            self.ssthresh = half if half > 2 * mss else 2 * mss
        self.cwnd = mss                         # loss window LW = 1 SMSS
        self.acked_in_avoidance = 0
        self.state = CA_LOSS
        self.recover = snd_nxt

    def on_idle_restart(self, mss: int) -> None:
        # RFC 5681 §4.1 restart window after an idle period: RW = min(IW, cwnd).
        rw = self.iw_octets(mss)
        if self.cwnd > rw:
            self.cwnd = rw
