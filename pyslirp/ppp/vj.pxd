# Types for compiling vj.py with Cython in pure-Python mode (see tcp.pxd). The module's private
# constants become C constants; the slots and both directions' state become C fields.

cimport cython
from pyslirp._core.checksum cimport internet_checksum
from pyslirp.net.wire cimport put16, put32, u16, u32

cdef int _IPPROTO_TCP
cdef long long _MASK32
cdef int NEW_C, NEW_I, PUSH_BIT, NEW_S, NEW_A, NEW_W, NEW_U, SPECIALS_MASK, SPECIAL_I, SPECIAL_D
cdef int _FIN, _SYN, _RST, _PSH, _ACK, _URG, _FLAGS_FIXED
cdef list _SLOT_BYTE
cdef bytes _PROTO_TCP_BYTE

cdef void _encode(bytearray out, long n)
cdef tuple _decode(bytes p, Py_ssize_t pos)


cdef class _TxSlot:
    cdef public int slot, vihl, tos, frag, ttl, offb, flags, tot_len, id, win, urp, hlen
    cdef public bytes ipopt, tcpopt
    cdef public long long seq, ack


@cython.final
cdef class VJCompressor:
    cdef public int max_slot_id
    cdef public bint compress_slot_id
    cdef dict _lru
    cdef int _last_slot
    cdef dict _c

    cdef tuple _pass_ip(self, object packet, str reason)
    @cython.locals(data=bytes, n=Py_ssize_t, vihl=int, tos=int, tot_len=int, ip_id=int, frag=int, ttl=int,
                   ihl4=int, seq=cython.longlong, ack=cython.longlong, offb=int, flags=int, win=int, urp=int,
                   hlen=int, cs=_TxSlot)
    cpdef tuple compress(self, object packet)
    @cython.locals(changes=int, d=long, delta_a=cython.longlong, delta_s=cython.longlong, last_data=int,
                   slot=int, out=bytearray)
    cdef object _compress_tcp(self, bytes packet, _TxSlot cs, int hlen, int tot_len, int ip_id,
                              long long seq, long long ack, int flags, int win, int urp, int ihl4)


cdef class _RxSlot:
    cdef public bytearray hdr
    cdef public int ihl4, hlen, tot_len, id, offb, flags, win, urp
    cdef public long long seq, ack


@cython.final
cdef class VJDecompressor:
    cdef public int max_slot_id
    cdef public bint compress_slot_id
    cdef list _slots
    cdef int _current
    cdef bint _toss
    cdef dict _c

    @cython.locals(data=bytes)
    cpdef object decompress(self, int protocol, object payload)
    @cython.locals(n=Py_ssize_t, vihl=int, ihl4=int, offb=int, hlen=int, tot_len=int, slot=int, rs=_RxSlot,
                   hdr=bytearray, out=bytes)
    cdef object _uncompressed(self, bytes p)
    @cython.locals(n=Py_ssize_t, changes=int, slot=int, rs=_RxSlot, pos=Py_ssize_t, tcp_sum=int,
                   seq=cython.longlong, ack=cython.longlong, win=int, urp=int, flags=int, special=int, d=long,
                   ip_id=int, hlen=int, tot_len=int, ihl4=int, hdr=bytearray)
    cdef object _compressed(self, bytes p)
    cdef object _error(self, str reason)
