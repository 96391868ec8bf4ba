# Types for compiling wire.py with Cython in pure-Python mode (see tcp.pxd): the protocol cores
# cimport these, so reading or writing a field is a C call on the bytes' own buffer.

cimport cython

cpdef long u16(bytes data, Py_ssize_t offset) except -1
@cython.locals(high=cython.longlong)
cpdef long long u32(bytes data, Py_ssize_t offset) except -1
cpdef void put16(bytearray buf, Py_ssize_t offset, long long value) except *
cpdef void put32(bytearray buf, Py_ssize_t offset, long long value) except *
