"""TCP wire format: header and options round trips, checksum, malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pyslirp.net.tcp_segment import (
    ACK, FIN, PSH, SYN, TCPSegment, build_options, build_segment, checksum_ok, parse_segment,
)

SRC = bytes([10, 0, 0, 2])
DST = bytes([10, 0, 0, 1])


def _raw(opts: bytes, payload: bytes = b"", flags: int = ACK) -> bytes:
    """A segment with the given raw option bytes (padded by the caller)."""
    hl = 20 + len(opts)
    hdr = struct.pack("!HHIIBBHHH", 1234, 80, 1, 2, (hl // 4) << 4, flags, 1000, 0, 0)
    return hdr + opts + payload


def test_linux_syn_options_parse():
    # A SYN as Linux sends it: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    opts = bytes.fromhex("020405b4") + bytes.fromhex("0402080a") + struct.pack("!II", 111, 0) \
        + bytes.fromhex("01030307")
    seg = parse_segment(_raw(opts, flags=SYN))
    assert seg is not None
    assert (seg.mss, seg.wscale, seg.sack_permitted, seg.ts_val, seg.ts_ecr) == \
        (1460, 7, True, 111, 0)
    assert seg.seg_len == 1


def test_round_trip_with_checksum():
    seg = TCPSegment(40000, 80, 0xFFFFFFF0, 12345, ACK | PSH, 513, b"hello world",
                     sack_blocks=((100, 200), (300, 400)), ts_val=7, ts_ecr=9)
    raw = build_segment(seg, SRC, DST)
    assert checksum_ok(raw, SRC, DST)
    back = parse_segment(raw, SRC, DST)
    assert back == seg
    assert back.seg_len == 11


def test_bad_checksum_is_counted_and_dropped():
    raw = bytearray(build_segment(TCPSegment(1, 2, 3, 4, ACK, 5, b"x"), SRC, DST))
    raw[-1] ^= 0xFF
    counters: dict = {}
    assert parse_segment(bytes(raw), SRC, DST, counters) is None
    assert counters == {"bad_checksum": 1}


def test_seg_len_counts_syn_and_fin():
    assert TCPSegment(flags=SYN | FIN, payload=b"ab").seg_len == 4


def test_build_options_alignment():
    for kw in ({"mss": 1460}, {"mss": 536, "wscale": 3, "sack_permitted": True},
               {"ts_val": 1, "ts_ecr": 2}, {"sack_blocks": ((1, 2),)},
               {"mss": 1460, "sack_permitted": True, "ts_val": 5, "ts_ecr": 0, "wscale": 14}):
        o = build_options(**kw)
        assert len(o) % 4 == 0 and len(o) <= 40
        seg = parse_segment(_raw(o))
        assert seg is not None
        for k, v in kw.items():
            assert getattr(seg, k) == v


def test_unknown_option_skipped():
    opts = bytes([30, 4, 0xAA, 0xBB]) + bytes.fromhex("020405b4")
    seg = parse_segment(_raw(opts))
    assert seg is not None and seg.mss == 1460


def test_eol_stops_parsing():
    opts = bytes([0, 99, 99, 99])          # garbage after EOL is padding
    assert parse_segment(_raw(opts)) is not None


def _dropped(raw: bytes) -> dict:
    counters: dict = {}
    assert parse_segment(raw, counters=counters) is None
    return counters


def test_malformed_options_are_dropped_and_counted():
    assert _dropped(_raw(bytes([2, 0, 0, 0]))) == {"bad_options": 1}          # length 0
    assert _dropped(_raw(bytes([2, 1, 0, 0]))) == {"bad_options": 1}          # length 1
    assert _dropped(_raw(bytes([30, 8, 0, 0]))) == {"bad_options": 1}         # overruns
    assert _dropped(_raw(bytes([2, 3, 0, 0]))) == {"bad_options": 1}          # MSS len 3
    assert _dropped(_raw(bytes([3, 4, 7, 0]))) == {"bad_options": 1}          # WS len 4
    assert _dropped(_raw(bytes([5, 6, 0, 0, 0, 0, 0, 0]))) == {"bad_options": 1}  # SACK 6
    assert _dropped(_raw(bytes([8, 8, 0, 0, 0, 0, 0, 0]))) == {"bad_options": 1}  # TS len 8
    assert _dropped(_raw(bytes([1, 1, 1, 2]))) == {"bad_options": 1}          # kind at end


def test_bad_header_lengths():
    assert _dropped(b"\x00" * 19) == {"truncated": 1}
    raw = bytearray(_raw(b""))
    raw[12] = 4 << 4
    assert _dropped(bytes(raw)) == {"bad_header_length": 1}
    raw[12] = 15 << 4
    assert _dropped(bytes(raw)) == {"bad_header_length": 1}


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes_never_raise(data):
    counters: dict = {}
    seg = parse_segment(data, SRC, DST, counters)
    assert (seg is None) == bool(counters)
    seg = parse_segment(data, counters=counters)
    if seg is not None:
        assert seg.payload == data[(data[12] >> 4) * 4:]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=40), st.integers(0, 255))
def test_random_options_never_raise(opts, flags):
    opts = opts + b"\x00" * (-len(opts) % 4)
    parse_segment(_raw(opts, b"payload", flags))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 0xFFFF),
       st.binary(max_size=64), st.none() | st.integers(0, 0xFFFF),
       st.none() | st.integers(0, 14), st.booleans(),
       st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                max_size=3),
       st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)))
def test_build_parse_round_trip(sp, dp, seq, ack, flags, wnd, payload, mss, ws, sp_ok,
                                blocks, ts):
    seg = TCPSegment(sp, dp, seq, ack, flags, wnd, payload, mss=mss, wscale=ws,
                     sack_permitted=sp_ok, sack_blocks=tuple(blocks),
                     ts_val=None if ts is None else ts[0], ts_ecr=None if ts is None else ts[1])
    try:
        raw = build_segment(seg, SRC, DST)
    except ValueError:
        assume(False)                       # more than 40 octets of options
    assert parse_segment(raw, SRC, DST) == seg


def test_too_many_options_refused():
    with pytest.raises(ValueError):
        build_options(mss=1, wscale=1, ts_val=1, ts_ecr=1, sack_blocks=((1, 2),) * 3)
