"""The retransmission timer's estimator (RFC 6298): SRTT, RTTVAR, the RTO and its backoff, and
the lowest round trip seen (the reordering window of loss detection is a quarter of it)."""

from __future__ import annotations

#: RFC 6298 clock granularity G: a sample is never below it (our timestamps are in ms).
CLOCK_GRANULARITY = 0.001
#: RFC 6298 §5.7: the RTO after a retransmitted SYN, until the first RTT sample.
SYN_RETRANSMITTED_RTO = 3.0


class RTTEstimator:
    """SRTT and RTTVAR (RFC 6298 §2) and the retransmission timeout they give, doubled per
    timeout (§5.5) until the next valid sample."""

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        #: no sample yet: SRTT and RTTVAR are undefined and the RTO is ``initial_rto`` (§2.1)
        self.measured = False
        self.srtt = 0.0
        self.rttvar = 0.0
        self.initial_rto = initial_rto
        #: the RTO before backoff
        self.rto_base = initial_rto
        #: timeouts since the last valid sample: the RTO is rto_base * 2^backoff (§5.5)
        self.backoff = 0
        #: the lowest sample (0.0: none yet)
        self.min_rtt = 0.0
        self.min_rto = min_rto
        self.max_rto = max_rto

    def sample(self, r: float) -> None:
        """A round-trip sample of a segment never retransmitted (Karn: §3)."""
        # RFC 6298 §2.2/2.3 (alpha 1/8, beta 1/4). The min_rto floor applies to the
        # variance term as in Linux, so RTO >= SRTT+min_rto (a steady RTT behind a
        # delayed-ACK receiver never causes spurious timeouts).
        if r <= 0.0:
            r = CLOCK_GRANULARITY
        if not self.measured:
            self.measured = True
            self.srtt = r
            self.rttvar = r / 2
        else:
            d = self.srtt - r
            self.rttvar = 0.75 * self.rttvar + 0.25 * (d if d >= 0 else -d)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        var = 4 * self.rttvar
        if var < self.min_rto:
            var = self.min_rto
        rto = self.srtt + var
        self.rto_base = rto if rto < self.max_rto else self.max_rto
        self.backoff = 0                        # RFC 6298 §5.7 note / Karn: a valid sample
        if self.min_rtt == 0.0 or r < self.min_rtt:
            self.min_rtt = r

    def smoothed(self) -> float | None:
        """SRTT, or None before the first sample."""
        return self.srtt if self.measured else None

    def rto(self) -> float:
        """The current retransmission timeout."""
        return self.backed_off(self.backoff)

    def backed_off(self, backoff: int) -> float:
        """The base RTO doubled ``backoff`` times, at most max_rto (§5.5; the persist timer
        backs off the same way)."""
        t = self.rto_base * (1 << backoff) if backoff < 16 else self.max_rto
        return t if t < self.max_rto else self.max_rto

    def reordering_window(self) -> float:
        """How late a segment may arrive before its absence means loss (RFC 8985 §6.2 uses a
        quarter of the minimum RTT)."""
        return self.min_rtt / 4

    def loss_age(self) -> float:
        """When the retransmission timer expires, a segment sent longer ago than this should
        have been acknowledged: SRTT (before a sample, the initial RTO) and the reordering
        window (Linux's tcp_timeout_mark_lost)."""
        return (self.srtt if self.measured else self.initial_rto) + self.reordering_window()

    def on_established(self, syn_retransmitted: bool) -> None:
        """The handshake completed: the backoff of its retransmissions ends; without a sample,
        a retransmitted SYN leaves the RTO at least 3 s (RFC 6298 §5.7)."""
        if syn_retransmitted and not self.measured and self.rto_base < SYN_RETRANSMITTED_RTO:
            self.rto_base = SYN_RETRANSMITTED_RTO
        self.backoff = 0
