# Types for compiling tcp_rtt.py with Cython in pure-Python mode (see tcp.pxd).

cimport cython


@cython.final
cdef class RTTEstimator:
    cdef public bint measured
    cdef public double srtt, rttvar, initial_rto, rto_base, min_rtt, min_rto, max_rto
    cdef public int backoff

    @cython.locals(d=cython.double, var=cython.double, rto=cython.double)
    cpdef void sample(self, double r)
    cpdef double rto(self)
    @cython.locals(t=cython.double)
    cpdef double backed_off(self, int backoff)
    cpdef double reordering_window(self)
    cpdef double loss_age(self)
    cpdef void on_established(self, bint syn_retransmitted)
