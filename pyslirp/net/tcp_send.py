"""The send side of a connection: the send sequence space (RFC 9293 §3.3.1), the send buffer,
and what an acknowledgment does to them.

Accepted-but-unacknowledged octets live in one bytearray starting at SND.UNA (CPython deletes
from the front of a bytearray in O(1) amortised, appends likewise); the FIN follows them in
sequence space but not in the buffer. An ACK goes to the parts the connection composes and
lends the sender: the scoreboard learns what was delivered and detects loss (RFC 6675), the
RTT estimator takes a sample (RFC 6298, RFC 7323 §4.1), congestion control grows the window or
recovers (RFC 5681, RFC 6582, RFC 6675).
"""

from __future__ import annotations

from typing import MutableMapping, Union

from pyslirp.net.tcp_congestion import CA_OPEN, CongestionControl
from pyslirp.net.tcp_options import NegotiatedOptions
from pyslirp.net.tcp_rtt import CLOCK_GRANULARITY, RTTEstimator
from pyslirp.net.tcp_scoreboard import Scoreboard, SentSegment
from pyslirp.net.tcp_segment import TCPSegment
from pyslirp.net.tcp_types import MASK

#: RFC 7323 §4.1 RTTM: an echoed timestamp older than this (ms) gives no sample
_MAX_TS_RTT = 600_000


