"""RFC 1662 octet-stuffed framing: encoder and streaming deframer, compiled vs pure twin."""

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyslirp._core import fcs as cfcs
from pyslirp._core import hdlc as chdlc
from pyslirp._core.pure import hdlc as phdlc

IMPLS = [pytest.param(chdlc, id="compiled"), pytest.param(phdlc, id="pure")]
FLAG, ESC = 0x7E, 0x7D
ALL = 0xFFFFFFFF

accms = st.one_of(st.just(0), st.just(ALL), st.just(0x000A0000), st.integers(0, ALL))
# Octets biased towards the ones the framing cares about.
special_octets = st.one_of(
    st.sampled_from([FLAG, ESC, 0x00, 0x11, 0x13, 0x1F, 0x20, 0x5D, 0x5E, 0xFF]), st.integers(0, 255)
)
garbage = st.lists(special_octets, max_size=400).map(bytes)


def stuff(raw: bytes, accm: int) -> bytes:
    """Octet-stuff raw bytes (frame + FCS) without adding anything (RFC 1662 §4.2)."""
    out = bytearray()
    for c in raw:
        if c in (FLAG, ESC) or (c < 0x20 and accm >> c & 1):
            out += bytes([ESC, c ^ 0x20])
        else:
            out.append(c)
    return bytes(out)


def with_fcs(frame: bytes) -> bytes:
    return frame + (~cfcs.fcs16(frame) & 0xFFFF).to_bytes(2, "little")


def feed_chunked(d, stream: bytes, cuts: list[int]) -> list[bytes]:
    out = []
    pos = 0
    for c in sorted(set(min(c, len(stream)) for c in cuts)):
        out += d.feed(stream[pos:c])
        pos = c
    out += d.feed(stream[pos:])
    return out


# --- encoder -----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_known_frame(impl) -> None:
    frame = bytes.fromhex("ff03c021010100040000")  # short LCP Configure-Request
    raw = with_fcs(frame)
    wire = impl.encode_frame(frame)
    assert wire == bytes([FLAG]) + stuff(raw, ALL) + bytes([FLAG])
    # With the default ACCM every control octet is escaped: no byte < 0x20 on the line.
    assert all(b >= 0x20 for b in wire)
    assert wire.count(FLAG) == 2
    # 0x7D 0x7E are escaped even with ACCM 0; control octets are then sent as is.
    assert impl.encode_frame(b"\x7d\x7e\x01", 0)[1:6] == b"\x7d\x5d\x7d\x5e\x01"


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_rejects_other_fcs_sizes_and_bad_accm(impl) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        impl.encode_frame(b"abc", ALL, 32)
    with pytest.raises(ValueError):
        impl.encode_frame(b"abc", -1)
    with pytest.raises(ValueError):
        impl.encode_frame(b"abc", 1 << 32)
    with pytest.raises(TypeError):
        impl.encode_frame("abc")


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_buffer_types_and_worst_case(impl) -> None:
    frame = bytes([FLAG, ESC] * 5000)  # every octet escaped, larger than the scratch buffer
    want = bytes([FLAG]) + stuff(with_fcs(frame), ALL) + bytes([FLAG])
    assert impl.encode_frame(frame) == want
    assert impl.encode_frame(bytearray(frame)) == want
    assert impl.encode_frame(memoryview(b"__" + frame)[2:]) == want
    assert len(want) <= 2 * len(frame) + 6


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | garbage, accms)
def test_encode_compiled_equals_pure(frame: bytes, accm: int) -> None:
    wire = chdlc.encode_frame(frame, accm)
    assert wire == phdlc.encode_frame(frame, accm)
    assert wire == bytes([FLAG]) + stuff(with_fcs(frame), accm) + bytes([FLAG])


# --- deframer: rules ---------------------------------------------------------------------------


def frame_bytes(body: bytes, accm: int = ALL) -> bytes:
    return stuff(with_fcs(body), accm)


@pytest.mark.parametrize("impl", IMPLS)
def test_single_flag_between_frames_and_time_fill(impl) -> None:
    a, b, c = b"\xff\x03\x00\x21AAAA", b"\xff\x03\x00\x21B", b"\x00\x21C"
    stream = b"~" + frame_bytes(a) + b"~" + frame_bytes(b) + b"~~~~" + frame_bytes(c) + b"~"
    d = impl.Deframer()
    assert d.feed(stream) == [a, b, c]
    ctr = d.counters()
    assert ctr["frames_ok"] == 3
    assert ctr["bad_fcs"] == ctr["too_short"] == ctr["too_long"] == ctr["aborted"] == 0
    assert ctr["bytes_in"] == len(stream)
    assert ctr["bytes_out"] == len(a) + len(b) + len(c)


