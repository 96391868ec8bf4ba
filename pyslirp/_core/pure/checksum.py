"""Internet checksum (RFC 1071, 16-bit words, byte at a time), pseudo-header, RFC 1624."""

from __future__ import annotations


def _check_initial(initial: int) -> None:
    if not 0 <= initial <= 0xFFFFFFFF:
        raise ValueError(f"initial must be a non-negative 32-bit partial sum, got {initial!r}")


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Folded 16-bit ones' complement sum of big-endian words of ``data`` plus ``initial``."""
    _check_initial(initial)
    b = bytes(data)
    s = initial
    for i in range(0, len(b) - 1, 2):
        s += (b[i] << 8) | b[i + 1]
    if len(b) & 1:
        s += b[-1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    return ~ones_complement_sum(data, initial) & 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    return ones_complement_sum(data, initial) == 0xFFFF


def _addr(a: bytes | bytearray | memoryview | int, name: str) -> int:
    if isinstance(a, int):
        if not 0 <= a <= 0xFFFFFFFF:
            raise ValueError(f"{name} must be a 32-bit IPv4 address, got {a!r}")
        return a
    b = bytes(a)
    if len(b) != 4:
        raise ValueError(f"{name} must be 4 bytes or an int, got {len(b)} bytes")
    return int.from_bytes(b, "big")


def pseudo_header_sum(src: bytes | int, dst: bytes | int, proto: int, length: int) -> int:
    s = _addr(src, "src")
    d = _addr(dst, "dst")
    if not 0 <= proto <= 0xFF:
        raise ValueError(f"proto must be 0..255, got {proto}")
    if not 0 <= length <= 0xFFFF:
        raise ValueError(f"length must be 0..65535, got {length}")
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + proto + length


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    if not (0 <= old_checksum <= 0xFFFF and 0 <= old_word <= 0xFFFF and 0 <= new_word <= 0xFFFF):
        raise ValueError("checksum_update takes 16-bit values")
    s = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def checksum_update32(old_checksum: int, old_value: int, new_value: int) -> int:
    if not (0 <= old_value <= 0xFFFFFFFF and 0 <= new_value <= 0xFFFFFFFF):
        raise ValueError("checksum_update32 takes 32-bit values")
    c = checksum_update(old_checksum, old_value >> 16, new_value >> 16)
    return checksum_update(c, old_value & 0xFFFF, new_value & 0xFFFF)
