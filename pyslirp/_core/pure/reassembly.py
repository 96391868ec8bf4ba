"""Plain twins of pyslirp._core.reassembly; see that module for the rules they follow."""

from __future__ import annotations

from .checksum import internet_checksum

MOD = 1 << 32


def _rel(seq: int, base: int) -> int:
    """Signed distance seq - base modulo 2^32, in [-2^31, 2^31)."""
    d = (seq - base) % MOD
    return d - MOD if d >= 1 << 31 else d


def _u32(v: int, name: str) -> int:
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be a 32-bit sequence number, got {v!r}")
    return v


class _Block:
    __slots__ = ("seq", "data", "stamp")

    def __init__(self, seq: int, data: bytearray, stamp: int) -> None:
        self.seq = seq
        self.data = data
        self.stamp = stamp


class SegmentQueue:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._blocks: list[_Block] = []
        self._fin: int | None = None
        self.bytes_held = 0
        self.dropped_bytes = 0
        self.beyond_fin_bytes = 0
        self.segments = 0
        self._clock = 0

    @property
    def fin_seq(self) -> int | None:
        return self._fin

    def __len__(self) -> int:
        return self.bytes_held

    def counters(self) -> dict[str, int]:
        return {
            "segments": self.segments,
            "dropped_bytes": self.dropped_bytes,
            "beyond_fin_bytes": self.beyond_fin_bytes,
        }

    def clear(self) -> None:
        self._blocks = []
        self._fin = None
        self.bytes_held = 0

    def _trim_behind(self, rcv_nxt: int) -> None:
        while self._blocks:
            b = self._blocks[0]
            s = _rel(b.seq, rcv_nxt)
            if s >= 0:
                break
            if s + len(b.data) <= 0:
                self._blocks.pop(0)
                self.bytes_held -= len(b.data)
            else:
                del b.data[: -s]
                b.seq = rcv_nxt
                self.bytes_held += s
                break
        if self._fin is not None and _rel(self._fin, rcv_nxt) < 0:
            self._fin = None

    def _trim_after_fin(self, rcv_nxt: int) -> None:
        assert self._fin is not None
        f = _rel(self._fin, rcv_nxt)
        while self._blocks:
            b = self._blocks[-1]
            s = _rel(b.seq, rcv_nxt)
            e = s + len(b.data)
            if e <= f:
                break
            cut = e - max(s, f)
            if s >= f:
                self._blocks.pop()
            else:
                del b.data[f - s :]
            self.bytes_held -= cut
            self.beyond_fin_bytes += cut

    def insert(self, seq: int, data: bytes | bytearray | memoryview, rcv_nxt: int, fin: bool = False) -> int:
        _u32(seq, "seq")
        base = _u32(rcv_nxt, "rcv_nxt")
        data = bytes(data)
        self._trim_behind(base)
        self._clock += 1
        self.segments += 1
        s0 = _rel(seq, base)
        s, e = s0, s0 + len(data)
        if fin and e >= 0 and self._fin is None:
            self._fin = (seq + len(data)) % MOD
            self._trim_after_fin(base)
        if self._fin is not None:
            f = _rel(self._fin, base)
            if e > f:
                self.beyond_fin_bytes += e - max(f, s)
                e = f
        s = max(s, 0)
        if e <= s:
            return 0
        # Mark the blocks this segment covers, find the holes it fills.
        gaps = []
        pos = s
        for b in self._blocks:
            bs = _rel(b.seq, base)
            be = bs + len(b.data)
            if be < s:
                continue
            if bs > e:
                break
            if bs < e and be > s:
                b.stamp = self._clock
            if bs > pos:
                gaps.append((pos, min(bs, e)))
            pos = max(pos, be)
        if pos < e:
            gaps.append((pos, e))
        stored = 0
        room = self.max_bytes - self.bytes_held
        new = []
        for gs, ge in gaps:
            take = min(ge - gs, room)
            self.dropped_bytes += (ge - gs) - take
            if take > 0:
                new.append(_Block((base + gs) % MOD, bytearray(data[gs - s0 : gs - s0 + take]), self._clock))
                room -= take
                stored += take
        if not stored:
            return 0
        self.bytes_held += stored
        blocks = sorted(new + self._blocks, key=lambda b: _rel(b.seq, base))
        merged: list[_Block] = []
        for b in blocks:
            if merged and _rel(merged[-1].seq, base) + len(merged[-1].data) == _rel(b.seq, base):
                merged[-1].data += b.data
                merged[-1].stamp = max(merged[-1].stamp, b.stamp)
            else:
                merged.append(b)
        self._blocks = merged
        return stored

    def pop(self, rcv_nxt: int) -> tuple[bytes, bool]:
        base = _u32(rcv_nxt, "rcv_nxt")
        self._trim_behind(base)
        out = b""
        if self._blocks and self._blocks[0].seq == base:
            out = bytes(self._blocks.pop(0).data)
            self.bytes_held -= len(out)
        return out, self._fin is not None and _rel(self._fin, base) == len(out)

    def sack_blocks(self, max_blocks: int = 4) -> list[tuple[int, int]]:
        order = sorted(self._blocks, key=lambda b: b.stamp, reverse=True)
        return [(b.seq, (b.seq + len(b.data)) % MOD) for b in order[: max(max_blocks, 0)]]

    def blocks(self) -> list[tuple[int, int]]:
        return [(b.seq, len(b.data)) for b in self._blocks]


