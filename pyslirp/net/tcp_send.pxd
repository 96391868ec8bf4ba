# Types for compiling tcp_send.py with Cython in pure-Python mode (see tcp.pxd): the send side's
# state is C fields, and the parts it tells of each ACK are typed, so those calls are C calls.

cimport cython
from pyslirp.net.tcp_congestion cimport CongestionControl
from pyslirp.net.tcp_options cimport NegotiatedOptions
from pyslirp.net.tcp_rtt cimport RTTEstimator
from pyslirp.net.tcp_scoreboard cimport Scoreboard, SentSegment
from pyslirp.net.tcp_segment cimport TCPSegment

cdef long long MASK  # a C value, not a module-dict lookup


@cython.final
cdef class Sender:
    cdef public long long iss, snd_una, snd_nxt, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd
    cdef public bytearray buf
    cdef public long long buf_seq, size, fin_seq
    cdef public bint fin_queued, fin_sent, blocked, force_rtx
    cdef public double rtt_sample
    cdef public NegotiatedOptions options
    cdef public RTTEstimator rtt
    cdef public CongestionControl congestion
    cdef public Scoreboard scoreboard
    cdef object _ctr

    @cython.locals(n=Py_ssize_t, space=cython.longlong)
    cpdef long long queue(self, object data)
    @cython.locals(s=cython.longlong)
    cpdef long long space(self)
    cpdef long long unsent(self)
    cpdef long long in_flight(self)
    @cython.locals(seq=cython.longlong, off=cython.longlong, end=cython.longlong)
    cpdef object take_new(self, long long n, int fin, double now)
    @cython.locals(off=cython.longlong, end=cython.longlong)
    cpdef object payload(self, SentSegment r)
    @cython.locals(sb=Scoreboard, r=SentSegment)
    cpdef void unsend_probe(self)
    cpdef void clear(self)
    cpdef void open_window(self, long long wnd, long long wl1, long long wl2)
    @cython.locals(wl1=cython.longlong)
    cpdef void update_window(self, long long seq, long long ack, long long wnd)
    cpdef void on_established(self, bint syn_retransmitted)
    @cython.locals(opts=NegotiatedOptions, sb=Scoreboard, cc=CongestionControl, rtt=RTTEstimator,
                   mss=cython.longlong, snd_una=cython.longlong, acked=cython.longlong, min_rtt=cython.double,
                   space=cython.longlong, k=cython.longlong, bl=cython.longlong, free=cython.longlong, ms=cython.longlong,
                   sent=cython.double, ca=cython.int)
    cpdef long long on_ack(self, long long ack, TCPSegment seg, double now, bint is_dup)
    @cython.locals(rtt=RTTEstimator)
    cpdef void on_timeout(self, double now)
    cdef void _count(self, str name)
