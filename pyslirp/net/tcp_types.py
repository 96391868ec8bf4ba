"""What a TCP connection and its users share: the states (RFC 9293 §3.3.2) and the transitions
that are mere table lookups, the events a connection reports, the segments it emits, its
configuration, the declaration of every counter it keeps (:data:`TCP_COUNTERS`), and what the
stack does with segments before a connection exists (ISN, connection requests, resets)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

from pyslirp._core.checksum import pseudo_header_sum
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.net.tcp_segment import (
    ACK, FIN, PARSE_ERRORS, PROTO_TCP, RST, SYN, TCPSegment, encode_segment,
)

__all__ = [
    "TCPState", "TCPConfig", "OutSegment", "TCPUsageError", "TCP_COUNTERS",
    "Established", "DataReceived", "SendSpace", "PeerFinished", "Reset", "Aborted", "Closed",
    "TCPEvent", "CLOSE_TRANSITIONS", "FIN_RECEIVED_TRANSITIONS", "FIN_ACKED_TRANSITIONS",
    "MASK", "HALF", "isn", "is_connection_request", "reset_for_segment",
    "SYNCHRONIZED_STATES", "CAN_SEND_STATES", "TEXT_STATES", "APP_SEND_STATES",
]

#: Sequence numbers are 32 bits on the wire; a difference below HALF is "after" (RFC 9293
#: §3.4 arithmetic modulo 2^32).
MASK = 0xFFFFFFFF
HALF = 0x80000000


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

#: RFC 9293 §3.3.2: the states after the handshake's SYNs were exchanged
SYNCHRONIZED_STATES = frozenset((SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
                                 CLOSING, LAST_ACK, TIME_WAIT))
#: the states in which we transmit data (our FIN not yet acknowledged)
CAN_SEND_STATES = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
#: the states in which segment text is taken (RFC 9293 §3.10.7.4 seventh step)
TEXT_STATES = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))
#: the states in which the application may queue data
APP_SEND_STATES = frozenset((LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT))

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


# ----------------------------------------------------------------------------------- no connection yet

def isn(secret: bytes, local: tuple[bytes, int], remote: tuple[bytes, int], now: float) -> int:
    """RFC 6528 §3 initial sequence number: ISN = M + F(localip, localport, remoteip,
    remoteport, secretkey), M a 4-microsecond timer, F a keyed PRF: SipHash-2-4, as Linux's
    ``secure_tcp_seq`` uses, keyed with the 16 octets of ``secret``."""
    return isn_keyed(isn_prf(secret), local, remote, now)


def isn_prf(secret: bytes) -> tuple[int, int]:
    """F of :func:`isn` keyed with ``secret``: SipHash's key as its two little-endian 64-bit
    halves, made once, which a stack keeps for its SYNs."""
    if len(secret) != 16:
        raise ValueError(f"the ISN secret is a 128-bit SipHash key (16 octets), not {len(secret)}")
    return int.from_bytes(secret[:8], "little"), int.from_bytes(secret[8:], "little")


def isn_keyed(prf: tuple[int, int], local: tuple[bytes, int], remote: tuple[bytes, int], now: float) -> int:
    """:func:`isn` with F already keyed (:func:`isn_prf`): the same number."""
    k0, k1 = prf
    four_tuple = local[0] + remote[0] + (local[1] << 16 | remote[1]).to_bytes(4, "big")
    return (int(now * 250_000) + siphash24(k0, k1, four_tuple)) & MASK


# SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): the state is four
# 64-bit words; additions and shifts wrap at 64 bits (free when compiled: the words are C
# unsigned long longs, and the masks vanish).
_MASK64 = 0xFFFFFFFFFFFFFFFF


def siphash24(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4 of ``data`` with the key whose little-endian 64-bit halves are ``k0`` and
    ``k1``: each 8-octet word of the message (the last one padded, with the message's length in
    its top octet) takes two SipRounds, the finish four."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    length = len(data)
    last = length - length % 8
    offset = 0
    while offset <= last:
        if offset < last:
            word = _little_endian(data, offset, 8)
        else:
            word = _little_endian(data, offset, length - last) | (length & 0xFF) << 56
        v3 ^= word
        v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 2)
        v0 ^= word
        offset += 8
    v2 ^= 0xFF
    v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def _little_endian(data: bytes, offset: int, count: int) -> int:
    """The ``count`` (at most 8) octets at ``offset`` as a little-endian integer."""
    word = 0
    for i in range(count):
        octet = data[offset + i]  # a 64-bit word when compiled: shifted by up to 56 bits
        word |= octet << 8 * i
    return word


def _sip_rounds(v0: int, v1: int, v2: int, v3: int, rounds: int) -> tuple[int, int, int, int]:
    """``rounds`` SipRounds of the state."""
    for _ in range(rounds):
        v0 = (v0 + v1) & _MASK64
        v1 = (v1 << 13 | v1 >> 51) & _MASK64
        v1 ^= v0
        v0 = (v0 << 32 | v0 >> 32) & _MASK64
        v2 = (v2 + v3) & _MASK64
        v3 = (v3 << 16 | v3 >> 48) & _MASK64
        v3 ^= v2
        v0 = (v0 + v3) & _MASK64
        v3 = (v3 << 21 | v3 >> 43) & _MASK64
        v3 ^= v0
        v2 = (v2 + v1) & _MASK64
        v1 = (v1 << 17 | v1 >> 47) & _MASK64
        v1 ^= v2
        v2 = (v2 << 32 | v2 >> 32) & _MASK64
    return v0, v1, v2, v3


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
    return encode_segment(seg.dst_port, seg.src_port, seq, ack, flags, 0, b"", b"",
                          pseudo_header_sum(src, dst, PROTO_TCP, 0))


# ----------------------------------------------------------------------------------- counters

#: Every key counted in a connection's counter mapping (the stack's ``tcp_counters``, which
#: ``parse_segment`` shares). The keys are flat and historic, hence the empty prefixes.
TCP_COUNTERS = CounterSet("tcp", [
    CounterSpec("segments_in", "segments delivered to a connection"),
    CounterSpec("segments_out", "segments sent by connections"),
    CounterSpec("segments_malformed", "segments parse_segment dropped, by reason",
                reasons=PARSE_ERRORS, prefix=""),
    CounterSpec(
        "segments_discarded", "segments a connection could not use, by reason", prefix="",
        reasons=(
            "out_of_window",        # RFC 9293 §3.10.7.4 first check
            "duplicate_segment",    # entirely below RCV.NXT
            "paws_rejected",        # RFC 7323 §5.3
            "rst_rejected",         # a RST outside the window (RFC 5961 §3.2)
            "rst_challenged",       # a RST in the window but not at RCV.NXT: challenge ACK
            "syn_in_window",        # a SYN in a synchronized state (RFC 5961 §4.2)
            "syn_while_pending",    # the peer resent its SYN before we answered it
            "pending_dropped",      # anything else while accept() is pending
            "ack_unacceptable",     # an ACK of data never sent (RFC 5961 §5.2)
            "bad_ack",              # an ACK that does not acknowledge our SYN
            "no_ack",               # no ACK bit in a synchronized state
            "closed_dropped",       # the connection is closed
        )),
    CounterSpec("octets_discarded", "received octets not kept, by reason", unit="bytes",
                prefix="", reasons=(
                    "data_beyond_window",  # past the advertised window
                    "ooo_dropped",         # over the reassembly bound
                    "ooo_memory_dropped",  # over the bound of all connections' held octets
                    "ooo_duplicate",       # out-of-order octets already held
                )),
    CounterSpec("segment_parts_ignored", "parts of segments ignored, by reason", prefix="",
                reasons=("syn_data_ignored", "urg_ignored")),
    CounterSpec("acks_sent", "ACKs sent for a reason of their own", prefix="",
                reasons=("challenge_ack", "delayed_ack", "window_update")),
    CounterSpec("acks_ratelimited", "ACKs not sent, rate limited (RFC 5961 §7, Linux)",
                prefix="", reasons=("challenge_ack_ratelimited", "oow_ack_ratelimited")),
    CounterSpec("rst_sent", "RSTs sent"),
    CounterSpec("rst_received", "RSTs that reset a connection"),
    CounterSpec("aborted", "connections we gave up", reasons=("timeout",)),
    CounterSpec("close_with_unread", "close() with unread data: reset (RFC 2525 §2.17)"),
    CounterSpec("data_after_close", "data arriving after close(): reset (RFC 2525 §2.17)"),
    CounterSpec("retransmits", "segments retransmitted, by trigger", prefix="retrans_",
                reasons=("rto", "sack", "fast", "syn")),
    CounterSpec("rto", "retransmission timeouts (RFC 6298)"),
    CounterSpec("fast_recovery", "entries into fast recovery (RFC 6675 / RFC 6582)"),
    CounterSpec("lost_retransmit", "retransmissions found lost (RFC 8985 §6.2)"),
    CounterSpec("dup_ack", "duplicate ACKs received"),
    CounterSpec("zero_window_probe", "zero-window probes sent (RFC 9293 §3.8.6.1)"),
    CounterSpec("sack_ignored", "SACK blocks not used, by reason", prefix="",
                reasons=("sack_invalid", "dsack_received")),
    CounterSpec("sack_reneging", "timeouts that found SACKed data reneged on (RFC 2018 §8)"),
])
