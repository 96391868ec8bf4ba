# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PPP in HDLC-like framing, octet-stuffed (RFC 1662 §4): frame encoder and streaming deframer.

Encoding (RFC 1662 §4.1, §4.2): opening Flag 0x7E, the frame and its complemented FCS-16
(least significant octet first), each octet that is 0x7D, 0x7E or a control character
(< 0x20) flagged in the transmit ACCM sent as Control Escape 0x7D followed by the octet
XOR 0x20, and a closing Flag. The FCS is computed first (slicing-by-16), then one branch-free
stuffing pass through a per-ACCM table (cached for the last ACCM used) writes into a buffer
of the worst-case size 2*n + 6.

Deframing (RFC 1662 §4.2, §4.3): on reception, control characters flagged in the receive ACCM
are deleted wherever they appear (they may have been inserted by DCEs, §7.1), Control Escape is
removed and the next octet XOR 0x20, and a Flag ends the frame. Frames are checked at the Flag:

* Control Escape followed by Flag -> ``aborted``
* nothing between two Flags -> ignored (inter-frame time fill, not an error)
* fewer than 4 octets (content < 2 + FCS) -> ``too_short``
* FCS register != 0xF0B8 -> ``bad_fcs``
* otherwise the frame, FCS removed, is returned -> ``frames_ok``

A frame that grows past ``max_frame`` octets (unstuffed, FCS included) is no longer buffered:
the rest up to the next Flag is discarded and counted once as ``too_long``, so memory is
``max_frame`` bytes whatever arrives. Octets before the first Flag ever seen are discarded
(``hunt_bytes``): the line may have been opened in the middle of a frame, and every sender
opens a frame with a Flag after idle.

The receive loop has no Python objects and one branch per octet, taken only for the rare
octets (Flag, control characters deleted per the ACCM); whether an octet is stored and what
an escape does to the next octet are values from a 256-entry class table, not branches.
The FCS of a frame is checked once at its closing Flag (slicing-by-16). Octets between
frames (hunting, or discarding a too-long frame) are skipped with memchr.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

from pyslirp._core.fcs cimport fcs16_update, PPPINITFCS16, PPPGOODFCS16

DEFAULT_MAX_FRAME = 4096

cdef enum:
    _FLAG = 0x7E
    _ESC = 0x7D
    _IN_FRAME = 0
    _HUNT = 1
    _TOSS = 2
    # Receive octet classes (Deframer._cls); _RX_ESCAPE is the XOR the next octet gets.
    _RX_STORE = 0x01
    _RX_ESCAPE = 0x20
    _RX_SPECIAL = 0x80


cdef inline uint32_t _check_accm(long long accm) except? 0:
    if accm < 0 or accm > 0xFFFFFFFF:
        raise ValueError(f"accm must be a 32-bit map, got {accm!r}")
    return <uint32_t>accm


cdef inline int _check_fcs_bits(int fcs_bits) except -1:
    if fcs_bits != 16:
        raise ValueError(f"fcs_bits={fcs_bits} is not supported: only the 16-bit FCS is implemented")
    return 0


# ---------------------------------------------------------------------------------------------
# Encoder

# Stuffing table for the most recently used transmit ACCM (rebuilt only when the ACCM changes):
# _tx_pair[c] holds, in memory order, the one or two octets that represent c on the line, and
# _tx_len[c] how many of them count. The loop stores both octets and advances by the length,
# so it has no data-dependent branch.
cdef uint16_t _tx_pair[256]
cdef uint8_t _tx_len[256]
cdef uint32_t _tx_accm = 0
cdef bint _tx_valid = False

# Reusable output buffer for frames up to _SCRATCH_SIZE stuffed octets.
cdef enum:
    _SCRATCH_SIZE = 2 * 8192 + 6
cdef uint8_t _scratch[_SCRATCH_SIZE + 1]


