"""The receive side of a connection: the receive sequence space (RFC 9293 §3.3.1), the in-order
octets the application has not read, the out-of-order ones held for reassembly, the window we
advertise and the ACK we owe (with the rate limits of ACKs to segments we do not take).

In-order data goes into a bytearray the application drains with ``read``; out-of-order data
goes into ``pyslirp._core.reassembly.SegmentQueue``. The window advertised is the free space of
the receive buffer minus the scaling granularity, so in-order plus out-of-order octets never
exceed the buffer (RCV.NXT + RCV.WND never moves left: see :meth:`Receiver.window_field`).

Sequence numbers are the connection's unwrapped ones; the reassembly queue works modulo 2^32.

Out-of-order octets of all the connections of a stack are bounded together too
(:class:`ReassemblyPool`): a client that opens many connections and leaves a hole in each cannot
make the gateway hold every receive buffer's worth. Past the bound, a new out-of-order segment is
dropped and counted (the sender retransmits it); in-order data is never refused by it, so an
established connection always makes progress.
"""

from __future__ import annotations

import struct
from typing import MutableMapping, Optional, Union

from pyslirp._core.reassembly import SegmentQueue
from pyslirp.net.tcp_types import MASK, TCPConfig

_U32PAIR = struct.Struct("!II")
_SACK_OPTION = b"\x01\x01\x05"          # NOP NOP SACK (RFC 2018 §3), then length and blocks


