# Types for compiling tcp.py with Cython in pure-Python mode (docs/ARCHITECTURE.md, "Compiled
# protocol cores"): tcp.py stays the source and runs as it is where the extension is not built;
# setup.py compiles it with these declarations. Attributes are C fields (public: tests and the
# stack read them), the parts the connection composes are typed as their classes (so calls into
# them are C calls), and the per-segment methods are C functions. Unwrapped sequence numbers fit
# in 64 bits for 2^31 times 4 GiB sent.

cimport cython
from pyslirp.net.line_budget cimport LineBudget
from pyslirp.net.tcp_congestion cimport CongestionControl
from pyslirp.net.tcp_options cimport NegotiatedOptions
from pyslirp.net.tcp_receive cimport Receiver
from pyslirp.net.tcp_rtt cimport RTTEstimator
from pyslirp.net.tcp_scoreboard cimport Scoreboard, SentSegment
from pyslirp.net.tcp_segment cimport TCPSegment, encode_segment
from pyslirp.net.tcp_send cimport Sender

# Module constants as C values: flags and sequence-space masks are C integers, the states C
# globals (compared by identity), rather than module-dict lookups and Python arithmetic.
cdef long long ACK, FIN, PSH, RST, SYN, URG, PROTO_TCP, MASK, HALF
cdef object CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, LISTEN
cdef object SYN_RECEIVED, SYN_SENT, TIME_WAIT

cdef inline object _earlier(object a, object b)


@cython.final
cdef class TCPConnection:
    cdef public object local_addr, remote_addr, config, state
    cdef public LineBudget budget
    cdef public int local_port, remote_port
    cdef public bint interactive, nodelay
    cdef public long long _budget_charged
    cdef public object on_change, _ctr
    cdef public list _events, _out
    cdef public long long _ph, iss
    # the parts
    cdef public NegotiatedOptions options
    cdef public Receiver receiver
    cdef public RTTEstimator rtt
    cdef public CongestionControl congestion
    cdef public Scoreboard scoreboard
    cdef public Sender sender
    cdef public object _syn
    cdef public bint _app_closed
    # timers (None: not armed)
    cdef public object _rto_at, _persist_at, _tw_at
    cdef public double _syn_xmit, _last_xmit
    cdef public int _retries, _syn_rtx, _persist_backoff, _probes
    cdef public bint _in_persist

    # what the stack calls per segment
    cpdef void receive_segment(self, TCPSegment seg, double now)
    cpdef list take_segments(self)
    cpdef list events(self)
    cpdef object next_deadline(self)
    cpdef void handle_timer(self, double now)
    cpdef void resume(self, double now)
    cdef void _changed(self)

    # the per-segment path
    @cython.locals(rcv=Receiver, snd=Sender, opts=NegotiatedOptions, flags=cython.longlong,
                   rcv_nxt=cython.longlong, seq=cython.longlong, plen=Py_ssize_t, fin=cython.longlong,
                   seglen=cython.longlong, snd_una=cython.longlong, ack=cython.longlong, wnd=cython.longlong,
                   is_dup=cython.bint, delivered=cython.longlong)
    cdef void _rx_synchronized(self, TCPSegment seg, double now)
    @cython.locals(snd=Sender, acked=cython.longlong, bulk_acked=cython.bint, charged=cython.longlong,
                   released=cython.longlong, space=cython.longlong, outstanding=cython.bint)
    cdef void _take_ack(self, long long ack, TCPSegment seg, double now, bint is_dup)
    cdef void _output(self, double now)
    @cython.locals(snd=Sender, cc=CongestionControl, sb=Scoreboard, r=SentSegment,
                   cwnd=cython.longlong, mss=cython.longlong, seg=cython.longlong, unsent=cython.longlong,
                   wnd_end=cython.longlong, n=cython.longlong, win=cython.longlong, limited=cython.bint,
                   wblocked=cython.bint, held=cython.bint, last=cython.bint)
    cdef void _transmit(self, double now)
    @cython.locals(sack_ok=cython.bint)
    cdef void _retransmit(self, SentSegment r, double now)
    @cython.locals(snd=Sender, seq=cython.longlong, flags=cython.int)
    cdef void _send_new(self, long long n, int fin, double now)
    cdef bint _low_delay(self, long long payload_len)
    @cython.locals(n=Py_ssize_t, rcv=Receiver, options=NegotiatedOptions, sack_sent=cython.bint,
                   wnd=cython.longlong, room=cython.longlong, ack=cython.longlong)
    cdef void _xmit(self, int flags, long long seq, object payload, double now, bytes opts=*)
    cpdef void _count(self, str name, long long n=*)

    # opening, closing and the timers: once or twice per connection, but every short connection
    # pays each (C calls, not method lookups)
    cpdef void _open(self, object state, double now)
    cpdef TCPSegment _leave_listen(self, str call)
    cpdef void _queue_fin(self, double now)
    cpdef void _rx_syn_sent(self, TCPSegment seg, double now)
    cpdef void _on_rto(self, double now)
    cpdef void _on_persist(self, double now)
    cpdef void _leave_persist(self, double now)
    cpdef void _enter_time_wait(self, double now)
    cpdef void _abort_with_reset(self, str reason, long long ack)
    cpdef void _enter_closed(self)
    cpdef void _establish(self, double now)
    cpdef void _learn_syn(self, TCPSegment syn, double now)
    cpdef void _send_syn(self, double now)
    cpdef void _send_ctl(self, long long seq32, long long ack32, int flags)