class Sender:
    """SND.UNA, SND.NXT, the peer's window and the octets not yet acknowledged."""

    def __init__(self, iss: int, snd_buf: int, options: NegotiatedOptions, rtt: RTTEstimator,
                 congestion: CongestionControl, scoreboard: Scoreboard,
                 counters: MutableMapping[str, int]) -> None:
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        #: the largest window the peer offered (sender SWS avoidance, RFC 9293 §3.8.6.2.1)
        self.max_snd_wnd = 0
        #: octets from SND.UNA on: unacknowledged, then unsent
        self.buf = bytearray()
        #: the sequence number of buf[0] (ISS + 1: the SYN is not in the buffer)
        self.buf_seq = iss + 1
        self.size = snd_buf
        self.fin_queued = False
        self.fin_sent = False
        self.fin_seq = 0
        #: the application was refused room: it hears (SendSpace) when room returns
        self.blocked = False
        #: send the first lost segment even if cwnd forbids it (RFC 6675 (4.3), partial ACK,
        #: RTO)
        self.force_rtx = False
        #: the RTT sample the last ACK gave, for the line budget (-1.0: none)
        self.rtt_sample = -1.0
        self.options = options
        self.rtt = rtt
        self.congestion = congestion
        self.scoreboard = scoreboard
        self._ctr = counters

    # ------------------------------------------------------------------ the buffer

    def queue(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """Take as much of ``data`` as the buffer has room for; return how many octets."""
        n = len(data)
        space = self.size - len(self.buf)
        if n > space:
            n = space if space > 0 else 0
            self.blocked = True
        if n:
            self.buf += data if n == len(data) else memoryview(data)[:n]
        return n

    def space(self) -> int:
        """Free room in the buffer."""
        s = self.size - len(self.buf)
        return s if s > 0 else 0

    def unsent(self) -> int:
        """Buffered octets not sent yet."""
        return self.buf_seq + len(self.buf) - self.snd_nxt

    def in_flight(self) -> int:
        return self.scoreboard.in_flight(self.snd_nxt - self.snd_una)

    def take_new(self, n: int, fin: int, now: float) -> Union[bytes, bytearray]:
        """The next ``n`` unsent octets (and the FIN if ``fin``) are sent now: record them on
        the scoreboard, advance SND.NXT, return the payload."""
        seq = self.snd_nxt
        off = seq - self.buf_seq
        end = seq + n + (1 if fin else 0)
        self.scoreboard.add(seq, end, 1 if fin else 0, now)
        self.snd_nxt = end
        if fin:
            self.fin_sent = True
            self.fin_seq = seq + n
        return self.buf[off:off + n] if n else b""

    def payload(self, r: SentSegment) -> Union[bytes, bytearray]:
        """The octets of a sent segment, to send again."""
        off = r.seq - self.buf_seq
        end = r.end - r.fin - self.buf_seq
        return self.buf[off:end] if end > off else b""

    def unsend_probe(self) -> None:
        """A lone one-octet window probe outstanding was probably dropped beyond the old
        window: unsend it, the normal output path sends it again with what follows."""
        sb = self.scoreboard
        r = sb.first()
        if r is not None and r is sb.records[-1] and r.end - r.seq == 1 and not r.fin:
            sb.clear()
            self.snd_nxt = self.snd_una

    def clear(self) -> None:
        """The connection closed: nothing more is sent."""
        self.scoreboard.clear()
        self.buf = bytearray()

    # ------------------------------------------------------------------ the peer's window

    def open_window(self, wnd: int, wl1: int, wl2: int) -> None:
        """The window of the handshake (SND.WND, SND.WL1, SND.WL2)."""
        self.snd_wnd = wnd
        self.max_snd_wnd = wnd
        self.snd_wl1 = wl1
        self.snd_wl2 = wl2

    def update_window(self, seq: int, ack: int, wnd: int) -> None:
        """Window update (RFC 9293 §3.10.7.4 fifth, SND.WL1/WL2 rule)."""
        wl1 = self.snd_wl1
        if wl1 < seq or (wl1 == seq and self.snd_wl2 <= ack):
            self.snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd

    # ------------------------------------------------------------------ ACKs and timeouts

    def on_established(self, syn_retransmitted: bool) -> None:
        self.congestion.on_established(self.options.eff_mss, syn_retransmitted, self.snd_una)
        self.rtt.on_established(syn_retransmitted)
        self.scoreboard.start(self.snd_una)

    def on_ack(self, ack: int, seg: TCPSegment, now: float, is_dup: bool) -> int:
        """An ACK at or above SND.UNA (``is_dup``: a duplicate ACK, RFC 5681 §2): cumulative
        ACK and SACK to the scoreboard, loss detection, RTT and congestion control. Returns
        the free room of the buffer if the application, refused before, may write again;
        else -1."""
        opts = self.options
        mss = opts.eff_mss
        sb = self.scoreboard
        cc = self.congestion
        rtt = self.rtt
        snd_una = self.snd_una
        acked = ack - snd_una
        min_rtt = rtt.min_rtt
        space = -1
        self.rtt_sample = -1.0
        sb.begin_ack()
        if acked > 0:
            sb.on_cumulative_ack(ack, now, min_rtt)
            self.snd_una = snd_una = ack
            # Free acknowledged data (the FIN is not in the buffer).
            k = ack - self.buf_seq
            bl = len(self.buf)
            if k > bl:
                k = bl
            if k > 0:
                del self.buf[:k]
                self.buf_seq += k
            if self.blocked and not self.fin_queued:
                free = self.size - len(self.buf)
                if free >= (self.size >> 2) or not self.buf:
                    self.blocked = False
                    space = free
            if opts.ts_ok and seg.ts_ecr:
                # RFC 7323 §4.1 RTTM: only ACKs that advance the left edge.
                ms = ((opts.ts_now(now) - seg.ts_ecr) & MASK)
                if ms < _MAX_TS_RTT:
                    rtt.sample(ms / 1000.0 if ms else CLOCK_GRANULARITY)
                    self.rtt_sample = ms / 1000.0

        if opts.sack_ok and seg.sack_blocks:
            sb.on_sack(seg.sack_blocks, snd_una, self.snd_nxt, now, min_rtt)

        sent = sb.newest_clean_xmit
        if sent >= 0.0 and not opts.ts_ok:
            rtt.sample(now - sent)
            self.rtt_sample = now - sent

        ca = cc.state
        if is_dup:
            self._count("dup_ack")
        if opts.sack_ok:
            if sb.newly_sacked:
                sb.mark_lost_dupthresh(snd_una, mss)
            if sb.newest_delivered_xmit >= 0.0 and sb.rtx_fifo:
                sb.detect_lost_retransmits(sb.newest_delivered_xmit, rtt.reordering_window(),
                                           snd_una)
        elif is_dup and sb.count_dup_ack(self.snd_nxt - snd_una, mss) \
                and ca == CA_OPEN and snd_una >= cc.recover:
            sb.mark_head_lost()                 # RFC 6582 §3.2 step 2: ACK covers "recover"
            sb.limit_reno_sacked(self.snd_nxt - snd_una, mss)

        if acked > 0:
            if ca == CA_OPEN or snd_una >= cc.recover:
                sb.reset_dupacks()
            elif not opts.sack_ok and sb.on_partial_ack(acked, self.snd_nxt - snd_una, mss):
                self.force_rtx = True           # RFC 6582 §3.2 step 5: resend the next hole
            cc.on_ack(acked, snd_una, mss)

        if cc.state == CA_OPEN and sb.lost_pending > 0:
            cc.on_enter_recovery(self.snd_nxt - snd_una, mss, self.snd_nxt)
            self.force_rtx = True               # RFC 6675 (4.3): retransmit the first hole now
            self._count("fast_recovery")
        return space

    def on_timeout(self, now: float) -> None:
        """The retransmission timer expired with data outstanding: congestion control's loss
        window, the RTO backs off (RFC 6298 §5.5), and what was sent longer ago than an RTT
        and a reordering window is lost (Scoreboard.mark_lost_on_rto)."""
        rtt = self.rtt
        self.congestion.on_rto(self.snd_nxt - self.snd_una, self.options.eff_mss, self.snd_nxt,
                               rtt.backoff == 0)
        rtt.backoff += 1
        self.scoreboard.mark_lost_on_rto(self.snd_una, now - rtt.loss_age())
        self.force_rtx = True

    def check_invariants(self, handshake: bool) -> list:
        """The scoreboard's and the buffer's accounting; what disagrees (tests)."""
        bad = self.scoreboard.check_invariants(self.snd_una, self.snd_nxt, handshake)
        if len(self.buf) > self.size:
            bad.append("send buffer over its bound")
        if self.buf_seq + len(self.buf) < self.snd_nxt - (1 if self.fin_sent else 0):
            bad.append("sent beyond the buffered data")
        return bad

    def _count(self, name: str) -> None:
        ctr = self._ctr
        ctr[name] = ctr.get(name, 0) + 1
