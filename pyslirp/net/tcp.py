"""One TCP connection (RFC 9293), sans-IO.

Theory of operation
-------------------
A ``TCPConnection`` is the transmission control block of one 4-tuple. It never touches a
socket or a clock: every call that can make it transmit takes ``now`` (seconds, any epoch,
monotonic), segments to send accumulate until ``take_segments()``, what the application must
know accumulates until ``events()``, and ``next_deadline()``/``handle_timer(now)`` drive the
retransmission, persist, delayed-ACK and TIME-WAIT timers. The stack (``stack.py``)
demultiplexes segments to connections by 4-tuple, parses them with
``tcp_segment.parse_segment`` (which verifies the checksum) and wraps what we emit in IPv4.

Opening. Passive: the stack builds the connection from a SYN with ``from_syn`` (state LISTEN,
the SYN held); the runtime tries the service and then calls ``accept(now)`` (SYN-ACK, state
SYN-RECEIVED) or ``refuse(now)`` (RST). SYNs retransmitted meanwhile are absorbed and counted.
Active: construct and call ``connect(now)``.

Sequence numbers. Internally every sequence number is an *unwrapped* int: ISS and IRS are the
32-bit values from the wire and SND.*/RCV.* only grow, so comparisons are plain ``<``. A
32-bit value from a segment is unwrapped once, against RCV.NXT (SEG.SEQ) or
SND.UNA (SEG.ACK, SACK edges); values go back to 32 bits (``& MASK``) only on output and at
the reassembly queue (which works modulo 2^32).

Receive side. In-order data goes into a bytearray the application drains with ``read``;
out-of-order data goes into ``pyslirp._core.reassembly.SegmentQueue``. The window advertised
is the free space of the receive buffer minus the scaling granularity, so in-order plus
out-of-order bytes never exceed ``rcv_buf`` (RCV.NXT + RCV.WND never moves left: see
``_window_field``). Delayed ACKs per RFC 5681 §4.2 / RFC 9293 §3.8.6.3.

Send side. Accepted-but-unacknowledged bytes live in one bytearray starting at SND.UNA
(CPython deletes from the front of a bytearray in O(1) amortised, appends likewise). Every
transmitted segment has a ``_Sent`` record on the retransmission queue; the records are the
SACK scoreboard (RFC 6675) and keep their boundaries when retransmitted. Per-record flags
(sacked / lost / retransmitted-and-in-flight) give, as in Linux,

    in_flight = (SND.NXT - SND.UNA) - sacked - lost + retransmitted        (RFC 6675 "pipe")

and a segment may be sent while ``in_flight + len <= cwnd``. Loss is detected by (1) RFC 6675
IsLost: DupThresh SACKed segments (or more than (DupThresh-1)*SMSS SACKed bytes) above a
hole; (2) lost retransmissions, RACK-style (RFC 8985 §6.2): a retransmission is lost when a
segment sent more than a reordering window after it has been delivered; (3) the RTO, after
which, as RFC 6675 §5.1 and Linux, only segments that should have been (S)ACKed by now are
marked lost -- never a go-back-N of segments that are merely in flight. Without SACK, NewReno
(RFC 6582) runs on the same machinery: each duplicate ACK stands for one segment that left the
network (Linux's "reno sack" emulation, equivalent to RFC 6582 cwnd inflation).

Transitions that are mere table lookups are written as tables (``CLOSE_TRANSITIONS``,
``FIN_RECEIVED_TRANSITIONS``, ``FIN_ACKED_TRANSITIONS``); the rest of §3.10.7 is written out.

Counters (per connection, or in a mapping the stack passes in and shares): segments_in,
segments_out, and for every segment dropped or not fully used a reason: out_of_window,
duplicate_segment, paws_rejected, rst_rejected (RST outside the window), rst_challenged,
syn_in_window, syn_while_pending, pending_dropped, ack_unacceptable, bad_ack, no_ack,
data_beyond_window (octets), ooo_dropped (octets over the reassembly bound),
ooo_duplicate (octets already held), data_after_close,
syn_data_ignored, urg_ignored, closed_dropped, close_with_unread; replies: challenge_ack,
challenge_ack_ratelimited, oow_ack_ratelimited, rst_sent, delayed_ack, window_update;
loss: rto, retrans_rto, retrans_sack, retrans_fast, retrans_syn, lost_retransmit,
fast_recovery, dup_ack, zero_window_probe, sack_invalid, sack_reneging, dsack_received;
rst_received, aborted_timeout.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from operator import attrgetter
from typing import Callable, MutableMapping, NamedTuple, Optional, Union

from pyslirp._core.checksum import internet_checksum, pseudo_header_sum
from pyslirp._core.reassembly import SegmentQueue
from pyslirp.net.line_budget import LineBudget
from pyslirp.net.tcp_segment import (
    ACK, FIN, HEADER, PROTO_TCP, PSH, RST, SYN, URG, TCPSegment, build_options,
)

__all__ = [
    "TCPState", "TCPConfig", "TCPConnection", "OutSegment", "TCPUsageError",
    "Established", "DataReceived", "SendSpace", "PeerFinished", "Reset", "Aborted", "Closed",
    "TCPEvent", "isn", "is_connection_request", "reset_for_segment",
    "CLOSE_TRANSITIONS", "FIN_RECEIVED_TRANSITIONS", "FIN_ACKED_TRANSITIONS",
]

MASK = 0xFFFFFFFF
HALF = 0x80000000
_U16 = struct.Struct("!H")
_OPT_TS = struct.Struct("!BBBBII")
_U32PAIR = struct.Struct("!II")
_SEQ = attrgetter("seq")
_END = attrgetter("end")
_PAWS_IDLE = 24 * 86400.0          # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
_CLOCK_G = 0.001                   # RFC 6298 clock granularity G (our timestamps are in ms)


class TCPState(enum.IntEnum):
    """RFC 9293 §3.3.2 connection states. LISTEN here means "SYN received, accept pending"."""
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


CLOSED = TCPState.CLOSED
LISTEN = TCPState.LISTEN
SYN_SENT = TCPState.SYN_SENT
SYN_RECEIVED = TCPState.SYN_RECEIVED
ESTABLISHED = TCPState.ESTABLISHED
FIN_WAIT_1 = TCPState.FIN_WAIT_1
FIN_WAIT_2 = TCPState.FIN_WAIT_2
CLOSE_WAIT = TCPState.CLOSE_WAIT
CLOSING = TCPState.CLOSING
LAST_ACK = TCPState.LAST_ACK
TIME_WAIT = TCPState.TIME_WAIT

#: RFC 9293 §3.10.4 CLOSE (our ``shutdown_write``): queue a FIN after the data, then move to.
#: (SYN-SENT/SYN-RECEIVED/LISTEN defer the FIN until ESTABLISHED; other states ignore it.)
CLOSE_TRANSITIONS = {ESTABLISHED: FIN_WAIT_1, CLOSE_WAIT: LAST_ACK}
#: RFC 9293 §3.10.7.4 eighth step: the peer's FIN is processed (in order) in these states.
#: FIN-WAIT-1 whose FIN the same segment acknowledged is already FIN-WAIT-2 (fifth step).
FIN_RECEIVED_TRANSITIONS = {
    SYN_RECEIVED: CLOSE_WAIT, ESTABLISHED: CLOSE_WAIT, FIN_WAIT_1: CLOSING,
    FIN_WAIT_2: TIME_WAIT, CLOSE_WAIT: CLOSE_WAIT, CLOSING: CLOSING, LAST_ACK: LAST_ACK,
    TIME_WAIT: TIME_WAIT,
}
#: RFC 9293 §3.10.7.4 fifth step: our FIN has been acknowledged.
FIN_ACKED_TRANSITIONS = {FIN_WAIT_1: FIN_WAIT_2, CLOSING: TIME_WAIT, LAST_ACK: CLOSED}

_SYNCHRONIZED = frozenset((SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
                           CLOSING, LAST_ACK, TIME_WAIT))
_CAN_SEND = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
_TEXT_STATES = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))
_APP_SEND_STATES = frozenset((LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT))

# Congestion-control states (Linux's names for RFC 5681/6582/6675 phases).
_CA_OPEN = 0
_CA_RECOVERY = 1        # fast recovery (SACK: RFC 6675 §5; no SACK: RFC 6582)
_CA_LOSS = 2            # after an RTO, until SND.UNA passes the recovery point


# ----------------------------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class Established:
    """The three-way handshake completed."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """New in-order data is readable; ``available`` octets are buffered in total. ``push``: the
    sender pushed it (PSH, RFC 9293 §3.9.1.2) — deliver it now rather than gather more."""
    available: int
    push: bool = True


@dataclass(frozen=True, slots=True)
class SendSpace:
    """The send buffer, which had refused data, has ``space`` octets free again."""
    space: int


@dataclass(frozen=True, slots=True)
class PeerFinished:
    """The peer's FIN arrived (after all its data): half-close toward the service once
    ``read`` has drained what is buffered (``at_eof`` turns True)."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer reset the connection (``state``: the state it was in, e.g. "SYN_SENT" means
    connection refused). Buffered received data stays readable. ``Closed`` follows."""
    state: str


@dataclass(frozen=True, slots=True)
class Aborted:
    """We gave up: ``reason`` is "timeout" (retransmissions), "syn_timeout",
    "fin_wait_2_timeout" or "data_after_close". ``Closed`` follows."""
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is finished on the wire; remove it once ``read`` has drained it."""


