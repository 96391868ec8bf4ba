# Types for compiling line_budget.py with Cython in pure-Python mode (see tcp.pxd): the budget's
# state becomes C fields and the checks a connection makes per segment become C calls.

cimport cython


@cython.final
cdef class LineBudget:
    cdef public long long mss, flight
    cdef public object limit, min_rtt, _interval_start
    cdef public double rate, _interactive_until, read_rest
    cdef public object _rates
    cdef public long long _interval_bytes
    cdef public dict _waiting, counters

    cpdef long long segment_size(self, double now)
    cpdef bint interactive(self, double now)
    cpdef void note_interactive(self, double now)
    cpdef bint admit(self, object conn, long long size, double now)
    cdef bint _fits(self, long long size, double now)
    cpdef void release(self, long long size, double now, bint delivered=*)
    cpdef void rtt_sample(self, double rtt)
    cpdef double update_read_rest(self, double now)
    cpdef list take_waiting(self, double now)
    cdef void _delivered(self, long long size, double now)
    cdef void _update_limit(self)
