"""Reassembly buffers: TCP out-of-order queue and IPv4 fragments, compiled vs pure twin vs a
per-octet model written here from the rules (RFC 9293 §3.10.7.4, RFC 2018, RFC 791/815)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyslirp._core import checksum as cck
from pyslirp._core import reassembly as cre
from pyslirp._core.pure import reassembly as pre

IMPLS = [pytest.param(cre, id="compiled"), pytest.param(pre, id="pure")]
MOD = 1 << 32


def rel(a: int, b: int) -> int:
    d = (a - b) % MOD
    return d - MOD if d >= 1 << 31 else d


class OctetModel:
    """SegmentQueue semantics octet by octet: a dict seq -> (octet, stamp)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held: dict[int, int] = {}
        self.stamp: dict[int, int] = {}
        self.fin: int | None = None
        self.dropped_bytes = self.beyond_fin_bytes = 0
        self.clock = 0
        self.base = 0

    def _forget_behind(self, rcv_nxt: int) -> None:
        for s in [s for s in self.held if rel(s, rcv_nxt) < 0]:
            del self.held[s], self.stamp[s]
        if self.fin is not None and rel(self.fin, rcv_nxt) < 0:
            self.fin = None
        self.base = rcv_nxt

    def insert(self, seq: int, data: bytes, rcv_nxt: int, fin: bool) -> int:
        self._forget_behind(rcv_nxt)
        self.clock += 1
        end = rel(seq, rcv_nxt) + len(data)
        if fin and end >= 0 and self.fin is None:
            self.fin = (seq + len(data)) % MOD
            for s in [s for s in self.held if rel(s, self.fin) >= 0]:
                del self.held[s], self.stamp[s]
                self.beyond_fin_bytes += 1
        stored = 0
        for k, octet in enumerate(data):
            s = (seq + k) % MOD
            r = rel(s, rcv_nxt)
            if r < 0:
                continue
            if self.fin is not None and r >= rel(self.fin, rcv_nxt):
                self.beyond_fin_bytes += 1
            elif s in self.held:
                self.stamp[s] = self.clock
            elif len(self.held) < self.max_bytes:
                self.held[s] = octet
                self.stamp[s] = self.clock
                stored += 1
            else:
                self.dropped_bytes += 1
        return stored

    def pop(self, rcv_nxt: int) -> tuple[bytes, bool]:
        self._forget_behind(rcv_nxt)
        out = bytearray()
        s = rcv_nxt
        while s in self.held:
            out.append(self.held.pop(s))
            del self.stamp[s]
            s = (s + 1) % MOD
        return bytes(out), self.fin is not None and rel(self.fin, rcv_nxt) == len(out)

    def runs(self) -> list[tuple[int, int, int]]:
        """(left, length, newest stamp) of contiguous runs, in sequence order from base."""
        out: list[list[int]] = []
        for s in sorted(self.held, key=lambda s: rel(s, self.base)):
            if out and (out[-1][0] + out[-1][1]) % MOD == s:
                out[-1][1] += 1
                out[-1][2] = max(out[-1][2], self.stamp[s])
            else:
                out.append([s, 1, self.stamp[s]])
        return [tuple(r) for r in out]


# --- SegmentQueue: examples --------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_hole_filled_in_order_delivery(impl) -> None:
    q = impl.SegmentQueue(1 << 16)
    assert q.insert(1010, b"klmno", 1000) == 5
    assert q.insert(1005, b"fghij", 1000) == 5
    assert q.pop(1000) == (b"", False)
    assert q.blocks() == [(1005, 10)]
    assert q.sack_blocks() == [(1005, 1015)]
    assert q.insert(1000, b"abcde", 1000) == 5
    assert q.pop(1000) == (b"abcdefghijklmno", False)
    assert q.bytes_held == 0 and len(q) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_overlaps_trimmed_on_both_sides_first_copy_wins(impl) -> None:
    q = impl.SegmentQueue(1 << 16)
    q.insert(110, b"BBBB", 100)
    q.insert(120, b"DDDD", 100)
    # Covers [105, 130): only the gaps are new, held octets keep their first value.
    assert q.insert(105, b"x" * 25, 100) == 25 - 8
    assert q.blocks() == [(105, 25)]
    assert q.pop(105) == (b"xxxxxBBBBxxxxxxDDDDxxxxxx", False)
    # Data before rcv_nxt is ignored.
    assert q.insert(90, b"old-and-new", 95) == 6
    assert q.pop(95) == (b"nd-new", False)