class ReassemblyPool:
    """Out-of-order octets held by every connection of a stack, and their bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


class Receiver:
    """RCV.NXT, the right edge we advertised, and the octets received but not yet read."""

    def __init__(self, config: TCPConfig, counters: MutableMapping[str, int]) -> None:
        rcv_buf = config.rcv_buf
        mss = config.mss
        self.irs = 0
        self.rcv_nxt = 0
        #: RCV.NXT + RCV.WND as last advertised
        self.rcv_adv = 0
        self.rcv_wscale = 0
        #: unread in-order octets
        self.buf = bytearray()
        self.size = rcv_buf
        #: the bound of buffered octets the window is computed from (the buffer less the
        #: window scale's rounding)
        self.cap = rcv_buf
        #: receiver SWS threshold (RFC 9293 §3.8.6.2.2): min(RCV.BUFF/2, MSS)
        self.sws = min(rcv_buf // 2, mss)
        self.mss = mss
        #: out-of-order octets (and a FIN beyond a hole); None until the first (most connections
        #: never see one, and an empty queue is 160 bytes)
        self.ooo: Optional[SegmentQueue] = None
        self.ooo_used = False
        #: the stack's bound of held out-of-order octets (None: this queue's own bound only)
        self.pool: Optional[ReassemblyPool] = None
        #: octets of ``ooo`` counted in the pool
        self.pool_charged = 0
        self.fin_rcvd = False
        #: the largest segment received, for "every second full-sized segment" (RFC 5681 §4.2)
        self.rcv_mss = min(mss, 536)
        #: octets delivered since our last ACK
        self.unacked = 0
        #: an ACK is owed now
        self.ack_now = False
        #: when the delayed ACK is due (RFC 9293 §3.8.6.3), or None
        self.delack_at: Optional[float] = None
        self.delack = config.delack
        #: RCV.NXT as our last ACK carried it (RFC 7323 Last.ACK.sent)
        self.last_ack_sent = 0
        self.oow_ack_interval = config.oow_ack_interval
        self.challenge_ack_limit = config.challenge_ack_limit
        self._oow_t = -1e18
        self._chal_t = -1e18
        self._chal_n = 0
        self._ctr = counters

    def start(self, irs: int, wscale: int) -> None:
        """The peer's SYN: RCV.NXT = IRS + 1; our SYN's window (never scaled) is the start of
        the window advertised."""
        self.irs = irs
        self.rcv_nxt = irs + 1
        self.last_ack_sent = self.rcv_nxt
        self.rcv_wscale = wscale
        self.cap = self.size - ((1 << wscale) - 1)
        free = self.cap
        self.rcv_adv = self.rcv_nxt + (free if free < 0xFFFF else 0xFFFF)

    def acceptable(self, seq: int, seglen: int) -> bool:
        """RFC 9293 §3.10.7.4 first check: does a segment of ``seglen`` at ``seq`` fall in the
        receive window?"""
        rcv_nxt = self.rcv_nxt
        rwnd = self.rcv_adv - rcv_nxt
        if seglen == 0:
            return seq == rcv_nxt if rwnd <= 0 else rcv_nxt <= seq < rcv_nxt + rwnd
        if rwnd <= 0:
            return seq == rcv_nxt       # special allowance: ACK/RST/bare FIN; text trimmed
        end = seq + seglen - 1
        return (rcv_nxt <= seq < rcv_nxt + rwnd) or (rcv_nxt <= end < rcv_nxt + rwnd)

    def ack_unacceptable(self, now: float, seglen: int) -> None:
        """RFC 9293 §3.10.7.4 first check: answer an unacceptable segment with an ACK; for
        zero-length ones at most every oow_ack_interval (Linux, against ACK loops)."""
        if seglen == 0:
            if now - self._oow_t < self.oow_ack_interval:
                self._count("oow_ack_ratelimited", 1)
                return
            self._oow_t = now
        self.ack_now = True

    def challenge_ack(self, now: float) -> None:
        """RFC 5961 §3-5: answer with a challenge ACK, at most challenge_ack_limit a second
        (§7)."""
        if now - self._chal_t >= 1.0:
            self._chal_t = now
            self._chal_n = 0
        if self._chal_n >= self.challenge_ack_limit:
            self._count("challenge_ack_ratelimited", 1)
            return
        self._chal_n += 1
        self._count("challenge_ack", 1)
        self.ack_now = True

    # ------------------------------------------------------------------ text

    def cut_to_window(self, seq: int, payload: Union[bytes, bytearray]) -> Union[bytes, bytearray]:
        """Text from ``seq`` (>= RCV.NXT) runs past the window we advertised: the part beyond
        is dropped (and counted) and an ACK owed, which tells the peer the window."""
        keep = self.rcv_adv - seq
        self._count("data_beyond_window", len(payload) - (keep if keep > 0 else 0))
        self.ack_now = True
        return payload[:keep] if keep > 0 else b""

    def take_in_order(self, payload: Union[bytes, bytearray], fin: bool) -> int:
        """Text at RCV.NXT, and a FIN after it: append it and the held octets it joins, and
        return how many octets that delivers. A FIN now in order (``fin_rcvd``) takes its
        sequence number too."""
        rcv_nxt = self.rcv_nxt
        plen = len(payload)
        delivered = 0
        if plen:
            self.buf += payload
            rcv_nxt += plen
            delivered = plen
            if plen > self.rcv_mss:
                self.rcv_mss = plen if plen < self.mss else self.mss
        if self.ooo_used:
            if fin:
                self.ooo.clear()
            else:
                more, queued_fin = self.ooo.pop(rcv_nxt & MASK)
                if more:
                    self.buf += more
                    rcv_nxt += len(more)
                    delivered += len(more)
                if queued_fin:
                    fin = True
                self.ack_now = True             # filled (part of) a gap: RFC 5681 §4.2
            self.ooo_used = self.ooo.bytes_held > 0 or self.ooo.fin_seq is not None
            if self.pool is not None:
                self._charge_pool()
        self.unacked += delivered
        if fin:
            rcv_nxt += 1
            self.fin_rcvd = True
            self.ooo_used = False
        self.rcv_nxt = rcv_nxt
        return delivered

    def hold(self, seq: int, payload: Union[bytes, bytearray], fin: bool) -> None:
        """Out-of-order text: hold it, ACK at once with SACK (RFC 5681 §4.2, RFC 2018 §4)."""
        ooo = self.ooo
        if ooo is None:
            ooo = self.ooo = SegmentQueue(self.size)
        plen = len(payload)
        pool = self.pool
        if pool is not None and pool.held + plen > pool.limit:
            self._count("ooo_memory_dropped", plen)
            self.ack_now = True                 # the duplicate ACK tells the sender what is missing
            return
        over = ooo.dropped_bytes
        stored = ooo.insert(seq & MASK, payload, self.rcv_nxt & MASK, fin)
        if stored < plen:
            over = ooo.dropped_bytes - over
            if over:
                self._count("ooo_dropped", over)             # reassembly bound hit
            if plen - stored - over:
                self._count("ooo_duplicate", plen - stored - over)
        self.ooo_used = True
        self.ack_now = True
        if pool is not None:
            self._charge_pool()

    def _charge_pool(self) -> None:
        """Bring the pool's count of our held octets up to date."""
        held = self.ooo.bytes_held if self.ooo is not None else 0
        self.pool.held += held - self.pool_charged
        self.pool_charged = held

    def delay_ack(self, now: float) -> None:
        """An ACK is owed, but may wait for the delayed-ACK time."""
        if self.delack_at is None:
            self.delack_at = now + self.delack

    def ack_sent(self, sack_complete: bool) -> None:
        """We sent an ACK of RCV.NXT; ``sack_complete``: with the SACK option owed, if any
        (else the ACK is still owed)."""
        self.last_ack_sent = self.rcv_nxt
        self.unacked = 0
        self.delack_at = None
        if sack_complete:
            self.ack_now = False

    def read(self, max_bytes: int) -> bytes:
        """Take up to ``max_bytes`` (all if negative) unread octets."""
        buf = self.buf
        if max_bytes < 0 or max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        return data

    def buffered(self) -> int:
        """Unread in-order plus held out-of-order octets."""
        return len(self.buf) + (self.ooo.bytes_held if self.ooo is not None else 0)

    def discard_held(self) -> None:
        """The connection closed: nothing more arrives, no ACK is owed (unread data stays)."""
        if self.ooo is not None:
            self.ooo.clear()
        self.ooo_used = False
        self.ack_now = False
        self.delack_at = None
        if self.pool is not None:
            self._charge_pool()

    # ------------------------------------------------------------------ what we advertise

    def window_update_due(self) -> bool:
        """After a read: a window update is worth a segment (RFC 9293 §3.8.6.2.2 with RFC 1122
        4.2.3.3) only when the right edge can move by the receiver-SWS threshold, and only while
        the window the peer has is small enough to hold it back; a wider one rides on the next
        ACK (after the handshake, the SYN's unscaled 64 KB would otherwise cost a segment)."""
        free = self.cap - len(self.buf)
        if self.rcv_nxt + free - self.rcv_adv < self.sws:
            return False
        wnd = self.rcv_adv - self.rcv_nxt
        return wnd < self.sws or wnd < 2 * self.rcv_mss

    def window_field(self) -> int:
        """The window to advertise, scaled (RFC 7323 §2.3). Receiver SWS avoidance (RFC 9293
        §3.8.6.2.2): the right edge moves only by at least min(RCV.BUFF/2, MSS); it never
        moves left (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4: round up, not down). ``cap``
        keeps the rounding inside the buffer."""
        ws = self.rcv_wscale
        nxt = self.rcv_nxt
        adv = self.rcv_adv
        free = self.cap - len(self.buf)
        if free > 0 and nxt + free - adv >= self.sws:
            lim = 0xFFFF << ws
            adv = nxt + (free if free < lim else lim)
        wnd = adv - nxt
        if wnd <= 0:
            self.rcv_adv = nxt if adv < nxt else adv
            return 0
        field = (wnd + (1 << ws) - 1) >> ws
        if field > 0xFFFF:
            field = 0xFFFF
        self.rcv_adv = nxt + (field << ws)
        return field

    def syn_window(self) -> int:
        """The window a SYN or SYN-ACK advertises (never scaled, RFC 7323 §2.2)."""
        free = self.cap - len(self.buf)
        return free if free < 0xFFFF else 0xFFFF

    def sack_option_size(self, max_blocks: int) -> int:
        """The octets the SACK option we owe takes (0 when nothing is held)."""
        if not self.ooo_used:
            return 0
        n = len(self.ooo.sack_blocks(max_blocks))
        return 4 + 8 * n if n else 0

    def sack_option(self, max_blocks: int) -> bytes:
        """The SACK option (RFC 2018 §3) for up to ``max_blocks`` held blocks; b"" if none."""
        blocks = self.ooo.sack_blocks(max_blocks) if max_blocks > 0 and self.ooo_used else None
        if not blocks:
            return b""
        parts = [_SACK_OPTION, bytes((2 + 8 * len(blocks),))]
        for left, right in blocks:
            parts.append(_U32PAIR.pack(left, right))
        return b"".join(parts)

    def _count(self, name: str, n: int) -> None:
        ctr = self._ctr
        ctr[name] = ctr.get(name, 0) + n
