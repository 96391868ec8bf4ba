"""Reassembly buffers: the TCP out-of-order queue and IPv4 fragment reassembly.

``SegmentQueue`` (RFC 9293 §3.10.7.4 "segment text" processing; RFC 2018 SACK). It holds
octets received beyond RCV.NXT until the gap before them is filled. Sequence numbers are
compared modulo 2^32 relative to the caller's RCV.NXT: a position is "behind" when
``(seq - rcv_nxt) mod 2^32 >= 2^31``. Held data is a short list of disjoint, non-adjacent
blocks kept in sequence order (typically zero to a few blocks: one per hole the peer's
losses made). Rules:

* ``insert`` first forgets anything now behind ``rcv_nxt``, then stores the octets of the
  segment that are at/after ``rcv_nxt``, before a known FIN, and not already held (overlaps
  trimmed on both sides; the first copy received wins). Octets that would push
  ``bytes_held`` past ``max_bytes`` are not stored, lowest sequence numbers kept first, and
  are counted in ``dropped_bytes``.
* A FIN is remembered at ``seq + len(data)`` (the first FIN position learnt wins; held data
  beyond it is discarded and counted in ``beyond_fin_bytes``).
* ``pop(rcv_nxt)`` returns the block starting exactly at ``rcv_nxt`` (merged, so all the
  contiguous data) and whether the FIN immediately follows it. It is idempotent at the FIN:
  the FIN is forgotten only once ``rcv_nxt`` has moved past it.
* ``sack_blocks()``: blocks ordered by the last insert that touched them, most recent first,
  so the first block is the one holding the segment that triggered the ACK (RFC 2018 §4).

``FragmentReassembler`` (RFC 791 §3.2 reassembly, RFC 815). Datagrams are keyed by
(source, destination, protocol, identification). Overlap policy, as Linux since 4.19 and in
the spirit of RFC 5722: an exact duplicate fragment (same offset and length) is ignored and
counted (``duplicates``); any other overlap drops the whole datagram (``overlaps``), because
overlapping fragments are only ever produced by attacks on reassembly (RFC 1858, RFC 3128).
Fragments inconsistent with the datagram's known end (a second, different last fragment, or
data beyond the end) drop it too (``inconsistent``). A fragment that is not the last must
carry a multiple of 8 octets (``bad_fragment``). Datagrams that would exceed 65535 octets are
dropped (``too_big``). Bounds: at most ``max_datagrams`` partial datagrams and ``max_bytes``
payload octets held; to admit a new fragment the oldest partial datagrams are evicted
(``evicted``). ``expire(now)`` drops datagrams whose first fragment arrived ``timeout``
seconds ago or more (``timeouts``). A complete datagram is the offset-0 fragment's header
(options included) with MF and the fragment offset cleared, the total length set and the
header checksum recomputed, followed by the payload.
"""

from libc.stdint cimport uint32_t, uint64_t

from pyslirp._core.checksum cimport ones_sum16

cdef uint32_t _HALF = 0x80000000


cdef inline long long _rel(uint32_t seq, uint32_t base) noexcept:
    # Signed distance seq - base modulo 2^32, in [-2^31, 2^31).
    cdef uint32_t d = seq - base
    if d >= _HALF:
        return <long long>d - 0x100000000
    return d


cdef inline uint32_t _u32(object v, str name) except? 0:
    if v < 0 or v > 0xFFFFFFFF:
        raise ValueError(f"{name} must be a 32-bit sequence number, got {v!r}")
    return <uint32_t>v


cdef class _Block:
    def __cinit__(self, uint32_t seq, bytearray data, uint64_t stamp):
        self.seq = seq
        self.data = data
        self.stamp = stamp


