# Types for compiling gateway.py with Cython in pure-Python mode. The gateway's receive and flush
# run after every line read and every flush, for each frame of every connection: here, in the
# link (ppp/link.pxd), the network (network.pxd), the scheduler and the timing histogram, the
# state is C fields and the calls between them C calls, where interpreted each was a Python
# frame. The network is typed ``object``: a test gives the gateway a stand-in.

cimport cython
from pyslirp._core.hdlc cimport Deframer
from pyslirp.ppp.link cimport PPPLink
from pyslirp.runtime.scheduler cimport LineScheduler
from pyslirp.runtime.timing cimport ProcessingTimes


@cython.final
cdef class Gateway:
    cdef public object session, name, lease, options, network_factory, observers, registry
    cdef public LineScheduler scheduler
    cdef public Deframer deframer
    cdef public PPPLink link
    cdef public object _loop, network, _timer, _timer_due
    cdef public ProcessingTimes rx_times, tx_times
    cdef public tuple _taps
    cdef public long long _deframe_errors, links_started
    cdef public bint _flush_pending, closing

    @cython.locals(started=cython.double, now=cython.double, errors=cython.longlong)
    cpdef void _receive(self, object data)
    @cython.locals(sent=cython.longlong)
    cpdef long long _flush(self)
    cdef void _handle_link_events(self)
    cdef void _arm_timer(self)
