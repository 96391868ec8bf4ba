# Types for compiling ipv4.py with Cython in pure-Python mode (see tcp.pxd): a parsed header's
# fields become C fields, and parsing and building each datagram run as C functions.

cimport cython


@cython.final
cdef class IPv4Header:
    cdef public int header_length, total_length, identification, flags_fragment, ttl, protocol, tos
    cdef public bytes src, dst


cpdef IPv4Header parse(object packet)
cpdef bytes build(bytes src, bytes dst, int protocol, object payload, int identification, int ttl=*, int tos=*,
                  bint dont_fragment=*)
