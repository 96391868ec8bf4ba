"""IPv4 (RFC 791): header validation, building datagrams, and fragmenting what we send.

Sans-IO and allocation-light: :func:`parse` validates a received datagram and returns an
:class:`IPv4Header` with offsets into the original bytes; nothing is copied until a layer needs it.
"""

from __future__ import annotations

import struct

from pyslirp._core.checksum import internet_checksum
from pyslirp.net.wire import u16

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

MIN_HEADER = 20
DEFAULT_TTL = 64
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF


#: every reason :func:`parse` rejects a datagram for, and :func:`fragment` a datagram to send
PARSE_ERRORS = ("truncated", "bad_version", "bad_header_length", "bad_total_length", "bad_header_checksum",
                "reserved_flag")
FRAGMENT_ERRORS = ("needs_fragmentation_df", "mtu_too_small")


class IPv4Error(ValueError):
    """A datagram we drop; ``reason`` is the counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IPv4Header:
    """The fields of a received header; the payload is ``packet[header_length:total_length]``."""

    __slots__ = ("header_length", "total_length", "identification", "flags_fragment", "ttl", "protocol",
                 "src", "dst", "tos")

    def __init__(self, header_length: int, total_length: int, identification: int, flags_fragment: int,
                 ttl: int, protocol: int, src: bytes, dst: bytes, tos: int) -> None:
        self.header_length = header_length
        self.total_length = total_length
        self.identification = identification
        self.flags_fragment = flags_fragment
        self.ttl = ttl
        self.protocol = protocol
        self.src = src
        self.dst = dst
        self.tos = tos

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_fragment & (FLAG_MF | OFFSET_MASK))


def parse(packet: bytes) -> IPv4Header:
    """Validate a received datagram (RFC 791 §3.1, RFC 1122 §3.2.1); raise :class:`IPv4Error`."""
    # The fields are read in place (wire.py): compiled, each read is a C load from the bytes.
    data = packet if type(packet) is bytes else bytes(packet)
    n = len(data)
    if n < MIN_HEADER:
        raise IPv4Error("truncated")
    ver_ihl = data[0]
    if ver_ihl >> 4 != 4:
        raise IPv4Error("bad_version")
    header_length = (ver_ihl & 0x0F) * 4
    if header_length < MIN_HEADER or header_length > n:
        raise IPv4Error("bad_header_length")
    total_length = u16(data, 2)
    if total_length < header_length or total_length > n:
        raise IPv4Error("bad_total_length")
    if internet_checksum(data[:header_length]) != 0:
        raise IPv4Error("bad_header_checksum")
    flags_fragment = u16(data, 6)
    if flags_fragment & 0x8000:
        raise IPv4Error("reserved_flag")
    # __new__ and the fields one by one: no argument parsing per datagram
    header = IPv4Header.__new__(IPv4Header)
    header.header_length = header_length
    header.total_length = total_length
    header.identification = u16(data, 4)
    header.flags_fragment = flags_fragment
    header.ttl = data[8]
    header.protocol = data[9]
    header.src = data[12:16]
    header.dst = data[16:20]
    header.tos = data[1]
    return header


def build(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload: bytes,
    identification: int,
    ttl: int = DEFAULT_TTL,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """An IPv4 datagram with a 20-byte header and its checksum."""
    total_length = 20 + len(payload)
    header = bytearray(20)
    header[0] = 0x45
    header[1] = tos
    header[2] = total_length >> 8
    header[3] = total_length & 0xFF
    header[4] = identification >> 8
    header[5] = identification & 0xFF
    header[6] = 0x40 if dont_fragment else 0  # FLAG_DF, fragment offset 0
    header[8] = ttl
    header[9] = protocol
    for i in range(4):  # octet by octet: a bytearray's slice assignment copies its source first
        header[12 + i] = src[i]
        header[16 + i] = dst[i]
    checksum = internet_checksum(header)
    header[10] = checksum >> 8
    header[11] = checksum & 0xFF
    return bytes(header) + payload


def fragment(packet: bytes, mtu: int) -> list[bytes]:
    """Split a datagram to fit ``mtu`` (RFC 791 §3.2, fragmentation procedure).

    Raises :class:`IPv4Error` ("needs_fragmentation_df") when the datagram has DF set, and
    ("mtu_too_small") when not even 8 bytes of data fit.
    """
    if len(packet) <= mtu:
        return [packet]
    header = parse(packet)
    if header.flags_fragment & FLAG_DF:
        raise IPv4Error("needs_fragmentation_df")
    hlen = header.header_length
    chunk = (mtu - hlen) // 8 * 8
    if chunk <= 0:
        raise IPv4Error("mtu_too_small")
    data = packet[hlen : header.total_length]
    base_offset = header.flags_fragment & OFFSET_MASK
    more_after = header.flags_fragment & FLAG_MF
    pieces = []
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        last = start + chunk >= len(data)
        flags = (base_offset + start // 8) | (more_after if last else FLAG_MF)
        frag_header = bytearray(packet[:hlen])
        struct.pack_into("!HHH", frag_header, 2, hlen + len(piece), header.identification, flags)
        struct.pack_into("!H", frag_header, 10, 0)
        struct.pack_into("!H", frag_header, 10, internet_checksum(frag_header))
        pieces.append(bytes(frag_header) + piece)
    return pieces
