# cython: boundscheck=False, wraparound=False, cdivision=True
"""FCS-16 of PPP in HDLC-like framing (RFC 1662 §C.2), slicing-by-16.

The FCS is the reflected CRC-CCITT (polynomial x^16 + x^12 + x^5 + 1, bit-reversed 0x8408),
register preset to 0xFFFF. ``fcs16`` returns the running register, *not* complemented:

    fcs = fcs16(frame)                       # PPPINITFCS16 is the default start
    wire = frame + (~fcs & 0xFFFF).to_bytes(2, "little")
    assert fcs16(wire) == PPPGOODFCS16       # 0xF0B8

Slicing-by-16: ``_T[k][b]`` is the register contribution of byte ``b`` followed by ``k`` zero
bytes, so sixteen input octets are folded with sixteen table loads per step, fourteen of which
do not depend on the register. Words are
assembled byte by byte (little-endian order, which the compiler turns into one load on
little-endian hosts), so the result does not depend on host byte order.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint16_t, uint64_t

INIT = PPPINITFCS16
GOOD = PPPGOODFCS16

cdef uint16_t _T[16][256]


cdef void _build_tables() noexcept:
    cdef unsigned int b, k, v
    for b in range(256):
        v = b
        for k in range(8):
            v = (v >> 1) ^ 0x8408 if (v & 1) else (v >> 1)
        _T[0][b] = <uint16_t>v
    for k in range(1, 16):
        for b in range(256):
            v = _T[k - 1][b]
            _T[k][b] = <uint16_t>((v >> 8) ^ _T[0][v & 0xFF])


_build_tables()


cdef inline uint64_t _load64le(const unsigned char *p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef uint16_t fcs16_update(uint16_t fcs, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    # Only the first two octets of each 16-octet block meet the 16-bit register; the other
    # fourteen table lookups do not depend on it and overlap with the previous block.
    cdef uint64_t a, b
    cdef unsigned int crc = fcs, hi
    while n >= 16:
        a = _load64le(p)
        b = _load64le(p + 8)
        hi = (_T[13][(a >> 16) & 0xFF] ^ _T[12][(a >> 24) & 0xFF] ^ _T[11][(a >> 32) & 0xFF]
              ^ _T[10][(a >> 40) & 0xFF] ^ _T[9][(a >> 48) & 0xFF] ^ _T[8][a >> 56]
              ^ _T[7][b & 0xFF] ^ _T[6][(b >> 8) & 0xFF] ^ _T[5][(b >> 16) & 0xFF]
              ^ _T[4][(b >> 24) & 0xFF] ^ _T[3][(b >> 32) & 0xFF] ^ _T[2][(b >> 40) & 0xFF]
              ^ _T[1][(b >> 48) & 0xFF] ^ _T[0][b >> 56])
        a ^= crc
        crc = _T[15][a & 0xFF] ^ _T[14][(a >> 8) & 0xFF] ^ hi
        p += 16
        n -= 16
    while n > 0:
        crc = (crc >> 8) ^ _T[0][(crc ^ p[0]) & 0xFF]
        p += 1
        n -= 1
    return <uint16_t>crc


def fcs16(data, long long fcs=PPPINITFCS16) -> int:
    """Running FCS-16 register over ``data`` (any contiguous buffer), starting from ``fcs``."""
    cdef Py_buffer view
    if fcs < 0 or fcs > 0xFFFF:
        raise ValueError(f"fcs must be a 16-bit value, got {fcs:#x}")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return fcs16_update(<uint16_t>fcs, <const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
