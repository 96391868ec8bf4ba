# Types for compiling scheduler.py with Cython in pure-Python mode (see gateway.pxd): the queues'
# state becomes C fields, and queueing and writing a frame C calls from the gateway.

cimport cython


@cython.final
cdef class LineScheduler:
    cdef public object session, rate, _wake
    cdef public long long bulk_limit, os_queue_limit, batch_limit
    cdef public tuple _queues
    cdef public list _queued_bytes
    cdef public double _tokens, _token_time
    cdef public dict counters
    cdef public bint _closed, _writer_busy
    cdef public bytes _partial
    cdef public long long _os_bound

    cpdef bint send(self, bytes frame, object priority=*)
    cpdef void kick(self)
    cpdef long long bulk_room(self)
    @cython.locals(size=cython.Py_ssize_t, parts=list)
    cdef bytes _take_batch(self)
    cdef bint _os_queue_over(self)
