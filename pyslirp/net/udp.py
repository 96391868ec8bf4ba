"""UDP (RFC 768): parse and build datagrams with the pseudo-header checksum."""

from __future__ import annotations

import struct

from pyslirp._core.checksum import internet_checksum, pseudo_header_sum

PROTO_UDP = 17
HEADER = struct.Struct("!HHHH")


#: every reason :func:`parse` rejects a datagram for
PARSE_ERRORS = ("truncated", "bad_length", "bad_checksum", "port_zero")


class UDPError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse(src: bytes, dst: bytes, datagram: bytes) -> tuple[int, int, bytes]:
    """(source port, destination port, payload) of a received datagram; raise :class:`UDPError`."""
    if len(datagram) < HEADER.size:
        raise UDPError("truncated")
    sport, dport, length, checksum = HEADER.unpack_from(datagram)
    if length < HEADER.size or length > len(datagram):
        raise UDPError("bad_length")
    # RFC 768: a zero checksum means the sender computed none.
    if checksum and internet_checksum(datagram[:length], pseudo_header_sum(src, dst, PROTO_UDP, length)) != 0:
        raise UDPError("bad_checksum")
    if dport == 0:
        raise UDPError("port_zero")
    return sport, dport, datagram[HEADER.size : length]


def build(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum (0 is sent as 0xFFFF, RFC 768)."""
    length = HEADER.size + len(payload)
    header = HEADER.pack(sport, dport, length, 0)
    checksum = internet_checksum(header + payload, pseudo_header_sum(src, dst, PROTO_UDP, length)) or 0xFFFF
    return HEADER.pack(sport, dport, length, checksum) + payload
