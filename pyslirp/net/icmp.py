"""ICMP (RFC 792): echo replies, and the destination-unreachable messages a real host sends."""

from __future__ import annotations

import struct

from pyslirp._core.checksum import internet_checksum

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11

# Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1)
NET_UNREACHABLE = 0
HOST_UNREACHABLE = 1
PROTOCOL_UNREACHABLE = 2
PORT_UNREACHABLE = 3
FRAGMENTATION_NEEDED = 4
ADMIN_PROHIBITED = 13
# Time Exceeded codes (RFC 792)
TTL_EXCEEDED_IN_TRANSIT = 0


#: every reason :func:`echo_reply` rejects a message for
PARSE_ERRORS = ("truncated", "bad_checksum")


class ICMPError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def echo_reply(message: bytes) -> bytes:
    """The Echo Reply to an Echo Request message (RFC 792: same identifier, sequence and data)."""
    if len(message) < 8:
        raise ICMPError("truncated")
    if internet_checksum(message) != 0:
        raise ICMPError("bad_checksum")
    reply = bytearray(message)
    reply[0] = ECHO_REPLY
    reply[1] = 0
    reply[2:4] = b"\0\0"
    struct.pack_into("!H", reply, 2, internet_checksum(reply))
    return bytes(reply)


def unreachable(code: int, offending: bytes, header_length: int, next_hop_mtu: int = 0) -> bytes:
    """Destination Unreachable quoting the offending datagram's header and first 8 data bytes."""
    return error(DEST_UNREACHABLE, code, offending, header_length, next_hop_mtu)


def error(kind: int, code: int, offending: bytes, header_length: int, next_hop_mtu: int = 0) -> bytes:
    """An ICMP error message (RFC 792: Destination Unreachable, Time Exceeded) quoting the
    offending datagram's header and first 8 data bytes."""
    quoted = offending[: header_length + 8]
    message = bytearray(struct.pack("!BBHHH", kind, code, 0, 0, next_hop_mtu) + quoted)
    struct.pack_into("!H", message, 2, internet_checksum(message))
    return bytes(message)


def is_error(message: bytes) -> bool:
    """RFC 1122 §3.2.2: never answer an ICMP error with another."""
    return len(message) < 1 or message[0] not in (ECHO_REQUEST, ECHO_REPLY, 13, 14, 15, 16, 17, 18)