cdef void _build_tx_table(uint32_t accm) noexcept:
    global _tx_accm, _tx_valid
    cdef int c
    cdef uint8_t pair[2]
    for c in range(256):
        if (c < 0x20 and (accm >> c) & 1) or c == _ESC or c == _FLAG:
            pair[0] = _ESC
            pair[1] = c ^ 0x20
            _tx_len[c] = 2
        else:
            pair[0] = c
            pair[1] = 0
            _tx_len[c] = 1
        memcpy(&_tx_pair[c], pair, 2)
    _tx_accm = accm
    _tx_valid = True


cdef inline Py_ssize_t _stuff(uint8_t *d, Py_ssize_t j, const uint8_t *s, Py_ssize_t n) noexcept nogil:
    # d must have room for 2 * n + 1 octets from j (the last store may write one spare octet).
    cdef Py_ssize_t i
    cdef uint8_t c
    for i in range(n):
        c = s[i]
        memcpy(d + j, &_tx_pair[c], 2)
        j += _tx_len[c]
    return j


def encode_frame(frame, long long accm=0xFFFFFFFF, int fcs_bits=16) -> bytes:
    """Flag + stuffed(frame + FCS) + Flag, ready for the line. ``frame`` is any contiguous
    buffer holding address/control (unless compressed), protocol and information."""
    cdef uint32_t a = _check_accm(accm)
    if fcs_bits != 16:
        _check_fcs_bits(fcs_bits)
    cdef Py_buffer view
    cdef const uint8_t *src
    cdef Py_ssize_t n, j
    cdef uint8_t *out
    cdef uint16_t fcs
    cdef uint8_t tail[2]
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        # From here on no Python code runs until the bytes object is made, so the shared
        # table and scratch buffer cannot change under us (the GIL is held throughout).
        if not _tx_valid or a != _tx_accm:
            _build_tx_table(a)
        src = <const uint8_t *>view.buf
        n = view.len
        if 2 * n + 6 <= _SCRATCH_SIZE:
            out = _scratch
        else:
            out = <uint8_t *>PyMem_Malloc(2 * n + 7)
            if out == NULL:
                raise MemoryError()
        try:
            fcs = ~fcs16_update(PPPINITFCS16, src, n)
            tail[0] = fcs & 0xFF
            tail[1] = fcs >> 8
            out[0] = _FLAG
            j = _stuff(out, 1, src, n)
            j = _stuff(out, j, tail, 2)
            out[j] = _FLAG
            return PyBytes_FromStringAndSize(<char *>out, j + 1)
        finally:
            if out != _scratch:
                PyMem_Free(out)
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# Deframer

