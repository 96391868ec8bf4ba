"""The retransmission queue and SACK scoreboard of a connection's send side (RFC 6675).

Every transmitted segment has a :class:`SentSegment` record on the queue, from SND.UNA to
SND.NXT; the records are the SACK scoreboard and keep their boundaries when retransmitted.
Per-record flags (sacked / lost / retransmitted-and-in-flight) give, as in Linux,

    in_flight = (SND.NXT - SND.UNA) - sacked - lost + retransmitted        (RFC 6675 "pipe")

and the connection may send a segment while ``in_flight + len <= cwnd``. Loss is detected by
(1) RFC 6675 IsLost: DupThresh SACKed segments (or more than (DupThresh-1)*SMSS SACKed bytes)
above a hole; (2) lost retransmissions, RACK-style (RFC 8985 §6.2): a retransmission is lost
when a segment sent more than a reordering window after it has been delivered; (3) the RTO,
after which, as RFC 6675 §5.1 and Linux, only segments that should have been (S)ACKed by now are
marked lost -- never a go-back-N of segments that are merely in flight. Without SACK, NewReno
(RFC 6582) runs on the same machinery: each duplicate ACK stands for one segment that left the
network (Linux's "reno sack" emulation, equivalent to RFC 6582 cwnd inflation).

Sequence numbers are the connection's unwrapped ones; the scoreboard is told SND.UNA and
SND.NXT where it needs them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from operator import attrgetter
from typing import MutableMapping, Optional

from pyslirp.net.tcp_types import HALF, MASK

_SEQ = attrgetter("seq")
_END = attrgetter("end")
#: acknowledged records are dropped from the queue's front once more than this many (and more
#: than half the queue) have piled up
_COMPACT_AFTER = 64


class SentSegment:
    """One transmitted segment on the retransmission queue: an entry of the SACK scoreboard.
    ``end`` includes the FIN's sequence number when ``fin``."""

    def __init__(self, seq: int, end: int, fin: int, xmit: float) -> None:
        self.seq = seq
        self.end = end
        self.fin = fin
        self.xmit = xmit            # time of the latest transmission
        self.rtx = 0                # retransmissions so far (0: RTT samples are valid, Karn)
        self.sacked = False
        self.lost = False           # marked lost (and not since SACKed)
        self.retrans = False        # retransmitted and that copy believed in flight