TCPEvent = Union[Established, DataReceived, SendSpace, PeerFinished, Reset, Aborted, Closed]


class OutSegment(NamedTuple):
    """A segment to transmit: the TCP header and payload with the checksum filled in.
    ``interactive`` asks the line scheduler for priority: pure ACKs and control segments,
    small segments, and everything of a connection marked ``interactive``."""
    data: bytes
    interactive: bool


class TCPUsageError(Exception):
    """The application called the connection in a way its state does not allow."""


# ----------------------------------------------------------------------------------- config

@dataclass(frozen=True, slots=True)
class TCPConfig:
    """Per-connection tunables (the runtime fills them from its configuration)."""
    #: Our MSS: link MTU - 40 (RFC 9293 §3.7.1). Advertised, and the cap on what we send.
    mss: int = 1460
    #: Receive buffer: unread in-order plus out-of-order octets never exceed it.
    rcv_buf: int = 256 * 1024
    #: Send buffer: unacknowledged plus unsent octets never exceed it.
    snd_buf: int = 256 * 1024
    window_scaling: bool = True      # RFC 7323 §2
    sack: bool = True                # RFC 2018 / RFC 6675
    timestamps: bool = False         # RFC 7323 §3-5: off by default, they defeat VJ compression
    nodelay: bool = False            # True disables Nagle (RFC 9293 §3.7.4)
    initial_rto: float = 1.0         # RFC 6298 §2.1
    min_rto: float = 0.2             # floor of the variance term, as Linux (RTO >= SRTT+min_rto)
    max_rto: float = 60.0            # RFC 6298 §2.5
    max_retries: int = 15            # RTOs without progress before giving up (Linux tcp_retries2)
    syn_retries: int = 6             # SYN retransmissions (Linux tcp_syn_retries)
    synack_retries: int = 5          # SYN-ACK retransmissions (Linux tcp_synack_retries)
    delack: float = 0.04             # delayed-ACK timer (RFC 9293 §3.8.6.3: < 0.5 s; Linux 40 ms)
    time_wait: float = 2.0           # TIME-WAIT: short, we are an endpoint behind a proxy
    fin_wait_2_timeout: float = 60.0  # after close(): FIN-WAIT-2 does not wait forever
    initial_window: int = 10         # IW in segments (RFC 6928)
    dup_thresh: int = 3              # RFC 5681 / RFC 6675 DupThresh
    challenge_ack_limit: int = 10    # challenge ACKs per second (RFC 5961 §7)
    oow_ack_interval: float = 0.5    # min gap between ACKs to out-of-window pure ACKs (Linux)
    interactive_max: int = 96        # payloads this small are marked interactive

    def __post_init__(self) -> None:
        if not 48 <= self.mss <= 65495:
            raise ValueError(f"mss out of range: {self.mss}")
        if self.rcv_buf < 2 * self.mss or self.snd_buf < 1:
            raise ValueError("rcv_buf must hold two segments and snd_buf must be positive")


# ----------------------------------------------------------------------------------- helpers

def isn(secret: bytes, local: tuple[bytes, int], remote: tuple[bytes, int], now: float) -> int:
    """RFC 6528 §3 initial sequence number: ISN = M + F(localip, localport, remoteip,
    remoteport, secretkey), M a 4-microsecond timer, F a keyed PRF (BLAKE2s here; Linux uses
    SipHash)."""
    key = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()
    h = hashlib.blake2s(bytes(local[0]) + local[1].to_bytes(2, "big")
                        + bytes(remote[0]) + remote[1].to_bytes(2, "big"),
                        key=key, digest_size=4)
    return (int(now * 250_000) + int.from_bytes(h.digest(), "big")) & MASK


def is_connection_request(seg: TCPSegment) -> bool:
    """A segment that may open a connection in LISTEN (RFC 9293 §3.10.7.2): SYN without ACK
    or RST; SYN+FIN is refused too, as Linux does."""
    return seg.flags & (SYN | ACK | RST | FIN) == SYN


def reset_for_segment(seg: TCPSegment, src: bytes, dst: bytes) -> Optional[bytes]:
    """The RST answering ``seg`` when no connection exists (RFC 9293 §3.10.7.1), sent from
    ``src`` (our address, seg's destination) to ``dst``; None when ``seg`` is itself a RST."""
    f = seg.flags
    if f & RST:
        return None
    if f & ACK:
        seq, ack, flags = seg.ack, 0, RST
    else:
        seq, ack, flags = 0, (seg.seq + seg.seg_len) & MASK, RST | ACK
    buf = bytearray(HEADER.pack(seg.dst_port, seg.src_port, seq, ack, 0x50, flags, 0, 0, 0))
    _U16.pack_into(buf, 16, internet_checksum(buf, pseudo_header_sum(src, dst, PROTO_TCP, 20)))
    return bytes(buf)


class _Sent:
    """One transmitted segment on the retransmission queue: an entry of the SACK scoreboard.
    ``end`` includes the FIN's sequence number when ``fin``."""
    __slots__ = ("seq", "end", "fin", "xmit", "rtx", "sacked", "lost", "retrans")

    def __init__(self, seq: int, end: int, fin: int, xmit: float) -> None:
        self.seq = seq
        self.end = end
        self.fin = fin
        self.xmit = xmit            # time of the latest transmission
        self.rtx = 0                # retransmissions so far (0: RTT samples are valid, Karn)
        self.sacked = False
        self.lost = False           # marked lost (and not since SACKed)
        self.retrans = False        # retransmitted and that copy believed in flight


# ----------------------------------------------------------------------------------- TCB