cdef class Deframer:
    """Streaming RFC 1662 deframer: ``feed(data)`` takes octets as they arrive, split anywhere,
    and returns the good frames completed by them (FCS removed)."""

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL

    def __init__(self, long long accm=0xFFFFFFFF, int fcs_bits=16, Py_ssize_t max_frame=DEFAULT_MAX_FRAME):
        _check_fcs_bits(fcs_bits)
        if max_frame < 4 or max_frame > (1 << 24):
            raise ValueError(f"max_frame must be 4..16777216 octets (FCS included), got {max_frame}")
        self._accm = _check_accm(accm)
        if self._buf != NULL:
            PyMem_Free(self._buf)
        # One spare octet: the loop stores before it checks the length.
        self._buf = <uint8_t *>PyMem_Malloc(max_frame + 1)
        if self._buf == NULL:
            raise MemoryError()
        self._max_frame = max_frame
        self._len = 0
        self._mode = _HUNT
        self._xor = 0
        self._build_tables()

    def __dealloc__(self):
        PyMem_Free(self._buf)

    cdef void _build_tables(self) noexcept:
        cdef int c
        for c in range(256):
            if c == _FLAG or (c < 0x20 and (self._accm >> c) & 1):
                self._cls[c] = _RX_SPECIAL
            elif c == _ESC:
                self._cls[c] = _RX_ESCAPE
            else:
                self._cls[c] = _RX_STORE

    @property
    def accm(self) -> int:
        return self._accm

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def fcs_bits(self) -> int:
        return 16

    def set_accm(self, long long accm) -> None:
        """Change the receive ACCM (after LCP negotiation); takes effect from the next octet."""
        self._accm = _check_accm(accm)
        self._build_tables()

    def counters(self) -> dict:
        return {
            "frames_ok": self.frames_ok,
            "bad_fcs": self.bad_fcs,
            "too_short": self.too_short,
            "too_long": self.too_long,
            "aborted": self.aborted,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "hunt_bytes": self.hunt_bytes,
            "ctrl_ignored": self.ctrl_ignored,
        }

    def reset(self) -> None:
        """Forget the partial frame and hunt for the next Flag (e.g. after the line reopens)."""
        self._len = 0
        self._mode = _HUNT
        self._xor = 0

    cdef int _end_frame(self, list out) except -1:
        # A Flag closes the frame held in _buf (RFC 1662 §4.3).
        cdef Py_ssize_t n = self._len
        if self._xor:
            self.aborted += 1
        elif n == 0:
            pass
        elif n < 4:
            self.too_short += 1
        elif fcs16_update(PPPINITFCS16, self._buf, n) != PPPGOODFCS16:
            self.bad_fcs += 1
        else:
            self.frames_ok += 1
            self.bytes_out += n - 2
            out.append(PyBytes_FromStringAndSize(<char *>self._buf, n - 2))
        self._len = 0
        self._xor = 0
        return 0

    def feed(self, data) -> list:
        """Process received octets; return the list of good frames they completed."""
        cdef list out = []
        cdef Py_buffer view
        cdef const uint8_t *src
        cdef const uint8_t *p
        cdef Py_ssize_t n, i, stop, room, j
        cdef uint8_t c, x, t
        cdef uint8_t *buf
        cdef const uint8_t *cls
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            # Read the state only now: acquiring the buffer may have run Python code.
            buf = self._buf
            cls = self._cls
            src = <const uint8_t *>view.buf
            n = view.len
            self.bytes_in += n
            i = 0
            while i < n:
                if self._mode != _IN_FRAME:
                    # Hunting for a Flag: memchr over whatever precedes it.
                    p = <const uint8_t *>memchr(src + i, _FLAG, n - i)
                    if p == NULL:
                        if self._mode == _HUNT:
                            self.hunt_bytes += n - i
                        break
                    if self._mode == _HUNT:
                        self.hunt_bytes += p - (src + i)
                    else:
                        self.too_long += 1
                    i = (p - src) + 1
                    self._mode = _IN_FRAME
                    self._len = 0
                    self._xor = 0
                    continue
                j = self._len
                room = self._max_frame - j
                if room == 0:
                    # Full: one more stored octet makes the frame too long.
                    c = src[i]
                    t = self._cls[c]
                    if c == _FLAG:
                        self._end_frame(out)
                    elif t & _RX_SPECIAL:
                        self.ctrl_ignored += 1
                    elif t & _RX_STORE:
                        self._mode = _TOSS
                        self._len = 0
                        self._xor = 0
                    else:
                        self._xor = _RX_ESCAPE
                    i += 1
                    continue
                # The next `room` input octets can store at most `room` octets: no length check
                # inside the loop. The common path is branch-free but for the (rare, well
                # predicted) special octets; an escape's effect on the next octet is a table value.
                stop = n if n - i <= room else i + room
                x = self._xor
                while i < stop:
                    c = src[i]
                    t = cls[c]
                    if t & _RX_SPECIAL:
                        if c == _FLAG:
                            break
                        self.ctrl_ignored += 1      # RFC 1662 §7.1: deleted, escape still pending
                        i += 1
                        continue
                    buf[j] = c ^ x
                    j += t & _RX_STORE
                    x = t & _RX_ESCAPE
                    i += 1
                self._len = j
                self._xor = x
                if i < stop:
                    # Stopped on a Flag.
                    self._end_frame(out)
                    i += 1
        finally:
            PyBuffer_Release(&view)
        return out