cdef class SegmentQueue:
    """Out-of-order TCP receive queue bounded to ``max_bytes`` octets."""

    def __init__(self, Py_ssize_t max_bytes):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._blocks = []
        self._fin = None
        self.bytes_held = 0
        self._clock = 0

    @property
    def fin_seq(self):
        """Sequence number of the FIN once known, else None."""
        return self._fin

    def __len__(self) -> int:
        return self.bytes_held

    def counters(self) -> dict:
        return {
            "segments": self.segments,
            "dropped_bytes": self.dropped_bytes,
            "beyond_fin_bytes": self.beyond_fin_bytes,
        }

    def clear(self) -> None:
        self._blocks = []
        self._fin = None
        self.bytes_held = 0

    cdef int _trim_behind(self, uint32_t rcv_nxt) except -1:
        cdef _Block b
        cdef long long s, e
        while self._blocks:
            b = self._blocks[0]
            s = _rel(b.seq, rcv_nxt)
            if s >= 0:
                break
            e = s + len(b.data)
            if e <= 0:
                self._blocks.pop(0)
                self.bytes_held -= len(b.data)
            else:
                del b.data[:-s]
                b.seq = rcv_nxt
                self.bytes_held -= -s
                break
        if self._fin is not None and _rel(<uint32_t>self._fin, rcv_nxt) < 0:
            self._fin = None
        return 0

    cdef int _trim_after_fin(self, uint32_t rcv_nxt) except -1:
        cdef _Block b
        cdef long long f = _rel(<uint32_t>self._fin, rcv_nxt)
        cdef long long s, e
        while self._blocks:
            b = self._blocks[-1]
            s = _rel(b.seq, rcv_nxt)
            e = s + len(b.data)
            if e <= f:
                break
            if s >= f:
                self._blocks.pop()
                self.bytes_held -= e - s
                self.beyond_fin_bytes += e - s
            else:
                del b.data[f - s:]
                self.bytes_held -= e - f
                self.beyond_fin_bytes += e - f
        return 0

    def insert(self, seq: int, data, rcv_nxt: int, bint fin=False) -> int:
        """Store the new octets of segment (seq, data[, FIN]); return how many were stored."""
        cdef uint32_t s32 = _u32(seq, "seq")
        cdef uint32_t base = _u32(rcv_nxt, "rcv_nxt")
        cdef const unsigned char[:] mv = data
        cdef Py_ssize_t n = mv.shape[0]
        cdef long long s, s0, e, f, pos, bs, be, take, stored = 0, room
        cdef list blocks, gaps, merged
        cdef _Block b, nb, last
        cdef Py_ssize_t k
        self._trim_behind(base)
        self._clock += 1
        self.segments += 1
        s = s0 = _rel(s32, base)
        e = s + n
        if fin and e >= 0 and self._fin is None:
            self._fin = (s32 + <uint32_t>n) & 0xFFFFFFFF
            self._trim_after_fin(base)
        if self._fin is not None:
            f = _rel(<uint32_t>self._fin, base)
            if e > f:
                self.beyond_fin_bytes += e - (f if f > s else s)
                e = f
        if s < 0:
            s = 0
        if e <= s:
            return 0
        blocks = self._blocks
        gaps = []
        pos = s
        for b in blocks:
            bs = _rel(b.seq, base)
            be = bs + len(b.data)
            if be < s:
                continue
            if bs > e:
                break
            if bs < e and be > s:
                b.stamp = self._clock      # the segment covers part of this block
            if bs > pos:
                gaps.append((pos, bs if bs < e else e))
            if be > pos:
                pos = be
        if pos < e:
            gaps.append((pos, e))
        if not gaps:
            return 0
        # Store the gaps, lowest first, within the byte budget.
        room = self.max_bytes - self.bytes_held
        merged = []
        for bs, be in gaps:
            take = be - bs
            if take > room:
                self.dropped_bytes += take - room
                take = room
            if take > 0:
                merged.append(_Block(<uint32_t>(base + <uint32_t>bs),
                                     bytearray(mv[bs - s0:bs - s0 + take]),
                                     self._clock))
                room -= take
                stored += take
        if not stored:
            return 0
        self.bytes_held += stored
        # Merge the new blocks into the list and coalesce adjacent blocks.
        merged.extend(blocks)
        merged.sort(key=_BlockKey(base))
        blocks = []
        last = None
        for nb in merged:
            if last is not None and _rel(last.seq, base) + len(last.data) == _rel(nb.seq, base):
                last.data += nb.data
                if nb.stamp > last.stamp:
                    last.stamp = nb.stamp
            else:
                blocks.append(nb)
                last = nb
        self._blocks = blocks
        return stored

    def pop(self, rcv_nxt: int) -> tuple:
        """(data, fin): the contiguous octets held from exactly ``rcv_nxt`` (removed from the
        queue; b"" if none) and whether the FIN comes right after them."""
        cdef uint32_t base = _u32(rcv_nxt, "rcv_nxt")
        cdef _Block b
        cdef bytes out = b""
        self._trim_behind(base)
        if self._blocks:
            b = self._blocks[0]
            if b.seq == base:
                self._blocks.pop(0)
                out = bytes(b.data)
                self.bytes_held -= len(out)
        return out, (self._fin is not None
                     and _rel(<uint32_t>self._fin, base) == len(out))

    def sack_blocks(self, int max_blocks=4) -> list:
        """[(left, right), ...] edges of held blocks, most recently touched first (RFC 2018)."""
        cdef list order = sorted(self._blocks, key=_stamp_key, reverse=True)
        cdef _Block b
        return [(b.seq, (b.seq + <uint32_t>len(b.data)) & 0xFFFFFFFF)
                for b in order[:max_blocks if max_blocks > 0 else 0]]

    def blocks(self) -> list:
        """[(seq, length), ...] of held blocks in sequence order (for inspection and tests)."""
        cdef _Block b
        return [(b.seq, len(b.data)) for b in self._blocks]


