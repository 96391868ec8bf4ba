# Types for compiling tcp_congestion.py with Cython in pure-Python mode (see tcp.pxd). The sender
# calls these methods through the base class: virtual C methods, which another algorithm's
# subclass overrides.

cimport cython


cdef class CongestionControl:
    cdef public long long cwnd, ssthresh, recover
    cdef public int state, initial_window
    cdef public bint cwnd_limited

    cpdef void on_established(self, long long mss, bint syn_retransmitted, long long snd_una)
    cpdef void on_ack(self, long long acked, long long snd_una, long long mss)
    cpdef void on_enter_recovery(self, long long flight, long long mss, long long snd_nxt)
    cpdef void on_recovery_end(self)
    cpdef void on_rto(self, long long flight, long long mss, long long snd_nxt, bint first_timeout)
    cpdef void on_idle_restart(self, long long mss)


# Final: its overrides of the base class's methods (in the .py) fill the same virtual slots.
@cython.final
cdef class NewReno(CongestionControl):
    cdef public long long acked_in_avoidance

    cpdef long long iw_octets(self, long long mss)