@pytest.mark.parametrize("impl", IMPLS)
def test_sequence_wraparound(impl) -> None:
    q = impl.SegmentQueue(1 << 16)
    rcv_nxt = MOD - 6
    assert q.insert(2, b"CD", rcv_nxt) == 2               # after the wrap
    assert q.insert(MOD - 2, b"ABcd", rcv_nxt) == 4       # straddles 2^32
    assert q.blocks() == [(MOD - 2, 6)]
    assert q.sack_blocks() == [(MOD - 2, 4)]
    assert q.insert(MOD - 6, b"0123", rcv_nxt) == 4
    assert q.pop(rcv_nxt) == (b"0123ABcdCD", False)


@pytest.mark.parametrize("impl", IMPLS)
def test_fin(impl) -> None:
    q = impl.SegmentQueue(1 << 16)
    assert q.insert(10, b"world", 0, fin=True) == 5
    assert q.fin_seq == 15
    assert q.pop(0) == (b"", False)
    # Data beyond the FIN is not stored.
    assert q.insert(12, b"RLD!!", 0) == 0
    assert q.beyond_fin_bytes == 2
    q.insert(0, b"hello, ", 0)
    q.insert(7, b"big", 0)
    assert q.pop(0) == (b"hello, bigworld", True)
    assert q.pop(15) == (b"", True)          # idempotent until RCV.NXT passes the FIN
    assert q.pop(16) == (b"", False)
    assert q.fin_seq is None
    # A FIN that arrives before the data it follows.
    q2 = impl.SegmentQueue(100)
    q2.insert(3, b"", 0, fin=True)
    q2.insert(0, b"abc", 0)
    assert q2.pop(0) == (b"abc", True)
    # A retransmitted FIN segment whose data is all old still reports the FIN.
    q3 = impl.SegmentQueue(100)
    q3.insert(0, b"abc", 3, fin=True)
    assert q3.pop(3) == (b"", True)


@pytest.mark.parametrize("impl", IMPLS)
def test_capacity_bound(impl) -> None:
    q = impl.SegmentQueue(10)
    assert q.insert(100, b"a" * 6, 0) == 6
    assert q.insert(50, b"b" * 6, 0) == 4      # lowest sequence numbers first
    assert q.bytes_held == 10
    assert q.dropped_bytes == 2
    assert q.insert(200, b"c", 0) == 0
    assert q.dropped_bytes == 3
    assert q.blocks() == [(50, 4), (100, 6)]
    q.clear()
    assert q.bytes_held == 0 and q.blocks() == [] and q.fin_seq is None


@pytest.mark.parametrize("impl", IMPLS)
def test_sack_order_most_recent_first(impl) -> None:
    q = impl.SegmentQueue(1 << 16)
    q.insert(100, b"a" * 10, 0)
    q.insert(300, b"c" * 10, 0)
    q.insert(200, b"b" * 10, 0)
    assert q.sack_blocks() == [(200, 210), (300, 310), (100, 110)]
    q.insert(305, b"c" * 10, 0)  # touches/extends the third block
    assert q.sack_blocks(2) == [(300, 315), (200, 210)]
    q.insert(110, b"x" * 5, 0)  # merges into the first block
    assert q.sack_blocks()[0] == (100, 115)
    assert q.sack_blocks(0) == []