@pytest.mark.parametrize("impl", IMPLS)
def test_octets_before_first_flag_are_hunted_not_errors(impl) -> None:
    d = impl.Deframer()
    good = b"\xff\x03\xc0\x21\x09\x01\x00\x04"
    assert d.feed(b"junk from the middle of a frame" + b"~" + frame_bytes(good) + b"~") == [good]
    assert d.hunt_bytes == len(b"junk from the middle of a frame")
    assert d.bad_fcs == 0 and d.frames_ok == 1
    d.reset()
    assert d.feed(frame_bytes(good) + b"~") == []
    assert d.feed(frame_bytes(good) + b"~") == [good]


@pytest.mark.parametrize("impl", IMPLS)
def test_abort_sequence_counted(impl) -> None:
    good = b"\xff\x03\x00\x21data"
    d = impl.Deframer()
    # The abort's Flag also opens the next frame.
    assert d.feed(b"~" + frame_bytes(good)[:5] + b"\x7d~" + frame_bytes(good) + b"~") == [good]
    assert d.aborted == 1 and d.frames_ok == 1 and d.bad_fcs == 0
    assert d.feed(b"\x7d~") == []
    assert d.aborted == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_too_short_and_bad_fcs(impl) -> None:
    d = impl.Deframer()
    assert d.feed(b"~a~ab~abc~") == []
    assert d.too_short == 3
    # With the default ACCM control octets are deleted: this frame is empty, not short.
    assert d.feed(b"\x01\x02~") == []
    assert d.too_short == 3 and d.ctrl_ignored == 2
    assert d.feed(b"abcd~") == []
    assert d.bad_fcs == 1
    assert d.frames_ok == 0
    # Two content octets + FCS is the shortest legal frame.
    assert d.feed(frame_bytes(b"\x00\x21") + b"~") == [b"\x00\x21"]


@pytest.mark.parametrize("impl", IMPLS)
def test_accm_control_octets_are_deleted(impl) -> None:
    body = b"\xff\x03\x00\x21" + bytes(range(64))
    accm = (1 << 0x11) | (1 << 0x13)  # XON/XOFF only
    wire = bytearray(frame_bytes(body, accm))
    for pos in (len(wire) - 1, 17, 3, 0):
        wire[pos:pos] = b"\x11\x13"
    # Also between a Control Escape and the octet it escapes.
    esc = wire.index(ESC)
    wire[esc + 1 : esc + 1] = b"\x13"
    d = impl.Deframer(accm)
    assert d.feed(b"~" + bytes(wire) + b"~") == [body]
    assert d.ctrl_ignored == 9
    # Without them in the receive ACCM they are data, and the FCS catches the corruption.
    d2 = impl.Deframer(0)
    assert d2.feed(b"~" + bytes(wire) + b"~") == []
    assert d2.bad_fcs == 1
    d2.set_accm(accm)
    assert d2.accm == accm
    assert d2.feed(bytes(wire) + b"~") == [body]


@pytest.mark.parametrize("impl", IMPLS)
def test_max_frame_boundary(impl) -> None:
    d = impl.Deframer(max_frame=64)
    ok = bytes(range(62))  # 62 + FCS = 64
    assert d.feed(b"~" + frame_bytes(ok) + b"~") == [ok]
    assert d.feed(frame_bytes(ok + b"x") + b"~" + frame_bytes(ok) + b"~") == [ok]
    assert d.too_long == 1
    assert d.max_frame == 64
    with pytest.raises(ValueError):
        impl.Deframer(max_frame=3)
    with pytest.raises(ValueError, match="16-bit"):
        impl.Deframer(fcs_bits=32)
    with pytest.raises(ValueError):
        impl.Deframer(accm=-1)


