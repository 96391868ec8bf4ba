# Types for compiling tcp.py with Cython in pure-Python mode (DESIGN.md "Speed"): tcp.py stays
# the source and runs as it is where the extension is not built; setup.py compiles it with these
# declarations. Attributes are C fields (public: tests and the stack read them), the per-segment
# methods are C functions. Unwrapped sequence numbers fit in 64 bits for 2^31 times 4 GiB sent.

cimport cython
from pyslirp.net.line_budget cimport LineBudget
from pyslirp.net.tcp_segment cimport TCPSegment


cdef class _Sent:
    cdef public long long seq, end
    cdef public int fin, rtx
    cdef public double xmit
    cdef public bint sacked, lost, retrans


@cython.final
cdef class TCPConnection:
    cdef public object local_addr, remote_addr, config, state
    cdef public LineBudget budget
    cdef public int local_port, remote_port
    cdef public bint interactive, nodelay
    cdef public long long _budget_charged
    cdef public object on_change
    cdef public object _ctr
    cdef public list _events, _out
    cdef public long long _ph
    # send sequence space
    cdef public long long iss, snd_una, snd_nxt, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd, snd_wscale
    cdef public bytearray _snd_buf
    cdef public long long _buf_seq, _fin_seq
    cdef public bint _fin_queued, _fin_sent, _snd_blocked
    # receive sequence space
    cdef public long long irs, rcv_nxt, rcv_adv, rcv_wscale, _rcv_cap, _sws
    cdef public bytearray _rcv_buf
    cdef public object _ooo
    cdef public bint _ooo_used, _fin_rcvd, _ack_now, _app_closed
    cdef public long long _rcv_mss, _rcv_unacked, _last_ack_sent
    # options
    cdef public object _syn
    cdef public int _ws_offer
    cdef public bint _ws_ok, _sack_ok, _ts_ok
    cdef public long long _mss_cap, eff_mss, _ts_recent, _ts_offset
    cdef public double _ts_recent_age
    # RTT and timers (None: not measured / not armed)
    cdef public object srtt, _min_rtt, _rto_at, _persist_at, _delack_at, _tw_at
    cdef public double rttvar, _rto_base, _syn_xmit, _last_xmit
    cdef public int _backoff, _retries, _syn_rtx, _persist_backoff, _probes
    cdef public bint _in_persist
    # congestion control
    cdef public long long cwnd, ssthresh, _recover, _ca_acc, _reno_sacked
    cdef public int _ca_state, _dupacks
    cdef public bint _cwnd_limited, _force_rtx
    # scoreboard
    cdef public list _rq
    cdef public Py_ssize_t _rq_head
    cdef public long long _sacked_bytes, _lost_bytes, _retrans_bytes, _lost_pending
    cdef public long long _rtx_hint, _mark_hint, _high_sacked
    cdef public object _rtx_fifo
    # rate limits
    cdef public double _chal_t, _oow_t
    cdef public int _chal_n

    # what the stack calls per segment
    cpdef void receive_segment(self, TCPSegment seg, double now)
    cpdef list take_segments(self)
    cpdef list events(self)
    cpdef object next_deadline(self)
    cpdef void handle_timer(self, double now)
    cpdef void resume(self, double now)
    cdef void _changed(self)

    # the per-segment path
    cdef void _rx_synchronized(self, TCPSegment seg, double now)
    @cython.locals(r=_Sent, h=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t)
    cdef void _sender_ack(self, long long ack, TCPSegment seg, double now, bint is_dup)
    cdef void _enter_recovery(self, long long flight_before)
    @cython.locals(r=_Sent, h=Py_ssize_t)
    cdef bint _mark_head_lost(self)
    @cython.locals(r=_Sent, h=Py_ssize_t, n=Py_ssize_t, k=Py_ssize_t, i=Py_ssize_t)
    cdef void _mark_lost_dupthresh(self)
    @cython.locals(r=_Sent)
    cdef void _detect_lost_retransmits(self, double delivered_xmit)
    cpdef double _cur_rto(self)
    cdef void _rtt_sample(self, double r)
    cdef long long _ts_now(self, double now)
    cdef long long _in_flight(self)
    cdef void _output(self, double now)
    cdef void _transmit(self, double now)
    @cython.locals(r=_Sent, h=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t)
    cdef _Sent _next_lost(self)
    cdef object _payload(self, _Sent r)
    cdef void _retransmit(self, _Sent r, double now)
    @cython.locals(r=_Sent)
    cdef void _send_new(self, long long n, int fin, double now)
    cdef long long _window_field(self)
    cdef bint _low_delay(self, long long payload_len)
    cdef void _xmit(self, int flags, long long seq, object payload, double now, bytes opts=*)
    cpdef void _count(self, str name, long long n=*)
