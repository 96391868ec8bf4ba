# C-level interface of pyslirp._core.checksum, for cimport by the other core modules.
from libc.stdint cimport uint16_t, uint64_t

# Ones' complement sum of data (RFC 1071) as 16-bit big-endian words, folded to 16 bits,
# plus the partial sum ``initial``; not complemented.
cdef uint16_t ones_sum16(const unsigned char *p, Py_ssize_t n, uint64_t initial) noexcept nogil

# The checksum of a buffer and the pseudo-header sum, as C calls from the compiled protocol cores
# (their docstrings are in checksum.pyx).
cpdef long internet_checksum(object data, object initial=*) except -1
cpdef long long pseudo_header_sum(object src, object dst, int proto, long long length) except -1
