"""Fields in network byte order (RFC 791 §3.1, "Appendix B: Data Transmission Order"): 16- and
32-bit big-endian integers read from a packet's bytes and written into a header being built.

Compiled (``wire.pxd``), each is a C call that loads or stores the octets in place: no ``struct``
call and no int object per field, which is what parsing and building every datagram in the
protocol cores costs otherwise. Out-of-range offsets raise ``IndexError`` as indexing does.
"""

from __future__ import annotations


def u16(data: bytes, offset: int) -> int:
    """The 16-bit field at ``offset``."""
    return data[offset] << 8 | data[offset + 1]


def u32(data: bytes, offset: int) -> int:
    """The 32-bit field at ``offset`` (unsigned)."""
    high = data[offset]  # 64-bit when compiled: the shift by 24 must not overflow
    return high << 24 | data[offset + 1] << 16 | data[offset + 2] << 8 | data[offset + 3]


def put16(buf: bytearray, offset: int, value: int) -> None:
    """Store the low 16 bits of ``value`` at ``offset``."""
    buf[offset] = value >> 8 & 0xFF
    buf[offset + 1] = value & 0xFF


def put32(buf: bytearray, offset: int, value: int) -> None:
    """Store the low 32 bits of ``value`` at ``offset``."""
    buf[offset] = value >> 24 & 0xFF
    buf[offset + 1] = value >> 16 & 0xFF
    buf[offset + 2] = value >> 8 & 0xFF
    buf[offset + 3] = value & 0xFF
