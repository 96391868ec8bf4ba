# Types for compiling tcp_scoreboard.py with Cython in pure-Python mode (see tcp.pxd): the
# records and the counts are C fields, and what the sender calls per ACK are C calls.

cimport cython

cdef long long MASK, HALF  # C values, not module-dict lookups


@cython.final
cdef class SentSegment:
    cdef public long long seq, end
    cdef public int fin, rtx
    cdef public double xmit
    cdef public bint sacked, lost, retrans


@cython.final
cdef class Scoreboard:
    cdef public list records
    cdef public Py_ssize_t head
    cdef public long long sacked_bytes, lost_bytes, retrans_bytes, lost_pending
    cdef public long long rtx_hint, mark_hint, high_sacked
    cdef public object rtx_fifo
    cdef public int dupacks, dup_thresh
    cdef public long long reno_sacked
    cdef public double newest_clean_xmit, newest_delivered_xmit
    cdef public bint newly_sacked
    cdef object _ctr

    cpdef void start(self, long long snd_una)
    cpdef void add(self, long long seq, long long end, int fin, double now)
    cpdef bint empty(self)
    cpdef SentSegment first(self)
    cpdef void clear(self)
    cpdef long long in_flight(self, long long outstanding)
    cpdef void begin_ack(self)
    @cython.locals(r=SentSegment, rq=list, h=Py_ssize_t, n=Py_ssize_t, d=cython.longlong)
    cpdef void on_cumulative_ack(self, long long ack, double now, double min_rtt)
    @cython.locals(r=SentSegment, rq=list, h=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t,
                   l32=cython.longlong, r32=cython.longlong, left=cython.longlong, right=cython.longlong)
    cpdef void on_sack(self, object blocks, long long snd_una, long long snd_nxt, double now,
                       double min_rtt)
    @cython.locals(xmit=cython.double)
    cdef void _delivered(self, SentSegment r, double now, double min_rtt)
    @cython.locals(ln=cython.longlong)
    cdef void _clear_loss(self, SentSegment r)
    @cython.locals(cap=cython.longlong, rs=cython.longlong)
    cpdef bint count_dup_ack(self, long long outstanding, long long mss)
    @cython.locals(rs=cython.longlong)
    cpdef bint on_partial_ack(self, long long acked, long long outstanding, long long mss)
    cpdef void limit_reno_sacked(self, long long outstanding, long long mss)
    cpdef void reset_dupacks(self)
    cdef void _mark_lost(self, SentSegment r)
    @cython.locals(r=SentSegment)
    cpdef bint mark_head_lost(self)
    @cython.locals(r=SentSegment, rq=list, h=Py_ssize_t, n=Py_ssize_t, k=Py_ssize_t,
                   i=Py_ssize_t, hs=cython.longlong, thresh=cython.int, bthresh=cython.longlong, cnt=cython.int,
                   nbytes=cython.longlong, edge=cython.longlong)
    cpdef void mark_lost_dupthresh(self, long long snd_una, long long mss)
    @cython.locals(r=SentSegment, t=cython.double, limit=cython.double)
    cpdef void detect_lost_retransmits(self, double delivered_xmit, double reordering_window,
                                       long long snd_una)
    @cython.locals(r=SentSegment, rq=list, h=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t,
                   lost_bytes=cython.longlong, retrans_bytes=cython.longlong, pending=cython.longlong,
                   ln=cython.longlong)
    cpdef void mark_lost_on_rto(self, long long snd_una, double sent_before)
    @cython.locals(r=SentSegment, rq=list, h=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t)
    cpdef SentSegment next_lost(self, long long snd_nxt)
    cpdef void on_retransmit(self, SentSegment r, double now, bint watch)
    cdef void _count(self, str name)
