"""Internet checksum (RFC 1071), pseudo-header sum, incremental update (RFC 1624)."""

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pyslirp._core import checksum as cck
from pyslirp._core.pure import checksum as pck

IMPLS = [pytest.param(cck, id="compiled"), pytest.param(pck, id="pure")]
u32 = st.integers(0, 0xFFFFFFFF)

# RFC 791-era example header (as printed in many references) with its checksum 0xB861.
IPV4_HEADER = bytes.fromhex("450000730000400040 11b861c0a80001c0a800c7".replace(" ", ""))


def reference_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1 in Python: 16-bit big-endian words, pad odd length, fold carries."""
    if len(data) % 2:
        data += b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("impl", IMPLS)
def test_rfc1071_numerical_example(impl) -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert impl.ones_complement_sum(data) == 0xDDF2
    assert impl.internet_checksum(data) == 0x220D
    assert impl.verify(data + b"\x22\x0d")


@pytest.mark.parametrize("impl", IMPLS)
def test_ipv4_header_example(impl) -> None:
    assert impl.verify(IPV4_HEADER)
    zeroed = IPV4_HEADER[:10] + b"\0\0" + IPV4_HEADER[12:]
    assert impl.internet_checksum(zeroed) == 0xB861


@pytest.mark.parametrize("impl", IMPLS)
def test_edges_and_types(impl) -> None:
    assert impl.internet_checksum(b"") == 0xFFFF
    assert impl.internet_checksum(b"\x01") == 0xFEFF  # odd octet is the high byte
    assert impl.internet_checksum(b"\xff\xff") == 0x0000
    data = bytes(range(255))
    want = impl.internet_checksum(data)
    assert impl.internet_checksum(bytearray(data)) == want
    assert impl.internet_checksum(memoryview(b"\0" + data)[1:]) == want
    with pytest.raises(ValueError):
        impl.internet_checksum(b"", -1)
    with pytest.raises(ValueError):
        impl.internet_checksum(b"", 1 << 32)
    with pytest.raises(TypeError):
        impl.internet_checksum("text")


@pytest.mark.parametrize("n", list(range(0, 40)) + [1499, 1500, 4096, 65535, 70001])
def test_lengths_and_carries(n: int) -> None:
    for fill in (b"\xff", b"\x80\x01\xfe"):
        data = (fill * (n // len(fill) + 1))[:n]
        for initial in (0, 0xFFFF, 0xFFFFFFFF):
            want = ~reference_sum(data, initial) & 0xFFFF
            assert cck.internet_checksum(data, initial) == want
            assert pck.internet_checksum(data, initial) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), u32)
def test_compiled_equals_pure_and_reference(data: bytes, initial: int) -> None:
    want = ~reference_sum(data, initial) & 0xFFFF
    assert cck.internet_checksum(data, initial) == want
    assert pck.internet_checksum(data, initial) == want
    assert cck.ones_complement_sum(data, initial) == pck.ones_complement_sum(data, initial)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=2, max_size=300), st.integers(0, 150), u32)
def test_checksum_verifies(data: bytes, at: int, initial: int) -> None:
    # Place the checksum at an even offset (a header field) and the receiver's check holds.
    at = (at * 2) % (len(data) - len(data) % 2)
    body = data[:at] + b"\0\0" + data[at + 2 :]
    c = cck.internet_checksum(body, initial)
    full = body[:at] + c.to_bytes(2, "big") + body[at + 2 :]
    assert cck.verify(full, initial) and pck.verify(full, initial)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> None:
    want = reference_sum(src + dst + bytes([0, proto]) + length.to_bytes(2, "big"))
    for impl in (cck, pck):
        s = impl.pseudo_header_sum(src, dst, proto, length)
        assert s <= 0xFFFFFFFF
        folded = s
        while folded >> 16:
            folded = (folded & 0xFFFF) + (folded >> 16)
        assert folded == want
        assert impl.pseudo_header_sum(int.from_bytes(src, "big"), int.from_bytes(dst, "big"), proto, length) == s


@pytest.mark.parametrize("impl", IMPLS)
def test_udp_checksum_with_pseudo_header(impl) -> None:
    src, dst = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
    payload = b"hello, world!"
    udp = struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload
    ph = impl.pseudo_header_sum(src, dst, 17, len(udp))
    c = impl.internet_checksum(udp, ph)
    sent = udp[:6] + c.to_bytes(2, "big") + udp[8:]
    assert impl.verify(sent, ph)
    assert c == ~reference_sum(src + dst + b"\x00\x11" + len(udp).to_bytes(2, "big") + udp) & 0xFFFF
    with pytest.raises(ValueError):
        impl.pseudo_header_sum(b"\0\0\0", dst, 17, 8)
    with pytest.raises(ValueError):
        impl.pseudo_header_sum(src, dst, 256, 8)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=80), st.integers(1, 40), st.integers(0, 0xFFFF))
def test_incremental_update_rfc1624(data: bytes, k: int, new_word: int) -> None:
    data = data[: len(data) // 2 * 2]
    k = k % (len(data) // 2 - 1) + 1 if len(data) >= 4 else 1
    # Word 0 holds the checksum; word k changes.
    body = b"\0\0" + data[2:]
    c = cck.internet_checksum(body)
    header = c.to_bytes(2, "big") + body[2:]
    old_word = int.from_bytes(header[2 * k : 2 * k + 2], "big")
    changed = header[: 2 * k] + new_word.to_bytes(2, "big") + header[2 * k + 2 :]
    # An all-zero body (never a real header: IPv4's version nibble, TCP/UDP ports) is the one
    # case where ones' complement -0 makes eqn. 3 give 0x0000 instead of 0xFFFF.
    assume(any(changed[2:]))
    for impl in (cck, pck):
        c2 = impl.checksum_update(c, old_word, new_word)
        assert impl.verify(c2.to_bytes(2, "big") + changed[2:])
        assert c2 == impl.internet_checksum(b"\0\0" + changed[2:])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=20), u32)
def test_incremental_update_of_an_address(header: bytes, new_addr: int) -> None:
    body = header[:10] + b"\0\0" + header[12:]
    c = cck.internet_checksum(body)
    old_addr = int.from_bytes(body[12:16], "big")
    changed = body[:12] + new_addr.to_bytes(4, "big") + body[16:]
    assume(any(changed))
    for impl in (cck, pck):
        c2 = impl.checksum_update32(c, old_addr, new_addr)
        assert impl.verify(changed[:10] + c2.to_bytes(2, "big") + changed[12:])