@pytest.mark.parametrize("impl", IMPLS)
def test_bounded_on_a_megabyte_without_flags(impl) -> None:
    d = impl.Deframer(max_frame=1600)
    chunk = bytes((i * 7) & 0xFF for i in range(65536)).replace(b"~", b"A")
    d.feed(b"~")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(16):
            assert d.feed(chunk) == []
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, grown
    good = b"\x00\x21after"
    assert d.feed(b"~" + frame_bytes(good) + b"~") == [good]
    assert d.too_long == 1
    assert d.bytes_in == 1 + 16 * 65536 + 1 + len(frame_bytes(good)) + 1


# --- deframer: properties ----------------------------------------------------------------------

frames_st = st.lists(st.binary(min_size=2, max_size=200) | garbage.filter(lambda b: len(b) >= 2), max_size=8)


@settings(max_examples=250, deadline=None)
@given(
    frames=frames_st,
    tx_accm=accms,
    rx_mask=st.integers(0, ALL),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    flags=st.lists(st.integers(0, 3), min_size=8, max_size=8),
    noise=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 31)), max_size=6),
)
def test_round_trip_any_accm_any_chunking(frames, tx_accm, rx_mask, cuts, flags, noise) -> None:
    rx_accm = tx_accm & rx_mask  # the peer must escape whatever we delete
    stream = bytearray()
    for i, f in enumerate(frames):
        wire = chdlc.encode_frame(f, tx_accm)
        # Frames may share one Flag (Linux ppp_async) or be separated by several.
        if i and flags[i] == 0:
            wire = wire[1:]
        stream += wire + b"~" * (flags[i] == 3)
    inserted = 0
    for pos, ctl in sorted(noise, reverse=True):
        if rx_accm >> ctl & 1:  # DCE-inserted control octets the ACCM says to delete
            stream[min(pos, len(stream)) : min(pos, len(stream))] = bytes([ctl])
            inserted += 1
    stream = bytes(stream)
    for impl in (chdlc, phdlc):
        d = impl.Deframer(rx_accm)
        assert feed_chunked(d, stream, cuts) == frames
        ctr = d.counters()
        assert ctr["frames_ok"] == len(frames)
        assert ctr["bad_fcs"] == ctr["too_short"] == ctr["aborted"] == ctr["too_long"] == 0
        assert ctr["ctrl_ignored"] + ctr["hunt_bytes"] == inserted


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(garbage, st.binary(min_size=2, max_size=120).map(lambda f: chdlc.encode_frame(f))), max_size=10),
    accm=accms,
    max_frame=st.one_of(st.integers(4, 80), st.just(4096)),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
    new_accm=st.one_of(st.none(), accms),
)
def test_deframer_compiled_equals_pure_on_garbage(parts, accm, max_frame, cuts, new_accm) -> None:
    stream = b"".join(parts)
    dc = chdlc.Deframer(accm, 16, max_frame)
    dp = phdlc.Deframer(accm, 16, max_frame)
    pos = 0
    for i, c in enumerate(sorted(set(min(c, len(stream)) for c in cuts)) + [len(stream)]):
        if new_accm is not None and i == 2:
            dc.set_accm(new_accm)
            dp.set_accm(new_accm)
        assert dc.feed(stream[pos:c]) == dp.feed(stream[pos:c])
        assert dc.counters() == dp.counters()
        pos = c
    ctr = dc.counters()
    assert ctr["bytes_in"] == len(stream)
    for name in ("frames_ok", "bad_fcs", "too_short", "too_long", "aborted", "bytes_in", "hunt_bytes", "ctrl_ignored"):
        assert getattr(dc, name) == ctr[name]


@settings(max_examples=250, deadline=None)
@given(
    frame=st.binary(min_size=2, max_size=300),
    accm=accms,
    burst_at=st.integers(0, 10_000),
    burst=st.integers(1, 0xFFFF),
)
def test_corruption_is_caught_by_fcs(frame, accm, burst_at, burst) -> None:
    # Any error burst of up to 16 bits in frame+FCS is detected by the CRC-16.
    raw = bytearray(with_fcs(frame))
    nbits = len(raw) * 8
    start = burst_at % (nbits - 15) if nbits > 16 else 0
    value = int.from_bytes(raw, "little") ^ (burst << start)
    corrupted = value.to_bytes(len(raw), "little")
    wire = b"~" + stuff(corrupted, accm) + b"~"
    for impl in (chdlc, phdlc):
        d = impl.Deframer(accm)
        assert d.feed(wire) == []
        assert d.bad_fcs == 1
        assert d.frames_ok == 0
