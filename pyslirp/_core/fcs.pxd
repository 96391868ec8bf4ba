# C-level interface of pyslirp._core.fcs, for cimport by the other core modules (hdlc).
from libc.stdint cimport uint16_t

# RFC 1662 Appendix C constants.
cdef enum:
    PPPINITFCS16 = 0xFFFF   # initial FCS value
    PPPGOODFCS16 = 0xF0B8   # FCS register after a whole good frame (content + its FCS)

# Running FCS-16 over n bytes at p, starting from register value fcs.
cdef uint16_t fcs16_update(uint16_t fcs, const unsigned char *p, Py_ssize_t n) noexcept nogil
