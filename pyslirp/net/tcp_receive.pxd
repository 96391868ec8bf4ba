# Types for compiling tcp_receive.py with Cython in pure-Python mode (see tcp.pxd): the receive
# side's state is C fields, and what the connection calls per segment are C calls.

cimport cython

cdef long long MASK  # a C value, not a module-dict lookup


@cython.final
cdef class ReassemblyPool:
    cdef public long long limit, held


@cython.final
cdef class Receiver:
    cdef public long long irs, rcv_nxt, rcv_adv, size, cap, sws, mss, rcv_mss, unacked
    cdef public long long last_ack_sent, pool_charged
    cdef public ReassemblyPool pool
    cdef public int rcv_wscale, challenge_ack_limit, _chal_n
    cdef public bytearray buf
    cdef public object ooo, delack_at, _ctr
    cdef public bint ooo_used, fin_rcvd, ack_now
    cdef public double delack, oow_ack_interval, _oow_t, _chal_t

    cpdef void start(self, long long irs, int wscale)
    @cython.locals(rcv_nxt=cython.longlong, rwnd=cython.longlong, end=cython.longlong)
    cpdef bint acceptable(self, long long seq, long long seglen)
    cpdef void ack_unacceptable(self, double now, long long seglen)
    cpdef void challenge_ack(self, double now)
    @cython.locals(keep=cython.longlong)
    cpdef object cut_to_window(self, long long seq, object payload)
    @cython.locals(rcv_nxt=cython.longlong, plen=Py_ssize_t, delivered=cython.longlong)
    cpdef long long take_in_order(self, object payload, bint fin)
    @cython.locals(plen=Py_ssize_t, over=cython.longlong, stored=cython.longlong, pool=ReassemblyPool)
    cpdef void hold(self, long long seq, object payload, bint fin)
    cpdef void delay_ack(self, double now)
    cpdef void ack_sent(self, bint sack_complete)
    cpdef bytes read(self, long long max_bytes)
    cpdef long long buffered(self)
    cpdef void discard_held(self)
    @cython.locals(free=cython.longlong, wnd=cython.longlong)
    cpdef bint window_update_due(self)
    @cython.locals(ws=cython.int, nxt=cython.longlong, adv=cython.longlong, free=cython.longlong, lim=cython.longlong,
                   wnd=cython.longlong, field=cython.longlong)
    cpdef long long window_field(self)
    @cython.locals(free=cython.longlong)
    cpdef long long syn_window(self)
    @cython.locals(n=Py_ssize_t)
    cpdef long long sack_option_size(self, int max_blocks)
    cpdef bytes sack_option(self, long long max_blocks)
    cdef void _count(self, str name, long long n)
    @cython.locals(held=cython.longlong)
    cdef void _charge_pool(self)
