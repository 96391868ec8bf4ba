# Types for compiling tcp_options.py with Cython in pure-Python mode (see tcp.pxd).

cimport cython
from pyslirp.net.tcp_segment cimport TCPSegment

cdef long long MASK, HALF  # C values, not module-dict lookups


@cython.final
cdef class NegotiatedOptions:
    cdef public object config
    cdef public int ws_offer, snd_wscale
    cdef public bint ws_ok, sack_ok, ts_ok
    cdef public long long mss_cap, eff_mss, ts_recent, ts_offset
    cdef public double ts_recent_age

    cpdef int agree(self, TCPSegment syn, double now)
    cpdef bytes syn_options(self, bint active, int rcv_wscale, double now)
    cpdef long long ts_now(self, double now)
    cpdef bytes timestamp_option(self, double now)
    cpdef bint paws_rejects(self, object ts_val, double now)
    cpdef void update_recent(self, object ts_val, double now)
    cpdef bint newer_than_recent(self, long long ts_val)
