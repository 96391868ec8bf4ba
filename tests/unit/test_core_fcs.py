"""FCS-16 (RFC 1662 Appendix C): compiled vs pure twin, RFC/catalogue vectors, C reference."""

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyslirp._core import fcs as cfcs
from pyslirp._core.pure import fcs as pfcs

IMPLS = [pytest.param(cfcs, id="compiled"), pytest.param(pfcs, id="pure")]
GOOD = 0xF0B8

# An LCP Configure-Request as captured on a line (address, control, protocol, LCP packet)
# followed by its FCS, least significant octet first.
LCP_FRAME_WITH_FCS = bytes.fromhex("ff03c0210115001303 05c22381 0506356e4a35 07020802 2232".replace(" ", ""))


def _rev8(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def _rev16(v: int) -> int:
    return int(f"{v:016b}"[::-1], 2)


def reference_fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    """FCS-16 via binascii.crc_hqx (CRC-CCITT, MSB first): FCS-16 is the same CRC with the
    bits of every octet and of the register reflected."""
    return _rev16(binascii.crc_hqx(bytes(_rev8(b) for b in data), _rev16(fcs)))


def bitwise_fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    """The shift-register definition (RFC 1662 C.2 table generator, applied bit by bit)."""
    for b in data:
        fcs ^= b
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs


@pytest.mark.parametrize("impl", IMPLS)
def test_check_value(impl) -> None:
    # CRC-16/X-25 (= PPP FCS-16) catalogue check value: complemented FCS of "123456789".
    assert impl.fcs16(b"123456789") ^ 0xFFFF == 0x906E
    assert impl.fcs16(b"") == 0xFFFF
    assert impl.INIT == 0xFFFF and impl.GOOD == GOOD


@pytest.mark.parametrize("impl", IMPLS)
def test_lcp_frame_with_its_fcs_gives_good_value(impl) -> None:
    assert impl.fcs16(LCP_FRAME_WITH_FCS) == GOOD
    body = LCP_FRAME_WITH_FCS[:-2]
    assert (~impl.fcs16(body) & 0xFFFF).to_bytes(2, "little") == LCP_FRAME_WITH_FCS[-2:]


@pytest.mark.parametrize("impl", IMPLS)
def test_buffer_types(impl) -> None:
    data = bytes(range(256)) * 3
    want = impl.fcs16(data)
    assert impl.fcs16(bytearray(data)) == want
    assert impl.fcs16(memoryview(data)) == want
    assert impl.fcs16(memoryview(b"xx" + data)[2:]) == want
    with pytest.raises(TypeError):
        impl.fcs16("text")
    with pytest.raises(ValueError):
        impl.fcs16(b"", 0x10000)
    with pytest.raises(ValueError):
        impl.fcs16(b"", -1)


@pytest.mark.parametrize("n", list(range(0, 70)) + [255, 256, 257, 1500, 4096])
def test_all_lengths_match_bitwise_definition(n: int) -> None:
    data = bytes((i * 37 + n) & 0xFF for i in range(n))
    assert cfcs.fcs16(data) == pfcs.fcs16(data) == bitwise_fcs16(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700), st.integers(0, 0xFFFF))
def test_compiled_equals_pure_and_c_reference(data: bytes, init: int) -> None:
    want = pfcs.fcs16(data, init)
    assert cfcs.fcs16(data, init) == want
    assert reference_fcs16(data, init) == want


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_running_fcs_is_composable(data: bytes, cut: int) -> None:
    cut = min(cut, len(data))
    assert cfcs.fcs16(data[cut:], cfcs.fcs16(data[:cut])) == cfcs.fcs16(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_appended_fcs_gives_good_value(data: bytes) -> None:
    wire = data + (~cfcs.fcs16(data) & 0xFFFF).to_bytes(2, "little")
    assert cfcs.fcs16(wire) == GOOD
    assert pfcs.fcs16(wire) == GOOD