@pytest.mark.parametrize("impl", IMPLS)
def test_input_validation(impl) -> None:
    q = impl.SegmentQueue(10)
    with pytest.raises(ValueError):
        q.insert(-1, b"", 0)
    with pytest.raises(ValueError):
        q.pop(MOD)
    with pytest.raises(ValueError):
        impl.SegmentQueue(-1)
    assert q.insert(0, bytearray(b"ab"), 0) == 2
    assert q.insert(2, memoryview(b"cd"), 0) == 2
    assert q.pop(0) == (b"abcd", False)


# --- SegmentQueue: properties -----------------------------------------------------------------

ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(-40, 160), st.integers(0, 40), st.just(False)),
        st.tuples(st.just("pop"), st.just(0), st.just(0), st.just(False)),
        st.tuples(st.just("advance"), st.integers(1, 30), st.just(0), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=250, deadline=None)
@given(
    start=st.one_of(st.integers(0, MOD - 1), st.integers(MOD - 200, MOD - 1)),
    max_bytes=st.one_of(st.integers(0, 60), st.just(1 << 20)),
    ops=ops_st,
    fin_ops=st.sets(st.integers(0, 40), max_size=3),
)
def test_segment_queue_compiled_pure_and_model_agree(start, max_bytes, ops, fin_ops) -> None:
    qc, qp, model = cre.SegmentQueue(max_bytes), pre.SegmentQueue(max_bytes), OctetModel(max_bytes)
    rcv_nxt = start
    last_insert_touched = False
    for i, (op, a, b, _) in enumerate(ops):
        if op == "insert":
            seq = (rcv_nxt + a) % MOD
            data = bytes((seq + k) & 0xFF for k in range(b))  # octet value = its sequence number
            fin = i in fin_ops
            got = qc.insert(seq, data, rcv_nxt, fin)
            assert got == qp.insert(seq, data, rcv_nxt, fin) == model.insert(seq, data, rcv_nxt, fin)
            last_insert_touched = any(model.stamp.get(s) == model.clock for s in model.held)
        elif op == "pop":
            data, fin = qc.pop(rcv_nxt)
            assert (data, fin) == qp.pop(rcv_nxt) == model.pop(rcv_nxt)
            assert data == bytes((rcv_nxt + k) & 0xFF for k in range(len(data)))
            rcv_nxt = (rcv_nxt + len(data) + fin) % MOD
            last_insert_touched = False
        else:  # RCV.NXT moved by data delivered without the queue
            rcv_nxt = (rcv_nxt + a) % MOD
        assert qc.bytes_held == qp.bytes_held == len(model.held) <= max_bytes
        assert qc.dropped_bytes == qp.dropped_bytes == model.dropped_bytes
        assert qc.beyond_fin_bytes == qp.beyond_fin_bytes == model.beyond_fin_bytes
        assert qc.fin_seq == qp.fin_seq
        assert qc.blocks() == qp.blocks()
        assert qc.sack_blocks(8) == qp.sack_blocks(8)
        if op != "advance":
            runs = model.runs()
            assert qc.blocks() == [(s, n) for s, n, _ in runs]
            sack = qc.sack_blocks(8)
            assert sorted(sack) == sorted((s, (s + n) % MOD) for s, n, _ in runs)
            if last_insert_touched and sack:
                # RFC 2018 §4: the first block holds the segment that triggered the ACK.
                newest = max(runs, key=lambda r: r[2])
                assert sack[0] == (newest[0], (newest[0] + newest[1]) % MOD)
    assert qc.counters() == qp.counters()


# --- FragmentReassembler -----------------------------------------------------------------------

SRC, DST = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])


