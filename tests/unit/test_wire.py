"""Network-byte-order fields (pyslirp.net.wire): the values struct gives, at every offset, for the
extremes of each width; and out-of-range offsets raise as indexing does."""

from __future__ import annotations

import struct
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyslirp.net.wire import put16, put32, u16, u32


@given(st.binary(min_size=4, max_size=64), st.data())
def test_reads_match_struct(data: bytes, choice: st.DataObject) -> None:
    offset = choice.draw(st.integers(0, len(data) - 4))
    assert u16(data, offset) == struct.unpack_from("!H", data, offset)[0]
    assert u32(data, offset) == struct.unpack_from("!I", data, offset)[0]


@pytest.mark.parametrize(("put", "get", "fmt", "value"), [
    *((put16, u16, "!H", value) for value in (0, 1, 0x7FFF, 0x8000, 0xFFFF)),
    *((put32, u32, "!I", value) for value in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)),
])
def test_puts_round_trip(put: Callable[[bytearray, int, int], None], get: Callable[[bytes, int], int],
                         fmt: str, value: int) -> None:
    width = struct.calcsize(fmt)
    buf = bytearray(width + 2)
    put(buf, 1, value)
    assert bytes(buf) == b"\x00" + struct.pack(fmt, value) + b"\x00"
    assert get(bytes(buf), 1) == value


def test_puts_keep_the_low_bits() -> None:
    buf = bytearray(4)
    put16(buf, 0, 0x12345)
    assert u16(bytes(buf), 0) == 0x2345
    put32(buf, 0, 0x1_2345_6789)
    assert u32(bytes(buf), 0) == 0x2345_6789


@pytest.mark.parametrize("offset", [1, 3, 100])
def test_reading_past_the_end_raises(offset: int) -> None:
    with pytest.raises(IndexError):
        u32(b"\x00\x01\x02\x03", offset)
    with pytest.raises(IndexError):
        u16(b"\x00\x01\x02\x03", offset + 2)


def test_writing_past_the_end_raises() -> None:
    with pytest.raises(IndexError):
        put16(bytearray(2), 1, 0)
    with pytest.raises(IndexError):
        put32(bytearray(4), 1, 0)
