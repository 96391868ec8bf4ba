"""TCP segment wire format: header (RFC 9293 §3.1) and options (MSS RFC 9293 §3.2,
window scale and timestamps RFC 7323, SACK-permitted and SACK RFC 2018).

``parse_segment`` never raises on wire input: a segment it cannot use is counted under a
reason in the ``counters`` mapping it is given and ``None`` is returned. It verifies the
checksum when it is given the IPv4 source and destination (the stack does; tests may skip
it). ``build_segment`` is the general serializer (tests, RSTs for unknown connections); the
connection's own hot path uses ``encode_segment``, which takes the header fields as they are.

Drop reasons counted here: ``truncated`` (shorter than 20 octets), ``bad_header_length``
(data offset < 5 or beyond the segment), ``bad_checksum``, ``bad_options`` (an option whose
length is < 2 or runs past the header, or a known option with the wrong length: RFC 9293
§3.1 says to be robust against illegal option lengths; we drop rather than guess).
"""

from __future__ import annotations

import struct
from typing import MutableMapping, Optional, Union

from pyslirp._core.checksum import internet_checksum, pseudo_header_sum
from pyslirp.net.wire import put16, put32, u16, u32

__all__ = [
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
    "TCPSegment", "parse_segment", "build_segment", "build_options", "checksum_ok", "encode_segment",
    "HEADER", "PROTO_TCP", "PARSE_ERRORS",
]

PROTO_TCP = 6

# Control bits (RFC 9293 §3.1; ECE/CWR RFC 3168, carried but not acted on).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Option kinds.
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WS = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TS = 8

#: Why ``parse_segment`` drops a segment: the keys it counts (declared in tcp_types.TCP_COUNTERS).
PARSE_ERRORS = ("truncated", "bad_header_length", "bad_checksum", "bad_options")

#: sport, dport, seq, ack, data offset<<4, flags, window, checksum, urgent pointer.
HEADER = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
_U32PAIR = struct.Struct("!II")
_OPT_MSS = struct.Struct("!BBH")
_OPT_TS = struct.Struct("!BBBBII")       # NOP NOP TS(10): the aligned form (RFC 7323 App. A)


class TCPSegment:
    """A parsed (or to-be-built) TCP segment. Sequence/ack numbers are 32-bit wire values.

    Options absent from the segment are ``None`` (``mss``, ``wscale``, ``ts_val``/``ts_ecr``),
    ``False`` (``sack_permitted``) or ``()`` (``sack_blocks``: ((left, right), ...) as on the
    wire, 32-bit edges).
    """

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "urgent", "payload",
                 "mss", "wscale", "sack_permitted", "sack_blocks", "ts_val", "ts_ecr")

    def __init__(self, src_port: int = 0, dst_port: int = 0, seq: int = 0, ack: int = 0,
                 flags: int = 0, window: int = 0, payload: bytes = b"", *, urgent: int = 0,
                 mss: Optional[int] = None, wscale: Optional[int] = None,
                 sack_permitted: bool = False, sack_blocks: tuple = (),
                 ts_val: Optional[int] = None, ts_ecr: Optional[int] = None) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one for SYN and one for FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def flag_names(self) -> str:
        f = self.flags
        return "".join(n for b, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"),
                                      (ACK, "."), (URG, "U")) if f & b)

    def __repr__(self) -> str:
        opts = []
        if self.mss is not None:
            opts.append(f"mss={self.mss}")
        if self.wscale is not None:
            opts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            opts.append("sackOK")
        if self.sack_blocks:
            opts.append(f"sack={list(self.sack_blocks)}")
        if self.ts_val is not None:
            opts.append(f"ts={self.ts_val}/{self.ts_ecr}")
        return (f"TCPSegment({self.src_port}>{self.dst_port} [{self.flag_names()}] "
                f"seq={self.seq} ack={self.ack} win={self.window} len={len(self.payload)}"
                + (" " + " ".join(opts) if opts else "") + ")")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TCPSegment):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _count(counters: Optional[MutableMapping[str, int]], reason: str) -> None:
    if counters is not None:
        counters[reason] = counters.get(reason, 0) + 1


def checksum_ok(data: bytes, src: bytes, dst: bytes) -> bool:
    """True when the TCP checksum of ``data`` (the whole segment) is right for src/dst."""
    return internet_checksum(data, pseudo_header_sum(src, dst, PROTO_TCP, len(data))) == 0


def _parse_options(seg: TCPSegment, opts: bytes) -> bool:
    """Fill the option fields of ``seg`` from ``opts``; False if malformed."""
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return False
        ln = opts[i + 1]
        if ln < 2 or i + ln > n:
            return False
        if kind == OPT_MSS:
            if ln != 4:
                return False
            seg.mss = u16(opts, i + 2)
        elif kind == OPT_WS:
            if ln != 3:
                return False
            seg.wscale = opts[i + 2]
        elif kind == OPT_SACK_PERM:
            if ln != 2:
                return False
            seg.sack_permitted = True
        elif kind == OPT_SACK:
            if (ln - 2) % 8 or ln == 2:
                return False
            seg.sack_blocks = tuple([(u32(opts, j), u32(opts, j + 4)) for j in range(i + 2, i + ln, 8)])
        elif kind == OPT_TS:
            if ln != 10:
                return False
            seg.ts_val = u32(opts, i + 2)
            seg.ts_ecr = u32(opts, i + 6)
        # Unknown kinds are skipped by their length (RFC 9293 §3.1 MUST-6).
        i += ln
    return True


