# tcp_types.py is compiled with Cython in pure-Python mode like the other protocol cores (see
# tcp.pxd): its classes are Python classes (events, configuration); only the ISN's PRF is typed,
# so that SipHash's state is four C words.

cimport cython

ctypedef unsigned long long u64

cdef u64 _MASK64

@cython.locals(k0=u64, k1=u64)
cpdef long long isn_keyed(tuple prf, tuple local, tuple remote, double now) except? -1
@cython.locals(v0=u64, v1=u64, v2=u64, v3=u64, word=u64, length=Py_ssize_t, last=Py_ssize_t,
               offset=Py_ssize_t)
cpdef u64 siphash24(u64 k0, u64 k1, bytes data) except? 0
@cython.locals(word=u64, octet=u64, i=Py_ssize_t)
cdef u64 _little_endian(bytes data, Py_ssize_t offset, Py_ssize_t count) except? 0
@cython.locals(_=int)
cdef (u64, u64, u64, u64) _sip_rounds(u64 v0, u64 v1, u64 v2, u64 v3, int rounds) noexcept
