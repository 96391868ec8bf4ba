# Types for compiling network.py with Cython in pure-Python mode (see gateway.pxd): what the
# gateway calls after every read and flush becomes C calls on the stack's C fields.

cimport cython
from pyslirp.net.stack cimport Stack


@cython.final
cdef class LinkNetwork:
    cdef public object now, admission, proxy, relay, counters, registry
    cdef public Stack stack
    cdef public list _registrations
    cdef public bint batch_acks
    cdef public double sweep_interval, _next_sweep

    cpdef void receive(self, object packet, double now)
    cdef void _dispatch(self)
    cpdef list take_output(self)
    cpdef bint interactive(self, double now)
    cpdef double read_rest(self, double now)
    cpdef object next_deadline(self)
