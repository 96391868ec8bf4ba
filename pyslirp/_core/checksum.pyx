# cython: boundscheck=False, wraparound=False, cdivision=True
"""The Internet checksum (RFC 1071), pseudo-header sums, incremental update (RFC 1624).

Theory of operation. The checksum is the ones' complement of the ones' complement sum of the
data taken as big-endian 16-bit words (a trailing odd byte is padded with a zero byte on the
right). Ones' complement addition is commutative and associative and "byte-order
independent" (RFC 1071 §2(B)): summing the words in the host's byte order and swapping the
two bytes of the folded result gives the network-order sum. Deferred carries (§2(C)) let us
add 32-bit words into a 64-bit accumulator and fold only after up to 2^30 of them (which
cannot overflow 64 bits). The loop is a plain ``acc += word`` over ``memcpy``-loaded words,
which the compiler vectorises.

``initial`` and every value in and out of this module are in network (big-endian) terms:
``pseudo_header_sum(...)`` is a valid ``initial``, and ``internet_checksum`` returns the
16-bit value to store big-endian in a header.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef bint _LITTLE_ENDIAN
cdef uint32_t _probe = 1
_LITTLE_ENDIAN = (<unsigned char *>&_probe)[0] == 1


cdef inline uint64_t _fold(uint64_t s) noexcept nogil:
    # Fold a 64-bit ones' complement sum to 16 bits (end-around carries).
    s = (s & 0xFFFFFFFFU) + (s >> 32)
    s = (s & 0xFFFFFFFFU) + (s >> 32)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


cdef uint16_t ones_sum16(const unsigned char *p, Py_ssize_t n, uint64_t initial) noexcept nogil:
    cdef uint64_t acc0 = 0
    cdef uint64_t s
    cdef uint32_t w
    cdef uint16_t h
    cdef Py_ssize_t i, nwords
    while n >= 4:
        # At most 2^30 words per pass, so the 64-bit accumulator cannot overflow.
        nwords = n >> 2
        if nwords > (1 << 30):
            nwords = 1 << 30
        # The hot loop: native-order 32-bit words into a 64-bit accumulator.
        for i in range(nwords):
            memcpy(&w, p + 4 * i, 4)
            acc0 += w
        acc0 = _fold(acc0)
        p += 4 * nwords
        n -= 4 * nwords
    if n >= 2:
        memcpy(&h, p, 2)
        acc0 += h
        p += 2
        n -= 2
    if n:
        # Odd trailing byte: the high-order byte of a big-endian word padded with zero.
        if _LITTLE_ENDIAN:
            acc0 += p[0]
        else:
            acc0 += <uint64_t>p[0] << 8
    s = _fold(acc0)
    if _LITTLE_ENDIAN:
        s = ((s >> 8) | (s << 8)) & 0xFFFF
    return <uint16_t>_fold(s + (initial & 0xFFFFFFFFU) + (initial >> 32))


cdef inline uint64_t _check_initial(object initial) except? 0:
    if initial < 0 or initial > 0xFFFFFFFF:
        raise ValueError(f"initial must be a non-negative 32-bit partial sum, got {initial!r}")
    return <uint64_t>initial


cdef int _sum(object data, uint64_t initial) except -1:
    # bytes (every datagram on the data path) are read in place; any other buffer through the
    # buffer protocol
    cdef Py_buffer view
    cdef int s
    if PyBytes_CheckExact(data):
        return ones_sum16(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), initial)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        s = ones_sum16(<const unsigned char *>view.buf, view.len, initial)
    finally:
        PyBuffer_Release(&view)
    return s


def ones_complement_sum(data, initial: int = 0) -> int:
    """The folded 16-bit ones' complement sum of ``data`` plus ``initial`` (not complemented)."""
    return _sum(data, _check_initial(initial))


cpdef long internet_checksum(object data, object initial=0) except -1:
    """RFC 1071 checksum of ``data`` (any contiguous buffer) continuing the partial sum
    ``initial`` (e.g. ``pseudo_header_sum(...)``): the 16-bit value to put in the header."""
    return (~_sum(data, _check_initial(initial))) & 0xFFFF


def verify(data, initial: int = 0) -> bool:
    """True when ``data`` (a header or segment with its checksum field in place) sums, with
    ``initial``, to 0xFFFF (RFC 1071 §1: the receiver's check)."""
    return _sum(data, _check_initial(initial)) == 0xFFFF


cdef inline uint32_t _be32(const unsigned char *b) noexcept nogil:
    return (<uint32_t>b[0] << 24) | (<uint32_t>b[1] << 16) | (<uint32_t>b[2] << 8) | b[3]


cdef uint32_t _addr(object a, str name) except? 0:
    # Once per TCP segment parsed or connection made: bytes are read in place, any other
    # buffer through the buffer protocol (a typed memoryview costs thousands of instructions
    # to set up, far more than the sum).
    cdef Py_buffer view
    cdef uint32_t value
    if isinstance(a, int):
        if a < 0 or a > 0xFFFFFFFF:
            raise ValueError(f"{name} must be a 32-bit IPv4 address, got {a!r}")
        return <uint32_t>a
    if PyBytes_CheckExact(a):
        if PyBytes_GET_SIZE(a) != 4:
            raise ValueError(f"{name} must be 4 bytes or an int, got {PyBytes_GET_SIZE(a)} bytes")
        return _be32(<const unsigned char *>PyBytes_AS_STRING(a))
    PyObject_GetBuffer(a, &view, PyBUF_SIMPLE)
    try:
        if view.len != 4:
            raise ValueError(f"{name} must be 4 bytes or an int, got {view.len} bytes")
        value = _be32(<const unsigned char *>view.buf)
    finally:
        PyBuffer_Release(&view)
    return value


cpdef long long pseudo_header_sum(object src, object dst, int proto, long long length) except -1:
    """Un-complemented 32-bit partial sum of the TCP/UDP IPv4 pseudo-header
    (RFC 9293 §3.1, RFC 768): src, dst (4 bytes or int), zero, protocol, length.
    Pass it as ``initial`` to ``internet_checksum``/``verify``."""
    cdef uint32_t s = _addr(src, "src")
    cdef uint32_t d = _addr(dst, "dst")
    if proto < 0 or proto > 0xFF:
        raise ValueError(f"proto must be 0..255, got {proto}")
    if length < 0 or length > 0xFFFF:
        raise ValueError(f"length must be 0..65535, got {length}")
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + <uint32_t>proto + <uint32_t>length


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), the header checksum after one 16-bit
    field changes from ``old_word`` (m) to ``new_word`` (m')."""
    if not (0 <= old_checksum <= 0xFFFF and 0 <= old_word <= 0xFFFF and 0 <= new_word <= 0xFFFF):
        raise ValueError("checksum_update takes 16-bit values")
    cdef uint64_t s = ((~(<uint32_t>old_checksum)) & 0xFFFF) + ((~(<uint32_t>old_word)) & 0xFFFF) + <uint32_t>new_word
    return (~_fold(s)) & 0xFFFF


def checksum_update32(old_checksum: int, old_value: int, new_value: int) -> int:
    """RFC 1624 eqn. 3 for a 32-bit field (e.g. an IPv4 address in a pseudo-header)."""
    if not (0 <= old_value <= 0xFFFFFFFF and 0 <= new_value <= 0xFFFFFFFFU):
        raise ValueError("checksum_update32 takes 32-bit values")
    c = checksum_update(old_checksum, old_value >> 16, new_value >> 16)
    return checksum_update(c, old_value & 0xFFFF, new_value & 0xFFFF)
