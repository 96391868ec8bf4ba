# Types for compiling link.py with Cython in pure-Python mode (see gateway.pxd): the link's state
# becomes C fields, and the per-frame paths (a frame in, a datagram out) C calls.

cimport cython


@cython.final
cdef class PPPLink:
    cdef public object _rng, _counters, _retired, _next_options, phase, _deadline, _reason
    cdef public object options, _vj_module, _ipcp_options, _auth, login_refusal, peer_address, _lcp, _ipcp
    cdef public list _events, _outbox
    cdef public bint _moved, _ip_open, _tx_acfc, _tx_pfc, _ipcp_rejected, _keepalive_reported, _loopback_reported
    cdef public long long _tx_accm
    cdef public object _vj_tx, _vj_rx  # any codec: a test gives it a failing one

    cpdef object receive_frame(self, object frame, double now)
    @cython.locals(i=cython.Py_ssize_t, protocol=cython.longlong)
    cdef object _receive(self, bytes frame, double now)
    cpdef object encode_datagram(self, object packet)
    cdef bytes _frame(self, long long protocol, object info)
    cpdef list take_output(self)
    cpdef object next_deadline(self)
    cdef void _look(self)
    cpdef list events(self)