cdef class _BlockKey:
    cdef uint32_t base

    def __cinit__(self, uint32_t base):
        self.base = base

    def __call__(self, _Block b):
        return _rel(b.seq, self.base)


def _stamp_key(_Block b):
    return b.stamp


# ---------------------------------------------------------------------------------------------
# IPv4 fragments

cdef class _Datagram:
    def __cinit__(self, double created):
        self.created = created
        self.header = None
        self.offsets = []
        self.pieces = []
        self.end = -1
        self.max_end = 0
        self.held = 0


cdef class FragmentReassembler:
    """IPv4 fragment reassembly bounded by ``max_bytes`` held payload octets and
    ``max_datagrams`` partial datagrams; partial datagrams expire after ``timeout`` seconds."""

    def __init__(self, Py_ssize_t max_bytes, double timeout, Py_ssize_t max_datagrams=64):
        if max_bytes < 0 or max_datagrams < 1 or not timeout > 0:
            raise ValueError("need max_bytes >= 0, max_datagrams >= 1 and timeout > 0")
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self._dgrams = {}
        self.bytes_held = 0

    @property
    def in_flight(self) -> int:
        """Number of partial datagrams held."""
        return len(self._dgrams)

    def counters(self) -> dict:
        return {
            "fragments": self.fragments,
            "reassembled": self.reassembled,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "bad_fragment": self.bad_fragment,
            "inconsistent": self.inconsistent,
            "too_big": self.too_big,
            "timeouts": self.timeouts,
            "evicted": self.evicted,
        }

    def next_deadline(self):
        """Time at which the oldest partial datagram expires, or None."""
        cdef _Datagram d
        cdef double best = 0
        cdef bint found = False
        for d in self._dgrams.values():
            if not found or d.created < best:
                best = d.created
                found = True
        return best + self.timeout if found else None

    cdef int _drop(self, object key) except -1:
        cdef _Datagram d = self._dgrams.pop(key)
        self.bytes_held -= d.held
        return 0

    def expire(self, double now) -> int:
        """Drop partial datagrams whose first fragment came ``timeout`` seconds ago or more."""
        cdef _Datagram d
        cdef list dead = [k for k, d in self._dgrams.items() if now - d.created >= self.timeout]
        for k in dead:
            self._drop(k)
        self.timeouts += len(dead)
        return len(dead)

    def clear(self) -> None:
        self._dgrams.clear()
        self.bytes_held = 0

    def add(self, header, payload, double now):
        """Add one fragment: ``header`` is its IPv4 header (options included; anything after
        IHL*4 octets is ignored), ``payload`` its data. Returns the whole datagram once
        complete, else None. A datagram that is not fragmented is returned as is."""
        cdef const unsigned char[:] h = header
        cdef Py_ssize_t hlen = h.shape[0]
        cdef Py_ssize_t ihl, off, n, end, idx, total
        cdef unsigned int fo
        cdef bint mf
        cdef _Datagram d
        cdef object key
        cdef bytearray out
        cdef unsigned int csum
        if hlen < 20 or (h[0] >> 4) != 4 or (h[0] & 0x0F) < 5 or (h[0] & 0x0F) * 4 > hlen:
            self.bad_fragment += 1
            return None
        ihl = (h[0] & 0x0F) * 4
        fo = (h[6] << 8) | h[7]
        mf = (fo & 0x2000) != 0
        off = (fo & 0x1FFF) * 8
        payload = bytes(payload)
        n = len(payload)
        if not mf and off == 0:
            return bytes(h[:ihl]) + payload
        self.fragments += 1
        end = off + n
        if mf and (n == 0 or n % 8):
            self.bad_fragment += 1
            return None
        key = (bytes(h[12:20]), h[9], (h[4] << 8) | h[5])
        if end > 0xFFFF - 20:
            self.too_big += 1
            if key in self._dgrams:
                self._drop(key)
            return None
        d = self._dgrams.get(key)
        if d is not None and now - d.created >= self.timeout:
            self._drop(key)
            self.timeouts += 1
            d = None
        if d is not None:
            # Consistency with the end of the datagram (RFC 791: the last fragment fixes it).
            if (not mf and ((d.end >= 0 and d.end != end) or end < d.max_end)) or \
                    (mf and d.end >= 0 and end > d.end):
                self._drop(key)
                self.inconsistent += 1
                return None
            idx = _bisect_right(d.offsets, off)
            if idx > 0 and d.offsets[idx - 1] == off and len(<bytes>d.pieces[idx - 1]) == n:
                self.duplicates += 1
                return None
            if (idx > 0 and <Py_ssize_t>d.offsets[idx - 1] + len(<bytes>d.pieces[idx - 1]) > off) or \
                    (idx < len(d.offsets) and <Py_ssize_t>d.offsets[idx] < end):
                self._drop(key)
                self.overlaps += 1
                return None
        else:
            idx = 0
        # Make room: evict the oldest partial datagrams (never the one this fragment joins).
        while self.bytes_held + n > self.max_bytes or \
                (d is None and len(self._dgrams) >= self.max_datagrams):
            victim = None
            for k in self._dgrams:
                if k != key:
                    victim = k
                    break
            if victim is None:
                break
            self._drop(victim)
            self.evicted += 1
        if self.bytes_held + n > self.max_bytes:
            # Does not fit even alone: drop this datagram.
            if key in self._dgrams:
                self._drop(key)
            self.evicted += 1
            return None
        if d is None:
            d = _Datagram(now)
            self._dgrams[key] = d
        d.offsets.insert(idx, off)
        d.pieces.insert(idx, payload)
        d.held += n
        self.bytes_held += n
        if end > d.max_end:
            d.max_end = end
        if not mf:
            d.end = end
        if off == 0:
            d.header = bytes(h[:ihl])
        if d.end < 0 or d.held != d.end:
            return None
        # Complete: no overlaps and held == end means [0, end) is covered.
        self._drop(key)
        total = len(d.header) + d.end
        if total > 0xFFFF:
            self.too_big += 1
            return None
        out = bytearray(d.header)
        out[2] = total >> 8
        out[3] = total & 0xFF
        out[6] &= 0xC0          # keep the reserved and DF flags, clear MF and the offset
        out[7] = 0
        out[10] = 0
        out[11] = 0
        csum = (~ones_sum16(<const unsigned char *><char *>out, len(out), 0)) & 0xFFFF
        out[10] = csum >> 8
        out[11] = csum & 0xFF
        out += b"".join(d.pieces)
        self.reassembled += 1
        return bytes(out)


cdef Py_ssize_t _bisect_right(list a, Py_ssize_t x) except -1:
    cdef Py_ssize_t lo = 0, hi = len(a), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < <Py_ssize_t>a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo
