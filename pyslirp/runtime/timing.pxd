# Types for compiling timing.py with Cython in pure-Python mode (see gateway.pxd): the histogram
# the gateway adds to after every read and flush becomes a C call.

cimport cython


@cython.final
cdef class ProcessingTimes:
    cdef public list counts
    cdef public long long packets

    @cython.locals(us=cython.double, index=cython.Py_ssize_t)
    cpdef void add(self, double seconds, long long packets)