class _Datagram:
    def __init__(self, created: float) -> None:
        self.created = created
        self.header: bytes | None = None
        self.frags: list[tuple[int, bytes]] = []  # (offset, payload), in arrival order
        self.end = -1  # payload length once the last fragment is in
        self.held = 0

    def max_end(self) -> int:
        return max((o + len(p) for o, p in self.frags), default=0)


class FragmentReassembler:
    def __init__(self, max_bytes: int, timeout: float, max_datagrams: int = 64) -> None:
        if max_bytes < 0 or max_datagrams < 1 or not timeout > 0:
            raise ValueError("need max_bytes >= 0, max_datagrams >= 1 and timeout > 0")
        self.max_bytes = max_bytes
        self.timeout = float(timeout)
        self.max_datagrams = max_datagrams
        self._dgrams: dict[tuple[bytes, int, int], _Datagram] = {}
        self.bytes_held = 0
        self.fragments = self.reassembled = self.duplicates = self.overlaps = 0
        self.bad_fragment = self.inconsistent = self.too_big = self.timeouts = self.evicted = 0

    @property
    def in_flight(self) -> int:
        return len(self._dgrams)

    def counters(self) -> dict[str, int]:
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

    def next_deadline(self) -> float | None:
        if not self._dgrams:
            return None
        return min(d.created for d in self._dgrams.values()) + self.timeout

    def _drop(self, key: tuple[bytes, int, int]) -> None:
        self.bytes_held -= self._dgrams.pop(key).held

    def expire(self, now: float) -> int:
        dead = [k for k, d in self._dgrams.items() if now - d.created >= self.timeout]
        for k in dead:
            self._drop(k)
        self.timeouts += len(dead)
        return len(dead)

    def clear(self) -> None:
        self._dgrams.clear()
        self.bytes_held = 0

    def add(self, header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview, now: float) -> bytes | None:
        h = bytes(header)
        if len(h) < 20 or h[0] >> 4 != 4 or (h[0] & 0x0F) < 5 or (h[0] & 0x0F) * 4 > len(h):
            self.bad_fragment += 1
            return None
        h = h[: (h[0] & 0x0F) * 4]
        fo = int.from_bytes(h[6:8], "big")
        mf = bool(fo & 0x2000)
        off = (fo & 0x1FFF) * 8
        payload = bytes(payload)
        n = len(payload)
        if not mf and off == 0:
            return h + payload
        self.fragments += 1
        end = off + n
        if mf and (n == 0 or n % 8):
            self.bad_fragment += 1
            return None
        key = (h[12:20], h[9], int.from_bytes(h[4:6], "big"))
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
            if not mf and ((d.end >= 0 and d.end != end) or end < d.max_end()):
                self._drop(key)
                self.inconsistent += 1
                return None
            if mf and d.end >= 0 and end > d.end:
                self._drop(key)
                self.inconsistent += 1
                return None
            for o, p in d.frags:
                if o == off and len(p) == n:
                    self.duplicates += 1
                    return None
            for o, p in d.frags:
                if o < end and off < o + len(p):
                    self._drop(key)
                    self.overlaps += 1
                    return None
        # Evict the oldest other datagrams until this fragment fits.
        while self.bytes_held + n > self.max_bytes or (d is None and len(self._dgrams) >= self.max_datagrams):
            others = [k for k in self._dgrams if k != key]
            if not others:
                break
            self._drop(others[0])
            self.evicted += 1
        if self.bytes_held + n > self.max_bytes:
            if key in self._dgrams:
                self._drop(key)
            self.evicted += 1
            return None
        if d is None:
            d = self._dgrams[key] = _Datagram(now)
        d.frags.append((off, payload))
        d.held += n
        self.bytes_held += n
        if not mf:
            d.end = end
        if off == 0:
            d.header = h
        if d.end < 0 or d.held != d.end:
            return None
        self._drop(key)
        assert d.header is not None
        total = len(d.header) + d.end
        if total > 0xFFFF:
            self.too_big += 1
            return None
        hdr = bytearray(d.header)
        hdr[2:4] = total.to_bytes(2, "big")
        hdr[6] &= 0xC0
        hdr[7] = 0
        hdr[10:12] = b"\0\0"
        hdr[10:12] = internet_checksum(hdr).to_bytes(2, "big")
        self.reassembled += 1
        return bytes(hdr) + b"".join(p for _, p in sorted(d.frags))
