# Types for compiling stack.py with Cython in pure-Python mode (see tcp.pxd): the stack's state
# becomes C fields, and its demultiplexing and collecting call the connections' methods in C.

cimport cython
from pyslirp.net cimport ipv4
from pyslirp.net.ipv4 cimport IPv4Header
from pyslirp.net.tcp_segment cimport parse_segment
from pyslirp.net.line_budget cimport LineBudget
from pyslirp.net.tcp cimport TCPConnection


cdef tuple _key(TCPConnection conn)


@cython.final
cdef class ConnectionRequest:
    cdef readonly TCPConnection conn
    cdef readonly bytes address
    cdef readonly long long port


@cython.final
cdef class ConnectionEvent:
    cdef readonly TCPConnection conn
    cdef readonly object event


@cython.final
cdef class Stack:
    cdef public bytes local, peer
    cdef public int mtu, max_connections
    cdef public object tcp_config, udp_ports, wake, counters, tcp_counters, reassembly
    cdef public LineBudget budget
    cdef public tuple allowed_sources
    cdef public bint udp_outbound
    cdef public object _fragments, _ephemeral
    cdef public long long _timer_seq
    cdef public list _output, _events, _timers
    cdef public int _ident
    cdef public bytes _isn_secret
    cdef public object _isn_prf, _on_change
    cdef public dict connections, _dirty, _scheduled
    cdef public double _now, _icmp_tokens, _icmp_updated

    cpdef void receive(self, object packet, double now)
    cpdef list events(self)
    cpdef list take_output(self)
    cpdef object next_deadline(self)
    @cython.locals(conn=TCPConnection)
    cdef void _tcp(self, IPv4Header header, object packet, object payload, double now)
    @cython.locals(conn=TCPConnection)
    cdef void _collect(self)
    cdef void _forget(self, tuple key, TCPConnection conn)
    cpdef void _emit_datagram(self, bytes dst, int protocol, object payload, bint interactive, object source)
    cdef void _schedule(self, TCPConnection conn)