def parse_segment(data: bytes, src: Optional[bytes] = None, dst: Optional[bytes] = None,
                  counters: Optional[MutableMapping[str, int]] = None) -> Optional[TCPSegment]:
    """Parse one TCP segment (header + payload, as carried in the IPv4 payload).

    With ``src`` and ``dst`` (4-byte IPv4 addresses) the checksum is verified over the
    pseudo-header. Returns None, after counting the reason in ``counters``, for anything
    unusable; never raises on malformed input.
    """
    buf = data if type(data) is bytes else bytes(data)
    n = len(buf)
    if n < 20:
        _count(counters, "truncated")
        return None
    hl = (buf[12] >> 4) << 2
    if hl < 20 or hl > n:
        _count(counters, "bad_header_length")
        return None
    if src is not None and dst is not None:
        try:
            ok = internet_checksum(buf, pseudo_header_sum(src, dst, PROTO_TCP, n)) == 0
        except (ValueError, TypeError):
            ok = False
        if not ok:
            _count(counters, "bad_checksum")
            return None
    # __new__ and the fields one by one, read in place: no argument parsing, no struct call
    seg = TCPSegment.__new__(TCPSegment)
    seg.src_port = u16(buf, 0)
    seg.dst_port = u16(buf, 2)
    seg.seq = u32(buf, 4)
    seg.ack = u32(buf, 8)
    seg.flags = buf[13]
    seg.window = u16(buf, 14)
    seg.urgent = u16(buf, 18)
    seg.payload = buf[hl:]
    seg.mss = None
    seg.wscale = None
    seg.sack_permitted = False
    seg.sack_blocks = ()
    seg.ts_val = None
    seg.ts_ecr = None
    if hl > 20 and not _parse_options(seg, buf[20:hl]):
        _count(counters, "bad_options")
        return None
    return seg


def build_options(mss: Optional[int] = None, wscale: Optional[int] = None,
                  sack_permitted: bool = False, sack_blocks: tuple = (),
                  ts_val: Optional[int] = None, ts_ecr: Optional[int] = None) -> bytes:
    """Options in Linux's order and alignment, padded to a multiple of 4 octets."""
    out = bytearray()
    if mss is not None:
        out += _OPT_MSS.pack(OPT_MSS, 4, mss)
    if ts_val is not None:
        if sack_permitted:
            out += bytes((OPT_SACK_PERM, 2, OPT_TS, 10)) + _U32PAIR.pack(ts_val, ts_ecr or 0)
            sack_permitted = False
        else:
            out += _OPT_TS.pack(OPT_NOP, OPT_NOP, OPT_TS, 10, ts_val, ts_ecr or 0)
    if sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WS, 3, wscale))
    if sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack_blocks)))
        for left, right in sack_blocks:
            out += _U32PAIR.pack(left & 0xFFFFFFFF, right & 0xFFFFFFFF)
    while len(out) % 4:
        out.append(OPT_EOL)
    if len(out) > 40:
        raise ValueError(f"TCP options need {len(out)} octets, more than 40")
    return bytes(out)


def encode_segment(src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
                   options: bytes, payload: Union[bytes, bytearray], pseudo_sum: int) -> bytes:
    """The bytes of a segment with its checksum (``seq`` and ``ack`` 32-bit): the hot path's
    serializer. ``pseudo_sum`` is the pseudo-header sum without the TCP length
    (``pseudo_header_sum(src, dst, PROTO_TCP, 0)``)."""
    hl = 20 + len(options)
    buf = bytearray(20)
    put16(buf, 0, src_port)
    put16(buf, 2, dst_port)
    put32(buf, 4, seq)
    put32(buf, 8, ack)
    buf[12] = hl << 2
    buf[13] = flags
    put16(buf, 14, window)
    if options:
        buf += options
    if payload:
        buf += payload
    put16(buf, 16, internet_checksum(buf, pseudo_sum + hl + len(payload)))
    return bytes(buf)


def build_segment(seg: TCPSegment, src: Optional[bytes] = None,
                  dst: Optional[bytes] = None) -> bytes:
    """Serialize ``seg``; with src/dst the checksum is filled in (else left 0)."""
    opts = build_options(seg.mss, seg.wscale, seg.sack_permitted, seg.sack_blocks,
                         seg.ts_val, seg.ts_ecr)
    hl = 20 + len(opts)
    buf = bytearray(hl + len(seg.payload))
    HEADER.pack_into(buf, 0, seg.src_port, seg.dst_port, seg.seq & 0xFFFFFFFF,
                     seg.ack & 0xFFFFFFFF, (hl >> 2) << 4, seg.flags & 0xFF,
                     seg.window & 0xFFFF, 0, seg.urgent & 0xFFFF)
    buf[20:hl] = opts
    buf[hl:] = seg.payload
    if src is not None and dst is not None:
        _U16.pack_into(buf, 16, internet_checksum(
            buf, pseudo_header_sum(src, dst, PROTO_TCP, len(buf))))
    return bytes(buf)
