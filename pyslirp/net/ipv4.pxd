# Types for compiling ipv4.py with Cython in pure-Python mode (see tcp.pxd): a parsed header's
# fields become C fields, and parsing and building each datagram run as C functions.

cimport cython
from pyslirp._core.checksum cimport internet_checksum
from pyslirp.net.wire cimport u16


@cython.final
cdef class IPv4Header:
    cdef public int header_length, total_length, identification, flags_fragment, ttl, protocol, tos
    cdef public bytes src, dst


@cython.locals(data=bytes, n=Py_ssize_t, ver_ihl=int, header_length=int, total_length=int, flags_fragment=int,
               header=IPv4Header)
cpdef IPv4Header parse(object packet)
@cython.locals(total_length=int, header=bytearray, checksum=int, i=Py_ssize_t)
cpdef bytes build(bytes src, bytes dst, int protocol, object payload, int identification, int ttl=*, int tos=*,
                  bint dont_fragment=*)