class Scoreboard:
    """The records from SND.UNA to SND.NXT and the byte counts of their flags.

    After :meth:`on_cumulative_ack` and :meth:`on_sack`, ``newest_clean_xmit`` is the latest
    send time of a newly delivered segment never retransmitted (an RTT sample, Karn) and
    ``newest_delivered_xmit`` that of any newly delivered one whose delivery is not explained
    by an earlier copy (RACK); -1.0 when none. ``newly_sacked``: the ACK SACKed a new record.
    """

    def __init__(self, snd_una: int, dup_thresh: int, counters: MutableMapping[str, int]) -> None:
        self.records: list = []
        #: records before this index are acknowledged (dropped in batches)
        self.head = 0
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.retrans_bytes = 0
        #: records marked lost and not (since) retransmitted: what NextSeg (1) sends
        self.lost_pending = 0
        #: no lost record below it awaits retransmission
        self.rtx_hint = snd_una
        #: IsLost has marked everything below it
        self.mark_hint = snd_una
        #: the highest sequence number SACKed
        self.high_sacked = snd_una
        #: (send time, record) of retransmissions, oldest first: for lost-retransmit detection;
        #: None until the first (an empty deque is 760 bytes, held by every connection)
        self.rtx_fifo: Optional[deque] = None
        #: duplicate ACKs without SACK, and the octets they stand for (Linux's "reno sack")
        self.dupacks = 0
        self.reno_sacked = 0
        self.dup_thresh = dup_thresh
        self.newest_clean_xmit = -1.0
        self.newest_delivered_xmit = -1.0
        self.newly_sacked = False
        self._ctr = counters

    # ------------------------------------------------------------------ the queue

    def start(self, snd_una: int) -> None:
        """The handshake completed: data starts at ``snd_una``."""
        self.rtx_hint = self.mark_hint = self.high_sacked = snd_una

    def add(self, seq: int, end: int, fin: int, now: float) -> None:
        """A new segment [seq, end) was sent."""
        self.records.append(SentSegment(seq, end, fin, now))

    def empty(self) -> bool:
        """No record is outstanding."""
        return self.head >= len(self.records)

    def first(self) -> Optional[SentSegment]:
        """The oldest outstanding record (it starts at SND.UNA), or None."""
        return self.records[self.head] if self.head < len(self.records) else None

    def clear(self) -> None:
        """Forget every record (the connection closed, or unsent its window probe)."""
        self.records = []
        self.head = 0
        self.sacked_bytes = self.lost_bytes = self.retrans_bytes = 0
        self.lost_pending = 0
        self.rtx_fifo = None

    def in_flight(self, outstanding: int) -> int:
        """RFC 6675 "pipe" for ``outstanding`` = SND.NXT - SND.UNA octets."""
        return (outstanding - self.sacked_bytes - self.lost_bytes + self.retrans_bytes
                - self.reno_sacked)

    # ------------------------------------------------------------------ ACKs

    def begin_ack(self) -> None:
        """An ACK arrives: clear what the last one reported."""
        self.newest_clean_xmit = -1.0
        self.newest_delivered_xmit = -1.0
        self.newly_sacked = False

    def on_cumulative_ack(self, ack: int, now: float, min_rtt: float) -> None:
        """SND.UNA advanced to ``ack``: drop the records it covers."""
        rq = self.records
        h = self.head
        n = len(rq)
        while h < n:
            r = rq[h]
            if r.end <= ack:
                if r.sacked:
                    self.sacked_bytes -= r.end - r.seq
                else:
                    self._delivered(r, now, min_rtt)
                    self._clear_loss(r)
                h += 1
            else:
                if r.seq < ack:             # part of a record: its flags cover less
                    d = ack - r.seq
                    if r.sacked:
                        self.sacked_bytes -= d
                    if r.lost:
                        self.lost_bytes -= d
                    if r.retrans:
                        self.retrans_bytes -= d
                    r.seq = ack
                break
        if h > _COMPACT_AFTER and h * 2 > n:
            del rq[:h]
            h = 0
        self.head = h

    def on_sack(self, blocks: tuple, snd_una: int, snd_nxt: int, now: float,
                min_rtt: float) -> None:
        """Mark the records the SACK blocks (32-bit edges, RFC 2018) cover."""
        rq = self.records
        h = self.head
        n = len(rq)
        for l32, r32 in blocks:
            left = snd_una + ((l32 - snd_una + HALF) & MASK) - HALF
            right = left + ((r32 - l32) & MASK)
            if left < snd_una:
                self._count("dsack_received")        # RFC 2883 D-SACK (or stale)
                continue
            if right > snd_nxt or right <= left:
                self._count("sack_invalid")
                continue
            i = bisect_left(rq, left, h, n, key=_SEQ)
            while i < n:
                r = rq[i]
                if r.end > right:
                    break
                if not r.sacked:
                    r.sacked = True
                    self.sacked_bytes += r.end - r.seq
                    self._clear_loss(r)
                    self._delivered(r, now, min_rtt)
                    if r.end > self.high_sacked:
                        self.high_sacked = r.end
                    self.newly_sacked = True
                i += 1

    def _delivered(self, r: SentSegment, now: float, min_rtt: float) -> None:
        # Karn: only a segment never retransmitted gives an RTT sample. RACK: a retransmitted
        # one counts as delivered when an RTT has passed since it was resent.
        xmit = r.xmit
        if r.rtx == 0:
            if xmit > self.newest_clean_xmit:
                self.newest_clean_xmit = xmit
            if xmit > self.newest_delivered_xmit:
                self.newest_delivered_xmit = xmit
        elif now - xmit >= min_rtt and xmit > self.newest_delivered_xmit:
            self.newest_delivered_xmit = xmit

    def _clear_loss(self, r: SentSegment) -> None:
        """``r`` was delivered: it is no longer lost nor a retransmission in flight."""
        ln = r.end - r.seq
        if r.lost:
            r.lost = False
            self.lost_bytes -= ln
            if not r.retrans:
                self.lost_pending -= 1
        if r.retrans:
            r.retrans = False
            self.retrans_bytes -= ln

    def count_dup_ack(self, outstanding: int, mss: int) -> bool:
        """Without SACK (RFC 5681 §3.2 / RFC 6582): a duplicate ACK means a segment left the
        network. True when DupThresh of them have arrived."""
        self.dupacks += 1
        self.reno_sacked += mss
        self.limit_reno_sacked(outstanding, mss)
        return self.dupacks >= self.dup_thresh

    def on_partial_ack(self, acked: int, outstanding: int, mss: int) -> bool:
        """Without SACK, an ACK short of the recovery point (RFC 6582 §3.2 step 5): deflate
        the emulated duplicate ACKs by what was acknowledged beyond one SMSS, and the next hole
        is lost too. True if it was newly marked."""
        rs = self.reno_sacked - (acked - mss if acked > mss else 0)
        self.reno_sacked = rs if rs > 0 else 0
        marked = self.mark_head_lost()
        self.limit_reno_sacked(outstanding, mss)
        return marked

    def limit_reno_sacked(self, outstanding: int, mss: int) -> None:
        """Duplicate ACKs that a duplicating network made, not a loss, must not count more
        octets as delivered than can be: at least the holes (the lost octets, one SMSS at
        least) stay in flight (Linux's tcp_limit_reno_sacked)."""
        holes = self.lost_bytes if self.lost_bytes > mss else mss
        if holes > outstanding:
            holes = outstanding
        if self.reno_sacked + holes > outstanding:
            self.reno_sacked = outstanding - holes

    def reset_dupacks(self) -> None:
        self.dupacks = 0
        self.reno_sacked = 0

    # ------------------------------------------------------------------ loss

    def _mark_lost(self, r: SentSegment) -> None:
        r.lost = True
        self.lost_bytes += r.end - r.seq
        self.lost_pending += 1
        if r.seq < self.rtx_hint:
            self.rtx_hint = r.seq

    def mark_head_lost(self) -> bool:
        """NewReno: the first unacknowledged segment is lost (fast retransmit / partial ACK).
        True if it was newly marked."""
        r = self.first()
        if r is None or r.sacked or r.lost:
            return False
        self._mark_lost(r)
        return True

    def mark_lost_dupthresh(self, snd_una: int, mss: int) -> None:
        """RFC 6675 §4 IsLost: a segment with DupThresh SACKed segments, or more than
        (DupThresh-1)*SMSS SACKed octets, above it is lost. The marking point only rises."""
        rq = self.records
        h = self.head
        n = len(rq)
        hs = self.high_sacked
        if hs <= snd_una:
            return
        k = bisect_left(rq, hs, h, n, key=_END)
        if k >= n:
            k = n - 1
        thresh = self.dup_thresh
        bthresh = (thresh - 1) * mss
        cnt = 0
        nbytes = 0
        while k >= h:
            r = rq[k]
            if r.sacked:
                cnt += 1
                nbytes += r.end - r.seq
                if cnt >= thresh or nbytes > bthresh:
                    break
            k -= 1
        if k < h:
            return
        edge = rq[k].seq
        if edge <= self.mark_hint:
            return
        i = bisect_left(rq, self.mark_hint, h, k, key=_SEQ)
        while i < k:
            r = rq[i]
            if not r.sacked and not r.lost:
                self._mark_lost(r)
            i += 1
        self.mark_hint = edge

    def detect_lost_retransmits(self, delivered_xmit: float, reordering_window: float,
                                snd_una: int) -> None:
        """RACK-style (RFC 8985 §6.2): a retransmission is lost when a segment sent more than
        a reordering window after it has already been delivered."""
        limit = delivered_xmit - reordering_window
        fifo = self.rtx_fifo
        if fifo is None:
            return
        while fifo and fifo[0][0] < limit:
            t, r = fifo.popleft()
            if r.retrans and r.xmit == t and not r.sacked and r.end > snd_una:
                r.retrans = False
                self.retrans_bytes -= r.end - r.seq
                self.lost_pending += 1
                if r.seq < self.rtx_hint:
                    self.rtx_hint = r.seq
                self._count("lost_retransmit")

    def mark_lost_on_rto(self, snd_una: int, sent_before: float) -> None:
        """The retransmission timer expired: mark lost what should have been acknowledged by
        now, the head and, as Linux's tcp_timeout_mark_lost, segments sent before
        ``sent_before`` (an RTT and a reordering window ago); the rest is in flight, not lost
        (no go-back-N)."""
        rq = self.records
        h = self.head
        n = len(rq)
        self.reset_dupacks()
        if rq[h].sacked:
            # The receiver reneged on SACKed data (RFC 2018 §8): forget all SACK state.
            self._count("sack_reneging")
            for i in range(h, n):
                rq[i].sacked = False
            self.sacked_bytes = 0
            self.high_sacked = snd_una
        lost_bytes = 0
        retrans_bytes = 0
        pending = 0
        for i in range(h, n):
            r = rq[i]
            if r.sacked:
                continue
            if i == h or r.xmit <= sent_before:
                r.lost = True
                r.retrans = False
            if r.lost:
                ln = r.end - r.seq
                lost_bytes += ln
                if r.retrans:
                    retrans_bytes += ln
                else:
                    pending += 1
        self.lost_bytes = lost_bytes
        self.retrans_bytes = retrans_bytes
        self.lost_pending = pending
        self.rtx_hint = snd_una

    # ------------------------------------------------------------------ retransmission

    def next_lost(self, snd_nxt: int) -> Optional[SentSegment]:
        """RFC 6675 NextSeg rule (1): the lowest lost segment not yet retransmitted."""
        rq = self.records
        h = self.head
        n = len(rq)
        i = bisect_left(rq, self.rtx_hint, h, n, key=_SEQ) if h < n else n
        while i < n:
            r = rq[i]
            if r.lost and not r.retrans and not r.sacked:
                self.rtx_hint = r.seq
                return r
            i += 1
        self.lost_pending = 0
        self.rtx_hint = snd_nxt
        return None

    def on_retransmit(self, r: SentSegment, now: float, watch: bool) -> None:
        """Lost record ``r`` was sent again; ``watch``: detect the loss of this copy (SACK)."""
        r.rtx += 1
        r.xmit = now
        r.retrans = True
        self.retrans_bytes += r.end - r.seq
        self.lost_pending -= 1
        if watch:
            if self.rtx_fifo is None:
                self.rtx_fifo = deque()
            self.rtx_fifo.append((now, r))

    # ------------------------------------------------------------------ checks

    def check_invariants(self, snd_una: int, snd_nxt: int, handshake: bool) -> list:
        """Recompute the counts from the records; return what disagrees (tests).
        ``handshake``: SYN-SENT or SYN-RECEIVED, whose SYN has no record."""
        bad: list[str] = []
        rq = self.records[self.head:]
        if rq:
            if rq[0].seq != snd_una:
                bad.append(f"head {rq[0].seq} != snd_una {snd_una}")
            if rq[-1].end != snd_nxt:
                bad.append(f"tail {rq[-1].end} != snd_nxt {snd_nxt}")
            for a, b in zip(rq, rq[1:]):
                if a.end != b.seq:
                    bad.append(f"gap/overlap at {a.end}/{b.seq}")
                    break
        elif snd_nxt != snd_una and not handshake:
            bad.append("outstanding sequence space without records")
        sacked = sum(r.end - r.seq for r in rq if r.sacked)
        lost = sum(r.end - r.seq for r in rq if r.lost)
        retrans = sum(r.end - r.seq for r in rq if r.retrans)
        pending = sum(1 for r in rq if r.lost and not r.retrans and not r.sacked)
        if (sacked, lost, retrans) != (self.sacked_bytes, self.lost_bytes, self.retrans_bytes):
            bad.append(f"bytes sacked/lost/retrans {(sacked, lost, retrans)} != "
                       f"{(self.sacked_bytes, self.lost_bytes, self.retrans_bytes)}")
        if any(r.sacked and (r.lost or r.retrans) for r in rq):
            bad.append("a SACKed segment is also lost/retransmitted")
        if any(r.retrans and not r.lost for r in rq):
            bad.append("a retransmitted segment not marked lost")
        if pending > self.lost_pending or self.lost_pending < 0:
            bad.append(f"lost pending {pending} vs {self.lost_pending}")
        if self.in_flight(snd_nxt - snd_una) < 0:
            bad.append(f"in_flight {self.in_flight(snd_nxt - snd_una)} < 0")
        return bad

    def _count(self, name: str) -> None:
        ctr = self._ctr
        ctr[name] = ctr.get(name, 0) + 1
