# Types for compiling tcp_segment.py with Cython in pure-Python mode (see tcp.pxd): a segment's
# fields become C fields, which the compiled connection reads directly.

cimport cython
from pyslirp._core.checksum cimport internet_checksum, pseudo_header_sum
from pyslirp.net.wire cimport put16, put32, u16, u32


@cython.final
cdef class TCPSegment:
    cdef public long long src_port, dst_port, seq, ack, flags, window, urgent
    cdef public object payload, mss, wscale, sack_blocks, ts_val, ts_ecr
    cdef public bint sack_permitted


cdef void _count(object counters, str reason)
@cython.locals(i=Py_ssize_t, n=Py_ssize_t, kind=int, ln=int)
cdef bint _parse_options(TCPSegment seg, bytes opts)
@cython.locals(buf=bytes, n=Py_ssize_t, hl=Py_ssize_t, seg=TCPSegment)
cpdef TCPSegment parse_segment(object data, object src=*, object dst=*, object counters=*)
@cython.locals(hl=Py_ssize_t, buf=bytearray)
cpdef bytes encode_segment(long long src_port, long long dst_port, long long seq, long long ack,
                           long long flags, long long window, bytes options, object payload,
                           long long pseudo_sum)
