# Declarations of pyslirp._core.hdlc (RFC 1662 octet-stuffed framing).
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef class Deframer:
    cdef uint8_t *_buf             # frame being received, unstuffed, incl. FCS
    cdef Py_ssize_t _len           # bytes in _buf
    cdef Py_ssize_t _max_frame     # capacity of _buf: longest frame accepted, incl. FCS
    cdef int _mode                 # _IN_FRAME, _HUNT (before first flag), _TOSS (too long)
    cdef uint8_t _xor              # 0x20 after a Control Escape, else 0
    cdef uint32_t _accm
    # Per-octet class built from the receive ACCM (RFC 1662 §4.2, §7.1): _RX_STORE for an
    # octet that is stored, _RX_ESCAPE for Control Escape, _RX_SPECIAL for Flag and for
    # control characters deleted per the ACCM.
    cdef uint8_t _cls[256]
    cdef readonly uint64_t frames_ok, bad_fcs, too_short, too_long, aborted, bytes_in
    cdef readonly uint64_t hunt_bytes, ctrl_ignored, bytes_out

    cdef void _build_tables(self) noexcept
    cdef int _end_frame(self, list out) except -1
