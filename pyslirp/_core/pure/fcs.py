"""FCS-16 (RFC 1662 Appendix C.2), the table-driven byte-at-a-time algorithm of the RFC."""

from __future__ import annotations

INIT = 0xFFFF  # PPPINITFCS16
GOOD = 0xF0B8  # PPPGOODFCS16


def _make_table() -> list[int]:
    # RFC 1662 C.2: table generator for polynomial 0x8408 (x^0 + x^5 + x^12 + x^16, reflected).
    table = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        table.append(v)
    return table


FCSTAB = _make_table()


def fcs16(data: bytes | bytearray | memoryview, fcs: int = INIT) -> int:
    """Running FCS-16 register over ``data`` (not complemented)."""
    if not 0 <= fcs <= 0xFFFF:
        raise ValueError(f"fcs must be a 16-bit value, got {fcs:#x}")
    for b in memoryview(data).cast("B"):
        fcs = (fcs >> 8) ^ FCSTAB[(fcs ^ b) & 0xFF]
    return fcs
