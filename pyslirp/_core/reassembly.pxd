# Declarations of pyslirp._core.reassembly (TCP out-of-order queue, IPv4 fragment reassembly).
from libc.stdint cimport uint32_t, uint64_t


cdef class _Block:
    cdef uint32_t seq          # sequence number of the first octet
    cdef bytearray data
    cdef uint64_t stamp        # insert() counter value of the last segment that touched it


cdef class SegmentQueue:
    cdef list _blocks          # disjoint, non-adjacent, in sequence order from rcv_nxt
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t bytes_held
    cdef readonly uint64_t dropped_bytes, beyond_fin_bytes, segments
    cdef object _fin           # None or the sequence number the FIN occupies
    cdef uint64_t _clock

    cdef int _trim_behind(self, uint32_t rcv_nxt) except -1
    cdef int _trim_after_fin(self, uint32_t rcv_nxt) except -1


cdef class _Datagram:
    cdef double created
    cdef bytes header          # header of the offset-0 fragment, once received
    cdef list offsets          # sorted fragment offsets (octets)
    cdef list pieces           # payloads, same order
    cdef Py_ssize_t end        # payload length once the last fragment (MF=0) is in, else -1
    cdef Py_ssize_t max_end    # highest fragment end seen
    cdef Py_ssize_t held       # payload octets held


cdef class FragmentReassembler:
    cdef dict _dgrams          # key -> _Datagram, in creation order
    cdef readonly Py_ssize_t max_bytes, max_datagrams, bytes_held
    cdef readonly double timeout
    cdef readonly uint64_t fragments, reassembled, duplicates, overlaps, bad_fragment
    cdef readonly uint64_t inconsistent, too_big, timeouts, evicted

    cdef int _drop(self, object key) except -1