def ip_header(ident: int, offset: int, mf: bool, options: bytes = b"", proto: int = 17, df: bool = False,
              src: bytes = SRC, total: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    fo = (0x4000 if df else 0) | (0x2000 if mf else 0) | (offset // 8)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, ident, fo, 64, proto, 0, src, DST) + options)
    h[10:12] = cck.internet_checksum(h).to_bytes(2, "big")
    return bytes(h)


def expected_datagram(ident: int, payload: bytes, options: bytes = b"", df: bool = False, proto: int = 17) -> bytes:
    h = bytearray(ip_header(ident, 0, False, options, proto, df, total=20 + len(options) + len(payload)))
    return bytes(h) + payload


def fragment(payload: bytes, cuts: list[int]) -> list[tuple[int, bytes, bool]]:
    points = sorted({c * 8 for c in cuts if 0 < c * 8 < len(payload)})
    edges = [0] + points + [len(payload)]
    return [(a, payload[a:b], b != len(payload)) for a, b in zip(edges, edges[1:])]


@pytest.mark.parametrize("impl", IMPLS)
def test_fragments_in_any_order(impl) -> None:
    payload = bytes(range(256)) * 12
    opts = b"\x94\x04\x00\x00"  # Router Alert, to carry options in the first header
    frags = fragment(payload, [60, 185, 300])
    r = impl.FragmentReassembler(1 << 20, 30.0)
    order = [2, 0, 3, 1]
    results = []
    for n, i in enumerate(order):
        off, data, mf = frags[i]
        results.append(r.add(ip_header(7, off, mf, opts if off == 0 else b"", df=True), data, float(n)))
    assert results[:-1] == [None, None, None]
    dg = results[-1]
    assert dg == expected_datagram(7, payload, opts, df=True)
    assert cck.verify(dg[:24])
    assert r.counters()["reassembled"] == 1 and r.counters()["fragments"] == 4
    assert r.bytes_held == 0 and r.in_flight == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicates_ignored_overlaps_drop(impl) -> None:
    payload = bytes(range(64))
    r = impl.FragmentReassembler(1 << 20, 30.0)
    assert r.add(ip_header(1, 0, True), payload[:32], 0.0) is None
    assert r.add(ip_header(1, 0, True), payload[:32], 0.0) is None
    assert r.duplicates == 1
    assert r.add(ip_header(1, 32, False), payload[32:], 0.0) == expected_datagram(1, payload)
    # Overlap: [0,32) then [16,48) -> the datagram is dropped (RFC 5722 style).
    assert r.add(ip_header(2, 0, True), payload[:32], 0.0) is None
    assert r.add(ip_header(2, 16, True), payload[16:48], 0.0) is None
    assert r.overlaps == 1 and r.in_flight == 0 and r.bytes_held == 0
    # A later fragment of it starts a new (incomplete) datagram that times out.
    assert r.add(ip_header(2, 32, False), payload[32:], 1.0) is None
    assert r.next_deadline() == 31.0
    assert r.expire(30.9) == 0
    assert r.expire(31.0) == 1
    assert r.counters()["timeouts"] == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_malformed_and_inconsistent(impl) -> None:
    r = impl.FragmentReassembler(1 << 20, 30.0)
    assert r.add(b"\x45" + b"\0" * 10, b"x" * 8, 0.0) is None            # header too short
    assert r.add(ip_header(1, 0, True), b"x" * 12, 0.0) is None         # MF, not a multiple of 8
    assert r.add(ip_header(1, 0, True), b"", 0.0) is None               # MF and empty
    assert r.bad_fragment == 3
    assert r.add(ip_header(3, 16, False), b"x" * 8, 0.0) is None        # end = 24
    assert r.add(ip_header(3, 32, True), b"x" * 8, 0.0) is None         # beyond the end
    assert r.inconsistent == 1
    assert r.add(ip_header(4, 16, True), b"x" * 16, 0.0) is None        # seen up to 32
    assert r.add(ip_header(4, 8, False), b"x" * 8, 0.0) is None         # last ends at 16 < 32
    assert r.inconsistent == 2
    assert r.add(ip_header(5, 65512, False), b"x" * 8, 0.0) is None     # > 65535
    assert r.too_big == 1
    # A datagram that is not fragmented comes back as it is.
    plain = ip_header(9, 0, False)
    assert r.add(plain, b"data", 0.0) == plain + b"data"
    assert r.in_flight == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bounds_evict_oldest(impl) -> None:
    r = impl.FragmentReassembler(100, 30.0, max_datagrams=2)
    assert r.add(ip_header(1, 0, True), b"a" * 40, 0.0) is None
    assert r.add(ip_header(2, 0, True), b"b" * 40, 1.0) is None
    assert r.add(ip_header(3, 0, True), b"c" * 8, 2.0) is None          # third datagram: evict #1
    assert r.evicted == 1 and r.in_flight == 2 and r.bytes_held == 48
    assert r.add(ip_header(3, 8, True), b"c" * 56, 3.0) is None          # 104 > 100: evict #2
    assert r.evicted == 2 and r.in_flight == 1 and r.bytes_held == 64
    assert r.add(ip_header(3, 64, True), b"c" * 40, 4.0) is None         # cannot fit even alone
    assert r.evicted == 3 and r.in_flight == 0 and r.bytes_held == 0
    with pytest.raises(ValueError):
        impl.FragmentReassembler(100, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=4),
    cuts=st.lists(st.lists(st.integers(1, 80), max_size=6), min_size=4, max_size=4),
    seed=st.randoms(use_true_random=False),
    dup=st.booleans(),
)
def test_random_fragmentation_and_order(payloads, cuts, seed, dup) -> None:
    pieces = []
    for ident, payload in enumerate(payloads):
        for off, data, mf in fragment(payload, cuts[ident]):
            pieces.append((ident, off, data, mf))
    if dup:
        pieces += pieces[: len(pieces) // 2]
    seed.shuffle(pieces)
    want = {ident: expected_datagram(ident, p) for ident, p in enumerate(payloads)}
    for impl in (cre, pre):
        r = impl.FragmentReassembler(1 << 20, 30.0)
        got = {}
        for ident, off, data, mf in pieces:
            out = r.add(ip_header(ident, off, mf, total=20 + len(data)), data, 0.0)
            if out is not None:
                # Duplicates arriving after completion may start (and complete) it again.
                assert out == want[ident]
                got[ident] = out
        assert got == want
        assert r.counters()["overlaps"] == 0


frag_ops = st.lists(
    st.tuples(
        st.integers(0, 2),                           # key (identification)
        st.integers(0, 12),                          # offset in 8-octet units
        st.integers(0, 5),                           # length in 8-octet units
        st.booleans(),                               # MF
        st.integers(0, 7),                           # extra octets (non-multiple of 8)
        st.floats(0, 12, allow_nan=False),           # time step
        st.booleans(),                               # call expire()
    ),
    max_size=40,
)


@settings(max_examples=250, deadline=None)
@given(ops=frag_ops, max_bytes=st.integers(0, 200), max_dg=st.integers(1, 3))
def test_fragment_reassembler_compiled_equals_pure(ops, max_bytes, max_dg) -> None:
    rc = cre.FragmentReassembler(max_bytes, 10.0, max_dg)
    rp = pre.FragmentReassembler(max_bytes, 10.0, max_dg)
    now = 0.0
    for ident, off8, len8, mf, extra, step, expire in ops:
        now += step
        data = bytes((ident * 64 + off8 * 8 + k) & 0xFF for k in range(len8 * 8 + (extra if not mf else 0)))
        h = ip_header(ident, off8 * 8, mf, total=20 + len(data))
        assert rc.add(h, data, now) == rp.add(h, data, now)
        if expire:
            assert rc.expire(now) == rp.expire(now)
        assert rc.counters() == rp.counters()
        assert rc.bytes_held == rp.bytes_held <= max_bytes
        assert rc.in_flight == rp.in_flight <= max_dg
        assert rc.next_deadline() == rp.next_deadline()