class TCPConnection:
    """RFC 9293 TCP endpoint for one 4-tuple. See the module docstring."""

    __slots__ = (
        "local_addr", "local_port", "remote_addr", "remote_port", "config", "state",
        "interactive", "nodelay", "budget", "_budget_charged", "on_change",
        "_ctr", "_events", "_out", "_ph",
        # send sequence space (RFC 9293 §3.3.1), unwrapped
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd",
        "snd_wscale", "_snd_buf", "_buf_seq", "_fin_queued", "_fin_sent", "_fin_seq",
        "_snd_blocked",
        # receive sequence space, unwrapped
        "irs", "rcv_nxt", "rcv_adv", "rcv_wscale", "_rcv_buf", "_rcv_cap", "_sws",
        "_ooo", "_ooo_used", "_fin_rcvd", "_rcv_mss", "_rcv_unacked", "_ack_now",
        "_last_ack_sent", "_app_closed",
        # options
        "_syn", "_ws_offer", "_ws_ok", "_mss_cap", "eff_mss", "_sack_ok", "_ts_ok", "_ts_recent",
        "_ts_recent_age", "_ts_offset",
        # RTT / timers (RFC 6298)
        "srtt", "rttvar", "_rto_base", "_backoff", "_min_rtt", "_retries", "_syn_rtx",
        "_syn_xmit", "_rto_at", "_persist_at", "_delack_at", "_tw_at", "_in_persist",
        "_persist_backoff", "_probes", "_last_xmit",
        # congestion control (RFC 5681/6582/6675)
        "cwnd", "ssthresh", "_ca_state", "_recover", "_ca_acc", "_dupacks", "_reno_sacked",
        "_cwnd_limited", "_force_rtx",
        # scoreboard
        "_rq", "_rq_head", "_sacked_bytes", "_lost_bytes", "_retrans_bytes", "_lost_pending",
        "_rtx_hint", "_mark_hint", "_high_sacked", "_rtx_fifo",
        # rate limits
        "_chal_t", "_chal_n", "_oow_t",
    )

    def __init__(self, local_addr: bytes, local_port: int, remote_addr: bytes,
                 remote_port: int, *, iss: int, config: Optional[TCPConfig] = None,
                 now: float = 0.0,
                 counters: Optional[MutableMapping[str, int]] = None) -> None:
        cfg = config if config is not None else TCPConfig()
        self.local_addr = bytes(local_addr)
        self.local_port = local_port
        self.remote_addr = bytes(remote_addr)
        self.remote_port = remote_port
        self.config = cfg
        self.state = CLOSED
        #: Runtime hint: every segment of this connection is low-delay traffic.
        self.interactive = False
        #: Nagle off (RFC 9293 §3.7.4 lets the application disable it).
        self.nodelay = cfg.nodelay
        #: The link's shared budget of bulk bytes in flight (set by the stack), or None.
        self.budget: Optional[LineBudget] = None
        self._budget_charged = 0
        #: Called with the connection after an application call that may have produced
        #: segments or events (the stack sets it to collect them), or None.
        self.on_change: Optional[Callable[["TCPConnection"], None]] = None
        self._ctr = counters if counters is not None else {}
        self._events: list = []
        self._out: list = []
        self._ph = pseudo_header_sum(self.local_addr, self.remote_addr, PROTO_TCP, 0)

        iss &= MASK
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self._snd_buf = bytearray()
        self._buf_seq = iss + 1
        self._fin_queued = False
        self._fin_sent = False
        self._fin_seq = 0
        self._snd_blocked = False

        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = 0
        self._rcv_buf = bytearray()
        self._rcv_cap = cfg.rcv_buf
        self._sws = min(cfg.rcv_buf // 2, cfg.mss)
        self._ooo = SegmentQueue(cfg.rcv_buf)
        self._ooo_used = False
        self._fin_rcvd = False
        self._rcv_mss = min(cfg.mss, 536)
        self._rcv_unacked = 0
        self._ack_now = False
        self._last_ack_sent = 0
        self._app_closed = False

        self._syn: Optional[TCPSegment] = None
        ws = 0
        while ws < 14 and (cfg.rcv_buf >> ws) > 0xFFFF:
            ws += 1
        self._ws_offer = ws
        self._ws_ok = False
        self._mss_cap = cfg.mss
        self.eff_mss = min(cfg.mss, 536)
        self._sack_ok = False
        self._ts_ok = False
        self._ts_recent = 0
        self._ts_recent_age = now
        self._ts_offset = (iss * 2654435761 + 0x9E3779B9) & MASK

        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self._rto_base = cfg.initial_rto
        self._backoff = 0
        self._min_rtt: Optional[float] = None
        self._retries = 0
        self._syn_rtx = 0
        self._syn_xmit = now
        self._rto_at: Optional[float] = None
        self._persist_at: Optional[float] = None
        self._delack_at: Optional[float] = None
        self._tw_at: Optional[float] = None
        self._in_persist = False
        self._persist_backoff = 0
        self._probes = 0
        self._last_xmit = now

        self.cwnd = cfg.mss
        self.ssthresh = 1 << 30
        self._ca_state = _CA_OPEN
        self._recover = iss
        self._ca_acc = 0
        self._dupacks = 0
        self._reno_sacked = 0
        self._cwnd_limited = False
        self._force_rtx = False

        self._rq: list = []
        self._rq_head = 0
        self._sacked_bytes = 0
        self._lost_bytes = 0
        self._retrans_bytes = 0
        self._lost_pending = 0
        self._rtx_hint = iss
        self._mark_hint = iss
        self._high_sacked = iss
        self._rtx_fifo: deque = deque()

        self._chal_t = -1e18
        self._chal_n = 0
        self._oow_t = -1e18

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_syn(cls, syn: TCPSegment, local_addr: bytes, remote_addr: bytes, *, iss: int,
                 config: Optional[TCPConfig] = None, now: float = 0.0,
                 counters: Optional[MutableMapping[str, int]] = None) -> "TCPConnection":
        """Passive open with deferred accept: a connection in LISTEN holding ``syn`` (which
        must satisfy ``is_connection_request``); nothing is sent until ``accept``/``refuse``."""
        if not is_connection_request(syn):
            raise ValueError("from_syn needs a SYN without ACK, RST or FIN")
        c = cls(local_addr, syn.dst_port, remote_addr, syn.src_port, iss=iss, config=config,
                now=now, counters=counters)
        c.state = LISTEN
        c._syn = syn
        c._learn_syn(syn, now)
        c._count("segments_in")
        if syn.payload:
            c._count("syn_data_ignored")    # not acknowledged: the peer sends it again
        return c

    def connect(self, now: float) -> None:
        """Active open (RFC 9293 §3.10.1): send a SYN, enter SYN-SENT."""
        if self.state != CLOSED or self._rq or self.snd_nxt != self.iss:
            raise TCPUsageError("connect() on a connection that is not fresh")
        self.state = SYN_SENT
        self.snd_nxt = self.iss + 1
        self._send_syn(now)
        self._rto_at = now + self._rto_base
        self._changed()

    def accept(self, now: float) -> None:
        """The service accepted: answer the held SYN with a SYN-ACK (LISTEN -> SYN-RECEIVED)."""
        if self.state != LISTEN:
            raise TCPUsageError(f"accept() in state {self.state.name}")
        self.state = SYN_RECEIVED
        self.snd_nxt = self.iss + 1
        self._send_syn(now)
        self._rto_at = now + self._rto_base
        self._changed()

    def refuse(self, now: float) -> None:
        """The service refused or timed out: RST the held SYN (RFC 9293 §3.10.7.2) and close."""
        if self.state != LISTEN:
            raise TCPUsageError(f"refuse() in state {self.state.name}")
        syn = self._syn
        assert syn is not None
        self._send_ctl(0, (syn.seq + syn.seg_len) & MASK, RST | ACK)
        self._enter_closed()
        self._changed()

    # ------------------------------------------------------------------ application side

    def send(self, data: Union[bytes, bytearray, memoryview], now: float) -> int:
        """Queue up to ``send_space`` octets of ``data``; return how many were taken."""
        if self._fin_queued:
            raise TCPUsageError("send() after shutdown_write()/close()")
        if self.state not in _APP_SEND_STATES:
            return 0
        n = len(data)
        space = self.config.snd_buf - len(self._snd_buf)
        if n > space:
            n = space if space > 0 else 0
            self._snd_blocked = True
        if n:
            self._snd_buf += data if n == len(data) else memoryview(data)[:n]
            if self.state in _CAN_SEND:
                self._output(now)
                self._changed()
        return n

    def resume(self, now: float) -> None:
        """The line budget has room again: send what it and the windows allow."""
        if self.state in _CAN_SEND:
            self._transmit(now)

    @property
    def send_space(self) -> int:
        """Octets ``send`` would accept now."""
        if self._fin_queued or self.state not in _APP_SEND_STATES:
            return 0
        s = self.config.snd_buf - len(self._snd_buf)
        return s if s > 0 else 0

    @property
    def send_buffered(self) -> int:
        """Octets held in the send buffer (unacknowledged plus unsent)."""
        return len(self._snd_buf)

    def read(self, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order received octets. Reopening the
        window by at least min(MSS, half the buffer) sends a window update."""
        buf = self._rcv_buf
        if not buf:
            return b""
        if max_bytes < 0 or max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        st = self.state
        if st in _SYNCHRONIZED and st != TIME_WAIT and not self._fin_rcvd:
            # Window update (RFC 9293 §3.8.6.2.2 with RFC 1122 4.2.3.3): only when the
            # right edge can move by the receiver-SWS threshold, and only while the window
            # the peer has is small enough to hold it back; a wider one rides on the next ACK
            # (after the handshake, the SYN's unscaled 64 KB would otherwise cost a segment).
            free = self._rcv_cap - len(buf)
            if self.rcv_nxt + free - self.rcv_adv >= self._sws:
                wnd = self.rcv_adv - self.rcv_nxt
                if wnd < self._sws or wnd < 2 * self._rcv_mss:
                    self._ack_now = True
                    self._count("window_update")
                    self._output(now)
                    self._changed()
        return data

    @property
    def readable(self) -> int:
        """Octets ``read`` can return now."""
        return len(self._rcv_buf)

    @property
    def rcv_buffered(self) -> int:
        """Octets held on the receive side: unread in-order plus out-of-order."""
        return len(self._rcv_buf) + self._ooo.bytes_held

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and everything before it has been read."""
        return self._fin_rcvd and not self._rcv_buf

    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the queued data (RFC 9293 §3.10.4 CLOSE)."""
        self._queue_fin(now)
        self._changed()

    def _queue_fin(self, now: float) -> None:
        if self._fin_queued:
            return
        st = self.state
        if st in (LISTEN, SYN_SENT, SYN_RECEIVED):
            self._fin_queued = True            # sent once ESTABLISHED
            return
        nxt = CLOSE_TRANSITIONS.get(st)
        if nxt is None:
            return
        self._fin_queued = True
        self.state = nxt
        self._output(now)

    def close(self, now: float) -> None:
        """Full close: FIN, and we read nothing more. Unread data, or data arriving later,
        makes it an abort (RST) as RFC 2525 §2.17 and Linux do."""
        st = self.state
        if st == LISTEN:
            self.refuse(now)
            return
        if st == SYN_SENT:
            self._enter_closed()               # RFC 9293 §3.10.4: delete the TCB
            self._changed()
            return
        if st == CLOSED:
            return
        if self._rcv_buf and st not in (TIME_WAIT, CLOSING, LAST_ACK):
            self._count("close_with_unread")
            self.abort(now)
            return
        self._app_closed = True
        self._queue_fin(now)
        if self.state == FIN_WAIT_2 and self._tw_at is None:
            self._tw_at = now + self.config.fin_wait_2_timeout
        self._changed()

    def abort(self, now: float) -> None:
        """RFC 9293 §3.10.5 ABORT: RST (in synchronized states) and close."""
        st = self.state
        if st == LISTEN:
            self.refuse(now)
            return
        if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._send_ctl(self.snd_nxt & MASK, 0, RST)
        if st != CLOSED:
            self._enter_closed()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ outputs

    def take_segments(self) -> list:
        """The segments to transmit, in order (``OutSegment``), since the last call."""
        out = self._out
        if out:
            self._out = []
        return out

    def events(self) -> list:
        """Events since the last call, in order."""
        ev = self._events
        if ev:
            self._events = []
        return ev

    def counters(self) -> dict:
        return dict(self._ctr)

    def next_deadline(self) -> Optional[float]:
        """The earliest time ``handle_timer`` has something to do, or None."""
        d = self._rto_at
        for t in (self._persist_at, self._delack_at, self._tw_at):
            if t is not None and (d is None or t < d):
                d = t
        return d

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now`` (RFC 6298 retransmission, persist, delayed ACK,
        TIME-WAIT / FIN-WAIT-2)."""
        t = self._tw_at
        if t is not None and now >= t:
            self._tw_at = None
            if self.state == FIN_WAIT_2:
                self._send_ctl(self.snd_nxt & MASK, self.rcv_nxt & MASK, RST | ACK)
                self._events.append(Aborted("fin_wait_2_timeout"))
            self._enter_closed()
            return
        t = self._rto_at
        if t is not None and now >= t:
            self._rto_at = None
            self._on_rto(now)
            if self.state == CLOSED:
                return
        t = self._persist_at
        if t is not None and now >= t:
            self._persist_at = None
            self._on_persist(now)
        t = self._delack_at
        if t is not None and now >= t:
            self._delack_at = None
            self._ack_now = True
            self._count("delayed_ack")
        self._output(now)

    def info(self) -> dict:
        """A snapshot of the control block for tests, logs and metrics."""
        return {
            "state": self.state.name, "snd_una": self.snd_una & MASK,
            "snd_nxt": self.snd_nxt & MASK, "snd_wnd": self.snd_wnd,
            "rcv_nxt": self.rcv_nxt & MASK, "rcv_wnd": self.rcv_adv - self.rcv_nxt,
            "snd_wscale": self.snd_wscale, "rcv_wscale": self.rcv_wscale,
            "mss": self.eff_mss, "sack": self._sack_ok, "timestamps": self._ts_ok,
            "cwnd": self.cwnd, "ssthresh": self.ssthresh, "srtt": self.srtt,
            "rttvar": self.rttvar, "rto": self._cur_rto(), "in_flight": self._in_flight(),
            "ca_state": ("open", "recovery", "loss")[self._ca_state],
            "send_buffered": len(self._snd_buf), "rcv_buffered": self.rcv_buffered,
        }

    def accepts_new_syn(self, seg: TCPSegment) -> bool:
        """In TIME-WAIT, may ``seg`` (a SYN for this 4-tuple) start a new incarnation?
        (RFC 9293 §3.6.1 / RFC 6191: its sequence number, or timestamp, is beyond ours.)
        The stack then discards this connection and builds a new one ``from_syn``."""
        if self.state != TIME_WAIT or not is_connection_request(seg):
            return False
        if self._ts_ok and seg.ts_val is not None:
            return 0 < ((seg.ts_val - self._ts_recent) & MASK) < HALF
        return 0 < ((seg.seq - self.rcv_nxt) & MASK) < HALF

    def check_invariants(self) -> list:
        """Recompute the scoreboard and buffer accounting; return what disagrees (tests)."""
        bad: list[str] = []
        rq = self._rq[self._rq_head:]
        if self.state == CLOSED:
            return bad
        if rq:
            if rq[0].seq != self.snd_una:
                bad.append(f"head {rq[0].seq} != snd_una {self.snd_una}")
            if rq[-1].end != self.snd_nxt:
                bad.append(f"tail {rq[-1].end} != snd_nxt {self.snd_nxt}")
            for a, b in zip(rq, rq[1:]):
                if a.end != b.seq:
                    bad.append(f"gap/overlap at {a.end}/{b.seq}")
                    break
        elif self.snd_nxt != self.snd_una and self.state not in (SYN_SENT, SYN_RECEIVED):
            bad.append("outstanding sequence space without records")
        sacked = sum(r.end - r.seq for r in rq if r.sacked)
        lost = sum(r.end - r.seq for r in rq if r.lost)
        retrans = sum(r.end - r.seq for r in rq if r.retrans)
        pending = sum(1 for r in rq if r.lost and not r.retrans and not r.sacked)
        if (sacked, lost, retrans) != (self._sacked_bytes, self._lost_bytes,
                                       self._retrans_bytes):
            bad.append(f"bytes sacked/lost/retrans {(sacked, lost, retrans)} != "
                       f"{(self._sacked_bytes, self._lost_bytes, self._retrans_bytes)}")
        if any(r.sacked and (r.lost or r.retrans) for r in rq):
            bad.append("a SACKed segment is also lost/retransmitted")
        if any(r.retrans and not r.lost for r in rq):
            bad.append("a retransmitted segment not marked lost")
        if pending > self._lost_pending or self._lost_pending < 0:
            bad.append(f"lost pending {pending} vs {self._lost_pending}")
        if self._in_flight() < 0:
            bad.append(f"in_flight {self._in_flight()} < 0")
        if len(self._snd_buf) > self.config.snd_buf:
            bad.append("send buffer over its bound")
        if self.rcv_buffered > self.config.rcv_buf:
            bad.append("receive buffer over its bound")
        if self._buf_seq + len(self._snd_buf) < self.snd_nxt - (1 if self._fin_sent else 0):
            bad.append("sent beyond the buffered data")
        return bad

    def __repr__(self) -> str:
        return (f"<TCPConnection {self.local_port}->{self.remote_port} {self.state.name} "
                f"una={self.snd_una & MASK} nxt={self.snd_nxt & MASK} "
                f"rcv_nxt={self.rcv_nxt & MASK}>")

    # ------------------------------------------------------------------ segment arrives

    def receive_segment(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 §3.10.7 SEGMENT ARRIVES, for a segment of this 4-tuple whose checksum
        was verified. Never raises on wire input: what it cannot use is counted."""
        ctr = self._ctr
        ctr["segments_in"] = ctr.get("segments_in", 0) + 1
        st = self.state
        if st in _SYNCHRONIZED:
            self._rx_synchronized(seg, now)
        elif st == SYN_SENT:
            self._rx_syn_sent(seg, now)
        elif st == LISTEN:
            syn = self._syn
            if seg.flags & (SYN | ACK | RST) == SYN and syn is not None and seg.seq == syn.seq:
                self._count("syn_while_pending")
            else:
                self._count("pending_dropped")
            return
        else:
            self._count("closed_dropped")
            return
        if self.state != CLOSED:
            self._output(now)

    def _rx_syn_sent(self, seg: TCPSegment, now: float) -> None:
        # RFC 9293 §3.10.7.3
        flags = seg.flags
        ack = 0
        if flags & ACK:
            ack = self.iss + ((seg.ack - self.iss + HALF) & MASK) - HALF
            if ack <= self.iss or ack > self.snd_nxt:
                self._count("bad_ack")
                if not flags & RST:
                    self._send_ctl(seg.ack, 0, RST)
                return
        if flags & RST:
            if flags & ACK:
                self._count("rst_received")
                self._events.append(Reset("SYN_SENT"))
                self._enter_closed()
            else:
                self._count("rst_rejected")
            return
        if not flags & SYN:
            self._count("no_ack" if not flags & ACK else "pending_dropped")
            return
        self._learn_syn(seg, now)
        if seg.payload or flags & FIN:
            self._count("syn_data_ignored")     # not acknowledged: the peer resends it
        self.snd_wnd = seg.window               # windows in SYNs are never scaled (RFC 7323)
        self.max_snd_wnd = seg.window
        self.snd_wl1 = self.irs
        if flags & ACK:
            self.snd_wl2 = ack
            self.snd_una = ack
            if self._syn_rtx == 0:
                self._rtt_sample(now - self._syn_xmit)
            self._rto_at = None
            self._establish(now)
            self._ack_now = True
        else:
            # Simultaneous open: SYN-RECEIVED, answer with SYN-ACK (same ISS).
            self.snd_wl2 = self.iss
            self.state = SYN_RECEIVED
            self._send_syn(now)

    def _rx_synchronized(self, seg: TCPSegment, now: float) -> None:
        flags = seg.flags
        st = self.state
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + ((seg.seq - rcv_nxt + HALF) & MASK) - HALF
        payload = seg.payload
        plen = len(payload)
        fin = flags & FIN

        if st == SYN_RECEIVED and flags & SYN and not flags & RST and seq == self.irs:
            if not flags & ACK:
                # Our SYN-ACK was lost and the peer resent its SYN: answer again (Linux).
                self._count("syn_while_pending")
                self._send_syn(now)
                return
            if ((seg.ack - self.snd_nxt) & MASK) == 0:
                # Simultaneous open (RFC 9293 §3.5 figure 7): the peer's SYN-ACK acknowledges
                # our SYN; take it as the ACK of the handshake, as Linux does.
                flags &= ~SYN
                seq = rcv_nxt

        # RFC 7323 §5.3 PAWS.
        tsv = seg.ts_val
        if self._ts_ok and tsv is not None and not flags & RST \
                and ((tsv - self._ts_recent) & MASK) >= HALF:
            if now - self._ts_recent_age > _PAWS_IDLE:
                self._ts_recent = tsv
            else:
                self._count("paws_rejected")
                self._ack_unacceptable(now, plen or fin)
                return

        # First: sequence number acceptability (RFC 9293 §3.10.7.4).
        seglen = plen + (1 if flags & SYN else 0) + (1 if fin else 0)
        rwnd = self.rcv_adv - rcv_nxt
        if seglen == 0:
            ok = seq == rcv_nxt if rwnd <= 0 else rcv_nxt <= seq < rcv_nxt + rwnd
        elif rwnd <= 0:
            ok = seq == rcv_nxt         # special allowance: ACK/RST/bare FIN; text trimmed
        else:
            end = seq + seglen - 1
            ok = (rcv_nxt <= seq < rcv_nxt + rwnd) or (rcv_nxt <= end < rcv_nxt + rwnd)
        if not ok:
            if flags & RST:
                self._count("rst_rejected")                   # RFC 5961 §3.2 (1)
                return
            if seq + seglen <= rcv_nxt:
                self._count("duplicate_segment")
                if st == TIME_WAIT and fin:
                    self._tw_at = now + self.config.time_wait  # retransmitted FIN
            else:
                self._count("out_of_window")
            self._ack_unacceptable(now, seglen)
            return

        # Second: RST (RFC 5961 §3.2: only an exact match resets, else challenge ACK).
        if flags & RST:
            if seq == rcv_nxt:
                self._count("rst_received")
                if st in (CLOSING, LAST_ACK, TIME_WAIT):
                    self._enter_closed()
                else:
                    self._events.append(Reset(st.name))
                    self._enter_closed()
            else:
                self._count("rst_challenged")
                self._challenge_ack(now)
            return

        # Fourth: SYN in a synchronized state: challenge ACK (RFC 5961 §4.2).
        if flags & SYN:
            self._count("syn_in_window")
            self._challenge_ack(now)
            return

        # Fifth: ACK.
        if not flags & ACK:
            self._count("no_ack")
            return
        if tsv is not None and self._ts_ok and seq <= self._last_ack_sent:
            self._ts_recent = tsv                             # RFC 7323 §4.3
            self._ts_recent_age = now
        snd_una = self.snd_una
        ack = snd_una + ((seg.ack - snd_una + HALF) & MASK) - HALF
        if st == SYN_RECEIVED:
            if snd_una < ack <= self.snd_nxt:
                self.snd_una = ack
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                self._rto_at = None
                if self._syn_rtx == 0:
                    self._rtt_sample(now - self._syn_xmit)
                self._establish(now)
                st = self.state
            else:
                self._count("bad_ack")
                self._send_ctl(seg.ack, 0, RST)
                return
        elif ack > self.snd_nxt or ack < snd_una - self.max_snd_wnd:
            self._count("ack_unacceptable")                   # RFC 5961 §5.2
            self._challenge_ack(now)
            return
        elif ack >= snd_una:
            wnd = seg.window << self.snd_wscale
            is_dup = (ack == snd_una and seglen == 0 and wnd == self.snd_wnd
                      and self.snd_nxt > snd_una and not self._in_persist)
            # Window update (RFC 9293 §3.10.7.4 fifth, SND.WL1/WL2 rule).
            wl1 = self.snd_wl1
            if wl1 < seq or (wl1 == seq and self.snd_wl2 <= ack):
                self.snd_wnd = wnd
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
            if ack > snd_una or is_dup or seg.sack_blocks:
                self._sender_ack(ack, seg, now, is_dup)
            else:
                self._probes = 0
            if self._in_persist and self.snd_wnd > 0:
                self._leave_persist(now)
            if self._fin_sent and self.snd_una > self._fin_seq:
                nxt = FIN_ACKED_TRANSITIONS.get(st)
                if nxt is not None:
                    if nxt == CLOSED:
                        self._enter_closed()                  # LAST-ACK done
                        return
                    self.state = st = nxt
                    if nxt == TIME_WAIT:
                        self._enter_time_wait(now)
                    elif self._app_closed and self._tw_at is None:
                        self._tw_at = now + self.config.fin_wait_2_timeout
        # (ACK below SND.UNA but acceptable: an old duplicate, ignored; text still processed.)

        if flags & URG:
            self._count("urg_ignored")          # urgent data is delivered inline

        # Seventh: segment text; eighth: FIN.
        if not plen and not fin:
            return
        if st not in _TEXT_STATES:
            return                              # FIN already received: nothing more to take
        if seq < rcv_nxt:
            payload = payload[rcv_nxt - seq:]
            seq = rcv_nxt
        right = self.rcv_adv
        if seq + len(payload) > right:
            keep = right - seq
            self._count("data_beyond_window", len(payload) - (keep if keep > 0 else 0))
            payload = payload[:keep] if keep > 0 else b""
            fin = 0
            self._ack_now = True
        plen = len(payload)
        if plen and self._app_closed:
            # Nobody will read this: RFC 2525 §2.17 / Linux "abort on data".
            self._count("data_after_close")
            self._send_ctl(self.snd_nxt & MASK, (seq + plen) & MASK, RST | ACK)
            self._events.append(Aborted("data_after_close"))
            self._enter_closed()
            return
        delivered = 0
        if seq == rcv_nxt:
            if plen:
                self._rcv_buf += payload
                rcv_nxt += plen
                delivered = plen
                if plen > self._rcv_mss:
                    self._rcv_mss = plen if plen < self.config.mss else self.config.mss
            if self._ooo_used:
                if fin:
                    self._ooo.clear()
                else:
                    more, qfin = self._ooo.pop(rcv_nxt & MASK)
                    if more:
                        self._rcv_buf += more
                        rcv_nxt += len(more)
                        delivered += len(more)
                    if qfin:
                        fin = FIN
                    self._ack_now = True            # filled (part of) a gap: RFC 5681 §4.2
                self._ooo_used = self._ooo.bytes_held > 0 or self._ooo.fin_seq is not None
            self.rcv_nxt = rcv_nxt
            if delivered:
                self._rcv_unacked += delivered
                self._events.append(DataReceived(len(self._rcv_buf), bool(flags & (PSH | FIN))))
        else:
            # Out of order: hold it, ACK at once with SACK (RFC 5681 §4.2, RFC 2018 §4).
            ooo = self._ooo
            over = ooo.dropped_bytes
            stored = ooo.insert(seq & MASK, payload, rcv_nxt & MASK, bool(fin))
            if stored < plen:
                over = ooo.dropped_bytes - over
                if over:
                    self._count("ooo_dropped", over)             # reassembly bound hit
                if plen - stored - over:
                    self._count("ooo_duplicate", plen - stored - over)
            self._ooo_used = True
            self._ack_now = True
            return
        if fin:
            self.rcv_nxt += 1
            self._fin_rcvd = True
            self._ooo_used = False
            self._events.append(PeerFinished())
            nxt = FIN_RECEIVED_TRANSITIONS[st]
            self.state = nxt
            if nxt == CLOSE_WAIT and not self._ack_now:
                # The application usually closes in turn: its FIN carries this ACK, as Linux's
                # does (delayed ACK on a FIN, RFC 9293 §3.8.6.3); the timer sends it otherwise.
                if self._delack_at is None:
                    self._delack_at = now + self.config.delack
            else:
                self._ack_now = True
            if nxt == TIME_WAIT:
                self._enter_time_wait(now)
            return
        if not self._ack_now and delivered:
            # Delayed ACK: at least every second full-sized segment (RFC 5681 §4.2).
            if self._rcv_unacked > self._rcv_mss:
                self._ack_now = True
            elif self._delack_at is None:
                self._delack_at = now + self.config.delack

    # ------------------------------------------------------------------ sender: ACKs

    def _sender_ack(self, ack: int, seg: TCPSegment, now: float, is_dup: bool) -> None:
        """Cumulative ACK, SACK scoreboard, loss detection, RTT and congestion control."""
        cfg = self.config
        mss = self.eff_mss
        snd_una = self.snd_una
        acked = ack - snd_una
        flight_before = self._in_flight()
        rtt_x = -1.0            # latest send time of a newly delivered, never-resent segment
        rack_x = -1.0           # latest send time of a newly delivered segment (RACK)
        min_rtt = self._min_rtt if self._min_rtt is not None else 0.0
        rq = self._rq
        h = self._rq_head
        n = len(rq)
        self._probes = 0
        bulk_acked = False
        if acked > 0:
            self._retries = 0
            charged = self._budget_charged
            if charged:
                released = acked if acked < charged else charged
                self._budget_charged = charged - released
                self.budget.release(released, now)  # type: ignore[union-attr]
                bulk_acked = True
            while h < n:
                r = rq[h]
                if r.end <= ack:
                    ln = r.end - r.seq
                    if r.sacked:
                        self._sacked_bytes -= ln
                    else:
                        if r.rtx == 0:
                            if r.xmit > rtt_x:
                                rtt_x = r.xmit
                            if r.xmit > rack_x:
                                rack_x = r.xmit
                        elif now - r.xmit >= min_rtt and r.xmit > rack_x:
                            rack_x = r.xmit
                        if r.lost:
                            self._lost_bytes -= ln
                            if not r.retrans:
                                self._lost_pending -= 1
                        if r.retrans:
                            self._retrans_bytes -= ln
                    h += 1
                else:
                    if r.seq < ack:
                        d = ack - r.seq
                        if r.sacked:
                            self._sacked_bytes -= d
                        if r.lost:
                            self._lost_bytes -= d
                        if r.retrans:
                            self._retrans_bytes -= d
                        r.seq = ack
                    break
            if h > 64 and h * 2 > n:
                del rq[:h]
                n -= h
                h = 0
            self._rq_head = h
            self.snd_una = snd_una = ack
            # Free acknowledged data (the FIN is not in the buffer).
            k = ack - self._buf_seq
            bl = len(self._snd_buf)
            if k > bl:
                k = bl
            if k > 0:
                del self._snd_buf[:k]
                self._buf_seq += k
            if self._snd_blocked and not self._fin_queued:
                space = cfg.snd_buf - len(self._snd_buf)
                if space >= (cfg.snd_buf >> 2) or not self._snd_buf:
                    self._snd_blocked = False
                    self._events.append(SendSpace(space))
            if self._ts_ok and seg.ts_ecr:
                # RFC 7323 §4.1 RTTM: only ACKs that advance the left edge.
                ms = ((self._ts_now(now) - seg.ts_ecr) & MASK)
                if ms < 600_000:
                    self._rtt_sample(ms / 1000.0 if ms else _CLOCK_G)
                    if bulk_acked:
                        self.budget.rtt_sample(ms / 1000.0)  # type: ignore[union-attr]

        newly_sacked = False
        if self._sack_ok and seg.sack_blocks:
            snd_nxt = self.snd_nxt
            for l32, r32 in seg.sack_blocks:
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
                        ln = r.end - r.seq
                        r.sacked = True
                        self._sacked_bytes += ln
                        if r.lost:
                            r.lost = False
                            self._lost_bytes -= ln
                            if not r.retrans:
                                self._lost_pending -= 1
                        if r.retrans:
                            r.retrans = False
                            self._retrans_bytes -= ln
                        if r.rtx == 0:
                            if r.xmit > rtt_x:
                                rtt_x = r.xmit
                            if r.xmit > rack_x:
                                rack_x = r.xmit
                        elif now - r.xmit >= min_rtt and r.xmit > rack_x:
                            rack_x = r.xmit
                        if r.end > self._high_sacked:
                            self._high_sacked = r.end
                        newly_sacked = True
                    i += 1

        if rtt_x >= 0.0 and not self._ts_ok:
            self._rtt_sample(now - rtt_x)
            if bulk_acked:
                self.budget.rtt_sample(now - rtt_x)  # type: ignore[union-attr]

        ca = self._ca_state
        if is_dup:
            self._count("dup_ack")
        if self._sack_ok:
            if newly_sacked:
                self._mark_lost_dupthresh()
            if rack_x >= 0.0 and self._rtx_fifo:
                self._detect_lost_retransmits(rack_x)
        elif is_dup:
            # RFC 5681 §3.2 / RFC 6582: a duplicate ACK means a segment left the network.
            self._dupacks += 1
            cap = (self.snd_nxt - snd_una) - mss
            rs = self._reno_sacked + mss
            self._reno_sacked = rs if rs < cap else (cap if cap > 0 else 0)
            if ca == _CA_OPEN and self._dupacks >= cfg.dup_thresh and snd_una >= self._recover:
                self._mark_head_lost()          # RFC 6582 §3.2 step 2: ACK covers "recover"

        if acked > 0:
            grow = ca != _CA_RECOVERY
            if ca != _CA_OPEN:
                if snd_una >= self._recover:
                    # Recovery over (RFC 6675 §5 / RFC 6582 full ACK): cwnd = ssthresh.
                    if ca == _CA_RECOVERY and self.cwnd > self.ssthresh:
                        self.cwnd = self.ssthresh
                    self._ca_state = ca = _CA_OPEN
                    self._reno_sacked = 0
                    self._dupacks = 0
                elif not self._sack_ok:
                    # NewReno partial ACK (RFC 6582 §3.2 step 5): the next hole is lost too;
                    # deflate the emulated dup ACKs by what was acknowledged beyond one SMSS.
                    rs = self._reno_sacked - (acked - mss if acked > mss else 0)
                    self._reno_sacked = rs if rs > 0 else 0
                    if self._mark_head_lost():
                        self._force_rtx = True
            else:
                self._dupacks = 0
                self._reno_sacked = 0
            if grow and self._cwnd_limited:
                cw = self.cwnd
                if cw < self.ssthresh:
                    cw += acked if acked < 2 * mss else 2 * mss   # RFC 5681 §3.1, ABC L=2
                else:
                    self._ca_acc += acked                         # RFC 5681 §3.1 eq. 3,
                    if self._ca_acc >= cw:                        # byte counting
                        self._ca_acc -= cw
                        cw += mss
                self.cwnd = cw if cw < (1 << 30) else (1 << 30)
            # RFC 6298 §5.2/5.3: stop or restart the retransmission timer.
            if self.snd_nxt > snd_una and not self._in_persist:
                self._rto_at = now + self._cur_rto()
            else:
                self._rto_at = None

        if self._ca_state == _CA_OPEN and self._lost_pending > 0:
            self._enter_recovery(flight_before)

    def _enter_recovery(self, flight_before: int) -> None:
        # RFC 6675 §5 (4.2) / RFC 5681 eq. 4 / RFC 6582 §3.2 step 2.
        mss = self.eff_mss
        flight = self.snd_nxt - self.snd_una
        half = flight >> 1
        self.ssthresh = half if half > 2 * mss else 2 * mss
        self.cwnd = self.ssthresh
        self._ca_acc = 0
        self._recover = self.snd_nxt
        self._ca_state = _CA_RECOVERY
        self._force_rtx = True                   # (4.3): retransmit the first hole now
        self._count("fast_recovery")

    def _mark_head_lost(self) -> bool:
        """NewReno: the first unacknowledged segment is lost (fast retransmit / partial ACK).
        True if it was newly marked."""
        h = self._rq_head
        if h >= len(self._rq):
            return False
        r = self._rq[h]
        if r.sacked or r.lost:
            return False
        r.lost = True
        self._lost_bytes += r.end - r.seq
        self._lost_pending += 1
        if r.seq < self._rtx_hint:
            self._rtx_hint = r.seq
        return True

    def _mark_lost_dupthresh(self) -> None:
        """RFC 6675 §4 IsLost: a segment with DupThresh SACKed segments, or more than
        (DupThresh-1)*SMSS SACKed octets, above it is lost. The marking point only rises."""
        rq = self._rq
        h = self._rq_head
        n = len(rq)
        hs = self._high_sacked
        if hs <= self.snd_una:
            return
        k = bisect_left(rq, hs, h, n, key=_END)
        if k >= n:
            k = n - 1
        thresh = self.config.dup_thresh
        bthresh = (thresh - 1) * self.eff_mss
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
        if edge <= self._mark_hint:
            return
        i = bisect_left(rq, self._mark_hint, h, k, key=_SEQ)
        while i < k:
            r = rq[i]
            if not r.sacked and not r.lost:
                r.lost = True
                self._lost_bytes += r.end - r.seq
                if r.retrans:       # cannot happen (only lost segments are resent); be safe
                    r.retrans = False
                    self._retrans_bytes -= r.end - r.seq
                self._lost_pending += 1
                if r.seq < self._rtx_hint:
                    self._rtx_hint = r.seq
            i += 1
        self._mark_hint = edge

    def _detect_lost_retransmits(self, delivered_xmit: float) -> None:
        """RACK-style (RFC 8985 §6.2): a retransmission is lost when a segment sent more than
        a reordering window after it has already been delivered."""
        reo = self._min_rtt / 4 if self._min_rtt is not None else 0.0
        limit = delivered_xmit - reo
        fifo = self._rtx_fifo
        una = self.snd_una
        while fifo and fifo[0][0] < limit:
            t, r = fifo.popleft()
            if r.retrans and r.xmit == t and not r.sacked and r.end > una:
                r.retrans = False
                self._retrans_bytes -= r.end - r.seq
                self._lost_pending += 1
                if r.seq < self._rtx_hint:
                    self._rtx_hint = r.seq
                self._count("lost_retransmit")

    # ------------------------------------------------------------------ timers

    def _cur_rto(self) -> float:
        rto = self._rto_base * (1 << self._backoff) if self._backoff < 16 else self.config.max_rto
        return rto if rto < self.config.max_rto else self.config.max_rto

    def _rtt_sample(self, r: float) -> None:
        # RFC 6298 §2.2/2.3 (alpha 1/8, beta 1/4). The min_rto floor applies to the
        # variance term as in Linux, so RTO >= SRTT + min_rto (a steady RTT behind a
        # delayed-ACK receiver never causes spurious timeouts).
        if r <= 0.0:
            r = _CLOCK_G
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            d = self.srtt - r
            self.rttvar = 0.75 * self.rttvar + 0.25 * (d if d >= 0 else -d)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        var = 4 * self.rttvar
        cfg = self.config
        if var < cfg.min_rto:
            var = cfg.min_rto
        rto = self.srtt + var
        self._rto_base = rto if rto < cfg.max_rto else cfg.max_rto
        self._backoff = 0                       # RFC 6298 §5.7 note / Karn: a valid sample
        if self._min_rtt is None or r < self._min_rtt:
            self._min_rtt = r

    def _on_rto(self, now: float) -> None:
        cfg = self.config
        st = self.state
        if st == SYN_SENT or st == SYN_RECEIVED:
            self._syn_rtx += 1
            if self._syn_rtx > (cfg.syn_retries if st == SYN_SENT else cfg.synack_retries):
                self._count("aborted_timeout")
                self._events.append(Aborted("syn_timeout"))
                self._enter_closed()
                return
            self._backoff += 1
            self._count("retrans_syn")
            self._send_syn(now)
            self._rto_at = now + self._cur_rto()
            return
        rq = self._rq
        h = self._rq_head
        n = len(rq)
        if h >= n or self._in_persist:
            return
        self._retries += 1
        if self._retries > cfg.max_retries:
            self._count("aborted_timeout")
            self._send_ctl(self.snd_nxt & MASK, self.rcv_nxt & MASK, RST | ACK)
            self._events.append(Aborted("timeout"))
            self._enter_closed()
            return
        self._count("rto")
        mss = self.eff_mss
        # RFC 5681 §3.1 eq. 4 (ssthresh held on repeated timeouts of the same segment),
        # RFC 6675 §5.1 (the recovery point becomes HighData).
        if self._backoff == 0 or self._ca_state != _CA_LOSS:
            half = (self.snd_nxt - self.snd_una) >> 1
            self.ssthresh = half if half > 2 * mss else 2 * mss
        self.cwnd = mss                         # loss window LW = 1 SMSS
        self._ca_acc = 0
        self._ca_state = _CA_LOSS
        self._recover = self.snd_nxt
        self._dupacks = 0
        self._reno_sacked = 0
        self._backoff += 1
        head = rq[h]
        if head.sacked:
            # The receiver reneged on SACKed data (RFC 2018 §8): forget all SACK state.
            self._count("sack_reneging")
            for i in range(h, n):
                rq[i].sacked = False
            self._sacked_bytes = 0
            self._high_sacked = self.snd_una
        # Mark lost what should have been acknowledged by now: the head and, as Linux's
        # tcp_timeout_mark_lost, segments sent more than an RTT (+ reordering window) ago;
        # the rest is in flight, not lost (no go-back-N).
        ref = (self.srtt if self.srtt is not None else cfg.initial_rto)
        if self._min_rtt is not None:
            ref += self._min_rtt / 4
        old = now - ref
        lost_bytes = 0
        retrans_bytes = 0
        pending = 0
        for i in range(h, n):
            r = rq[i]
            ln = r.end - r.seq
            if r.sacked:
                continue
            if i == h or r.xmit <= old:
                r.lost = True
                r.retrans = False
            if r.lost:
                lost_bytes += ln
                if r.retrans:
                    retrans_bytes += ln
                else:
                    pending += 1
        self._lost_bytes = lost_bytes
        self._retrans_bytes = retrans_bytes
        self._lost_pending = pending
        self._rtx_hint = self.snd_una
        self._force_rtx = True
        self._rto_at = now + self._cur_rto()    # RFC 6298 §5.5/5.6

    def _on_persist(self, now: float) -> None:
        # RFC 9293 §3.8.6.1 zero-window probing: one octet beyond the window (RFC 1122
        # 4.2.2.17), backing off like the RTO; probing continues while the peer answers.
        if not self._in_persist:
            return
        cfg = self.config
        self._probes += 1
        if self._probes > cfg.max_retries:
            self._count("aborted_timeout")
            self._send_ctl(self.snd_nxt & MASK, self.rcv_nxt & MASK, RST | ACK)
            self._events.append(Aborted("timeout"))
            self._enter_closed()
            return
        rq = self._rq
        unsent = self._buf_seq + len(self._snd_buf) - self.snd_nxt
        usable = self.snd_una + self.snd_wnd - self.snd_nxt
        if usable > 0 and unsent > 0 and self._rq_head >= len(rq):
            # Sender SWS override timeout (RFC 9293 §3.8.6.2.1): the window is open but
            # below the SWS threshold; send what it allows.
            self._in_persist = False
            self._persist_backoff = 0
            n = min(usable, self.eff_mss, unsent)
            self._send_new(n, FIN if n == unsent and self._fin_queued else 0, now)
            return
        self._count("zero_window_probe")
        if self._rq_head < len(rq):
            r = rq[self._rq_head]
            r.rtx += 1
            r.xmit = now
            self._xmit(ACK | (FIN if r.fin else 0), r.seq, self._payload(r), now)
        elif unsent > 0:
            self._send_new(1, 0, now)
        else:
            self._leave_persist(now)
            return
        self._persist_backoff += 1
        self._persist_at = now + self._persist_interval()

    def _persist_interval(self) -> float:
        b = self._persist_backoff
        t = self._rto_base * (1 << b) if b < 16 else self.config.max_rto
        return t if t < self.config.max_rto else self.config.max_rto

    def _leave_persist(self, now: float) -> None:
        self._in_persist = False
        self._persist_at = None
        self._persist_backoff = 0
        rq = self._rq
        h = self._rq_head
        if len(rq) - h == 1 and rq[h].end - rq[h].seq == 1 and not rq[h].fin:
            # The probe octet was probably dropped beyond the old window: unsend it, the
            # normal output path sends it again with what follows.
            self._rq.clear()
            self._rq_head = 0
            self.snd_nxt = self.snd_una
            self._sacked_bytes = self._lost_bytes = self._retrans_bytes = 0
            self._lost_pending = 0
            self._rtx_fifo.clear()
        if self.snd_nxt > self.snd_una:
            self._rto_at = now + self._cur_rto()

    def _enter_time_wait(self, now: float) -> None:
        self._rto_at = None
        self._persist_at = None
        self._in_persist = False
        self._tw_at = now + self.config.time_wait

    def _enter_closed(self) -> None:
        self.state = CLOSED
        if self.budget is not None:
            self.budget.forget(self)
            if self._budget_charged:
                self.budget.release(self._budget_charged, 0.0, delivered=False)
                self._budget_charged = 0
        self._rto_at = self._persist_at = self._delack_at = self._tw_at = None
        self._in_persist = False
        self._ack_now = False
        self._rq = []
        self._rq_head = 0
        self._rtx_fifo.clear()
        self._snd_buf = bytearray()
        self._ooo.clear()
        self._ooo_used = False
        self._events.append(Closed())

    def _establish(self, now: float) -> None:
        self.state = ESTABLISHED
        mss = self.eff_mss
        iw = self.config.initial_window
        # RFC 6928 IW; RFC 5681 §3.1: one segment if the SYN or SYN-ACK was retransmitted.
        self.cwnd = mss if self._syn_rtx else min(iw * mss, max(2 * mss, iw * 1460))
        if self._syn_rtx and self.srtt is None:
            self._rto_base = max(self._rto_base, 3.0)     # RFC 6298 §5.7
        self._backoff = 0
        self._recover = self.snd_una             # RFC 6582 §3.2 step 1: recover = ISS
        self._rtx_hint = self._mark_hint = self._high_sacked = self.snd_una
        self._last_xmit = now
        self._events.append(Established())
        if self._fin_queued:
            self._fin_queued = False
            self._queue_fin(now)

    # ------------------------------------------------------------------ options

    def _learn_syn(self, syn: TCPSegment, now: float) -> None:
        """Record the peer's SYN: IRS and the options both sides agreed (RFC 7323 §2.2/3.2,
        RFC 2018 §2, RFC 9293 §3.7.1 default MSS 536)."""
        cfg = self.config
        self.irs = syn.seq
        self.rcv_nxt = syn.seq + 1
        self._last_ack_sent = self.rcv_nxt
        peer_mss = syn.mss if syn.mss is not None else 536
        cap = peer_mss if peer_mss < cfg.mss else cfg.mss
        self._mss_cap = cap if cap > 48 else 48
        wscale = syn.wscale
        self._ws_ok = cfg.window_scaling and wscale is not None
        if wscale is not None and self._ws_ok:
            self.snd_wscale = wscale if wscale <= 14 else 14
            self.rcv_wscale = self._ws_offer
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self._rcv_cap = cfg.rcv_buf - ((1 << self.rcv_wscale) - 1)
        self._sack_ok = cfg.sack and syn.sack_permitted
        ts_val = syn.ts_val
        self._ts_ok = cfg.timestamps and ts_val is not None
        if ts_val is not None and self._ts_ok:
            self._ts_recent = ts_val
            self._ts_recent_age = now
        self.eff_mss = self._mss_cap - (12 if self._ts_ok else 0)
        self.cwnd = self.eff_mss
        # What our SYN / SYN-ACK advertises (never scaled): the receive window's start.
        free = self._rcv_cap
        self.rcv_adv = self.rcv_nxt + (free if free < 0xFFFF else 0xFFFF)

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    # ------------------------------------------------------------------ output

    def _in_flight(self) -> int:
        return (self.snd_nxt - self.snd_una - self._sacked_bytes - self._lost_bytes
                + self._retrans_bytes - self._reno_sacked)

    def _output(self, now: float) -> None:
        """Send what the state, windows and timers allow, then a pure ACK if one is owed."""
        if self.state in _CAN_SEND:
            self._transmit(now)
        if self._ack_now and self.state in _SYNCHRONIZED:
            self._xmit(ACK, self.snd_nxt, b"", now)

    def _transmit(self, now: float) -> None:
        cwnd = self.cwnd
        # RFC 6675 NextSeg rule (1): the lowest lost segment first.
        if self._lost_pending > 0:
            while self._lost_pending > 0:
                r = self._next_lost()
                if r is None:
                    break
                if not self._force_rtx and self._in_flight() + (r.end - r.seq) > cwnd:
                    break
                self._force_rtx = False
                self._retransmit(r, now)
        self._force_rtx = False
        if self._in_persist:
            return
        mss = self.eff_mss
        budget = self.budget
        if budget is not None:
            seg = budget.segment_size(now)
            if seg < mss:
                mss = seg
        buf_end = self._buf_seq + len(self._snd_buf)
        unsent = buf_end - self.snd_nxt
        if unsent <= 0:
            # Application-limited: cwnd grows only while it is what limits us (RFC 7661).
            self._cwnd_limited = self._in_flight() + mss > cwnd
        else:
            if self.snd_nxt == self.snd_una and now - self._last_xmit > self._cur_rto():
                # RFC 5681 §4.1 restart window after an idle period.
                rw = min(self.config.initial_window * mss, max(2 * mss, 14600))
                if self.cwnd > rw:
                    self.cwnd = cwnd = rw
            if self._ooo_used and self._sack_ok:
                # Leave room for the SACK option we owe the peer (as Linux's current MSS).
                nb = len(self._ooo.sack_blocks(3 if self._ts_ok else 4))
                mss -= 4 + 8 * nb if nb else 0
            wnd_end = self.snd_una + self.snd_wnd
            limited = False
            wblocked = False
            held = False
            while unsent > 0:
                n = mss if unsent > mss else unsent
                win = wnd_end - self.snd_nxt
                if n > win:
                    # Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a partial segment only
                    # when it is at least half the largest window the peer offered.
                    if win <= 0 or win < (self.max_snd_wnd >> 1):
                        wblocked = True
                        break
                    n = win
                if self._in_flight() + n > cwnd:
                    limited = True
                    break
                last = n == unsent
                if last and n < mss and not self.nodelay and not self._fin_queued \
                        and self.snd_nxt > self.snd_una:
                    break                       # Nagle (RFC 9293 §3.7.4)
                if budget is not None and not self._low_delay(n):
                    if not budget.admit(self, n, now):
                        held = True             # the stack resumes us when the line has room
                        break
                    self._budget_charged += n
                self._send_new(n, FIN if last and self._fin_queued else 0, now)
                unsent -= n
            self._cwnd_limited = limited or (not held and self._in_flight() + mss > cwnd)
            if wblocked and self.snd_nxt == self.snd_una:
                # Nothing in flight and the window forbids sending: persist (RFC 9293
                # §3.8.6.1; it doubles as the SWS override timer).
                self._in_persist = True
                self._rto_at = None
                if self._persist_at is None:
                    self._persist_at = now + self._persist_interval()
                return
        if self._fin_queued and not self._fin_sent and self.snd_nxt == buf_end:
            self._send_new(0, FIN, now)          # a bare FIN goes regardless of the window

    def _next_lost(self) -> Optional[_Sent]:
        rq = self._rq
        h = self._rq_head
        n = len(rq)
        i = bisect_left(rq, self._rtx_hint, h, n, key=_SEQ) if h < n else n
        while i < n:
            r = rq[i]
            if r.lost and not r.retrans and not r.sacked:
                self._rtx_hint = r.seq
                return r
            i += 1
        self._lost_pending = 0
        self._rtx_hint = self.snd_nxt
        return None

    def _payload(self, r: _Sent) -> Union[bytes, bytearray]:
        off = r.seq - self._buf_seq
        end = r.end - r.fin - self._buf_seq
        return self._snd_buf[off:end] if end > off else b""

    def _retransmit(self, r: _Sent, now: float) -> None:
        ca = self._ca_state
        self._count("retrans_rto" if ca == _CA_LOSS else
                    "retrans_sack" if self._sack_ok else "retrans_fast")
        r.rtx += 1
        r.xmit = now
        r.retrans = True
        self._retrans_bytes += r.end - r.seq
        self._lost_pending -= 1
        if self._sack_ok:
            self._rtx_fifo.append((now, r))           # for lost-retransmission detection
        self._xmit(ACK | (FIN if r.fin else 0), r.seq, self._payload(r), now)
        if self._rto_at is None or r.seq == self.snd_una:
            # Resending the head restarts the timer (as Linux): the RTO must not fire
            # before this copy could have been acknowledged.
            self._rto_at = now + self._cur_rto()

    def _send_new(self, n: int, fin: int, now: float) -> None:
        seq = self.snd_nxt
        off = seq - self._buf_seq
        end = seq + n + (1 if fin else 0)
        r = _Sent(seq, end, 1 if fin else 0, now)
        self._rq.append(r)
        self.snd_nxt = end
        if fin:
            self._fin_sent = True
            self._fin_seq = seq + n
        flags = ACK | fin
        if n and off + n == len(self._snd_buf):
            flags |= PSH
        if n and self.budget is not None and self._low_delay(n):
            self.budget.note_interactive(now)
        self._xmit(flags, seq, self._snd_buf[off:off + n] if n else b"", now)
        if self._rto_at is None and not self._in_persist:
            self._rto_at = now + self._cur_rto()     # RFC 6298 §5.1

    def _send_syn(self, now: float) -> None:
        cfg = self.config
        if self.state == SYN_SENT:
            opts = build_options(
                mss=cfg.mss, wscale=self._ws_offer if cfg.window_scaling else None,
                sack_permitted=cfg.sack, ts_val=self._ts_now(now) if cfg.timestamps else None,
                ts_ecr=0)
            flags = SYN
        else:
            opts = build_options(
                mss=cfg.mss, wscale=self.rcv_wscale if self._ws_ok else None,
                sack_permitted=self._sack_ok,
                ts_val=self._ts_now(now) if self._ts_ok else None, ts_ecr=self._ts_recent)
            flags = SYN | ACK
        self._syn_xmit = now
        self._xmit(flags, self.iss, b"", now, opts)

    def _window_field(self) -> int:
        """The window to advertise, scaled (RFC 7323 §2.3). Receiver SWS avoidance (RFC 9293
        §3.8.6.2.2): the right edge moves only by at least min(RCV.BUFF/2, MSS); it never
        moves left (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4: round up, not down). ``_rcv_cap``
        keeps the rounding inside the buffer."""
        ws = self.rcv_wscale
        nxt = self.rcv_nxt
        adv = self.rcv_adv
        free = self._rcv_cap - len(self._rcv_buf)
        if free > 0 and nxt + free - adv >= self._sws:
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

    def _low_delay(self, payload_len: int) -> bool:
        """Interactive traffic: small payloads (pure ACKs and control segments too) and every
        segment of a connection marked ``interactive``. It has the line's priority, is exempt
        from the line budget, and while it flows the budget shrinks bulk segments."""
        return self.interactive or payload_len <= self.config.interactive_max

    def _xmit(self, flags: int, seq: int, payload: Union[bytes, bytearray], now: float,
              opts: bytes = b"") -> None:
        """Build one segment carrying ACK=RCV.NXT and our window (unless SYN/RST rules say
        otherwise) and queue it."""
        n = len(payload)
        sack_sent = True
        if flags & SYN:
            free = self._rcv_cap - len(self._rcv_buf)
            wnd = free if free < 0xFFFF else 0xFFFF
        else:
            wnd = self._window_field()
            if self._ts_ok:
                opts = _OPT_TS.pack(1, 1, 8, 10, self._ts_now(now), self._ts_recent)
            if self._ooo_used and self._sack_ok:
                room = (self._mss_cap - n - len(opts) - 4) >> 3
                maxb = 3 if self._ts_ok else 4
                blocks = self._ooo.sack_blocks(room if room < maxb else maxb) if room > 0 \
                    else None
                if blocks:
                    parts = [opts, b"\x01\x01\x05", bytes((2 + 8 * len(blocks),))]  # NOP NOP SACK
                    for left, right in blocks:
                        parts.append(_U32PAIR.pack(left, right))
                    opts = b"".join(parts)
                else:
                    sack_sent = False
        ack = 0
        if flags & ACK:
            ack = self.rcv_nxt & MASK
            self._last_ack_sent = self.rcv_nxt
            self._rcv_unacked = 0
            self._delack_at = None
            if sack_sent:
                self._ack_now = False
        hl = 20 + len(opts)
        buf = bytearray(HEADER.pack(self.local_port, self.remote_port, seq & MASK, ack,
                                    hl << 2, flags, wnd, 0, 0))
        if opts:
            buf += opts
        if n:
            buf += payload
        _U16.pack_into(buf, 16, internet_checksum(buf, self._ph + hl + n))
        self._out.append(OutSegment(bytes(buf), self._low_delay(n)))
        self._last_xmit = now
        ctr = self._ctr
        ctr["segments_out"] = ctr.get("segments_out", 0) + 1

    def _send_ctl(self, seq32: int, ack32: int, flags: int) -> None:
        """A bare control segment (RST, RST+ACK) that does not touch the ACK state."""
        buf = bytearray(HEADER.pack(self.local_port, self.remote_port, seq32 & MASK,
                                    ack32 & MASK, 0x50, flags, 0, 0, 0))
        _U16.pack_into(buf, 16, internet_checksum(buf, self._ph + 20))
        self._out.append(OutSegment(bytes(buf), True))
        if flags & RST:
            self._count("rst_sent")
        ctr = self._ctr
        ctr["segments_out"] = ctr.get("segments_out", 0) + 1

    def _ack_unacceptable(self, now: float, seglen: int) -> None:
        # RFC 9293 §3.10.7.4 first check: answer an unacceptable segment with an ACK; for
        # zero-length ones at most every oow_ack_interval (Linux, against ACK loops).
        if seglen == 0:
            if now - self._oow_t < self.config.oow_ack_interval:
                self._count("oow_ack_ratelimited")
                return
            self._oow_t = now
        self._ack_now = True

    def _challenge_ack(self, now: float) -> None:
        # RFC 5961 §7: challenge ACKs are rate limited.
        if now - self._chal_t >= 1.0:
            self._chal_t = now
            self._chal_n = 0
        if self._chal_n >= self.config.challenge_ack_limit:
            self._count("challenge_ack_ratelimited")
            return
        self._chal_n += 1
        self._count("challenge_ack")
        self._ack_now = True

    def _count(self, name: str, n: int = 1) -> None:
        ctr = self._ctr
        ctr[name] = ctr.get(name, 0) + n
