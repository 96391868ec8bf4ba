"""pppd's text of control packets (pyslirp/ppp/describe.py): the lines pppd's ``debug`` option
prints for the same octets (formats from pppd's lcp_printpkt, ipcp_printpkt, upap_printpkt,
chap_print_pkt and format_packet), secrets never shown, and no input that raises."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyslirp.ppp.describe import describe_frame
from pyslirp.ppp.fsm import build_packet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ppp_link import CREDS, Pppd, Wire, auth_options  # noqa: E402

LCP, IPCP, PAP, CHAP, CCP = 0xC021, 0x8021, 0xC023, 0xC223, 0x80FD


def frame(protocol: int, code: int, ident: int, data: str = "", padding: str = "") -> bytes:
    """A frame as it crosses the line, address and control included: Code, Identifier, Length
    (from the Data) and Data given in hex."""
    return (b"\xff\x03" + protocol.to_bytes(2, "big") + build_packet(code, ident, bytes.fromhex(data))
            + bytes.fromhex(padding))


def raw(text: str) -> bytes:
    return bytes.fromhex(text)


PACKETS = [
    # LCP (RFC 1661 §5-§6)
    (frame(LCP, 1, 1, "0206 00000000 0506 5eed1234 0702 0802"),
     "[LCP ConfReq id=0x1 <asyncmap 0x0> <magic 0x5eed1234> <pcomp> <accomp>]"),
    (frame(LCP, 1, 2, "0104 05dc 0305 c22305 0206 000a0000"),
     "[LCP ConfReq id=0x2 <mru 1500> <auth chap MD5> <asyncmap 0xa0000>]"),
    (frame(LCP, 4, 3, "0304 c023 0305 c22381 0304 c227 0305 c22342"),
     "[LCP ConfRej id=0x3 <auth pap> <auth chap MS-v2> <auth eap> <auth chap 42>]"),
    (frame(LCP, 3, 4, "0104 0080"), "[LCP ConfNak id=0x4 <mru 128>]"),
    (frame(LCP, 2, 0x1F, "0408 c025 000003e8"), "[LCP ConfAck id=0x1f <quality lqr 00 00 03 e8>]"),
    (frame(LCP, 4, 5, "0d03 06 1104 064e 1202 1309 01 010203040506"),
     "[LCP ConfRej id=0x5 <callback CBCP> <mrru 1614> <ssnhf> <endpoint [local:01.02.03.04.05.06]>]"),
    (frame(LCP, 4, 6, "130b 04 0102030405060708 1307 02 0a000002 1309 03 001122334455 1302"),
     "[LCP ConfRej id=0x6 <endpoint [magic:01020304.05060708]> <endpoint [IP:10.0.0.2]>"
     " <endpoint [MAC:00:11:22:33:44:55]> < 13 02>]"),
    # A wrong size or an unknown type prints the whole option in hex; a Length running past the
    # list ends it, and the rest prints in hex.
    (frame(LCP, 1, 7, "0504 1234 2003 aa 0d02"), "[LCP ConfReq id=0x7 < 05 04 12 34> < 20 03 aa> < 0d 02>]"),
    (frame(LCP, 1, 8, "0104 05dc 0209 0000"), "[LCP ConfReq id=0x8 <mru 1500> 02 09 00 00]"),
    (frame(LCP, 5, 2, "55736572207265717565737420746f207465726d696e617465"),
     '[LCP TermReq id=0x2 "User request to terminate"]'),
    (frame(LCP, 5, 3, "00ff"), "[LCP TermReq id=0x3 00 ff]"),  # not text: hex
    (frame(LCP, 6, 2), "[LCP TermAck id=0x2]"),
    (frame(LCP, 7, 9, "0c01 0004"), "[LCP CodeRej id=0x9 0c 01 00 04]"),
    (frame(LCP, 8, 4, "80fd 0101 0004"), "[LCP ProtRej id=0x4 80 fd 01 01 00 04]"),
    (frame(LCP, 9, 0, "5eed1234"), "[LCP EchoReq id=0x0 magic=0x5eed1234]"),
    (frame(LCP, 10, 0, "a5b1c3d2 0102"), "[LCP EchoRep id=0x0 magic=0xa5b1c3d2 01 02]"),
    (frame(LCP, 11, 1, "00000000"), "[LCP DiscReq id=0x1 magic=0x0]"),
    (frame(LCP, 12, 1, "00000000 70707064"), '[LCP Ident id=0x1 magic=0x0 "pppd"]'),
    (frame(LCP, 13, 1, "00000000 00000e10"), "[LCP TimeRem id=0x1 magic=0x0 seconds=3600]"),
    (frame(LCP, 0x20, 1, "0102"), "[LCP code=0x20 id=0x1 01 02]"),
    (frame(LCP, 8, 5, "00" * 40), "[LCP ProtRej id=0x5" + " 00" * 32 + " ...]"),  # LCP shows 32 octets
    (frame(LCP, 2, 1, "0702", padding="0000"), "[LCP ConfAck id=0x1 <pcomp>] 00 00"),  # past Length
    (raw("ff03c021 010100ff 0102"), "[LCP] 01 01 00 ff 01 02"),  # Length past the frame
    (raw("c021 0101 0004"), "[LCP ConfReq id=0x1]"),  # address and control compressed
    # IPCP (RFC 1332, RFC 1877)
    (frame(IPCP, 1, 1, "0206 002d 0f01 0306 00000000 8106 00000000 8306 00000000"),
     "[IPCP ConfReq id=0x1 <compress VJ 0f 01> <addr 0.0.0.0> <ms-dns1 0.0.0.0> <ms-dns2 0.0.0.0>]"),
    (frame(IPCP, 3, 1, "0306 0a000002 8106 0a000001 8306 0a000001"),
     "[IPCP ConfNak id=0x1 <addr 10.0.0.2> <ms-dns1 10.0.0.1> <ms-dns2 10.0.0.1>]"),
    (frame(IPCP, 4, 2, "8206 00000000 8406 00000000 0204 0037 010a 0a000002 0a000001"),
     "[IPCP ConfRej id=0x2 <ms-wins 0.0.0.0> <ms-wins 0.0.0.0> <compress old-VJ> <addrs 10.0.0.2 10.0.0.1>]"),
    (frame(IPCP, 4, 3, "020a 0061 000f 0000 0000 0303 0a"),
     "[IPCP ConfRej id=0x3 <compress 0x61 00 0f 00 00 00 00> < 03 03 0a>]"),
    (frame(IPCP, 5, 4, "646f6e65"), '[IPCP TermReq id=0x4 "done"]'),
    (frame(IPCP, 8, 4, "00" * 40), "[IPCP code=0x8 id=0x4" + " 00" * 40 + "]"),  # IPCP shows all
    # PAP (RFC 1334 §2)
    (frame(PAP, 1, 1, "05616c696365 0773336372657421"), '[PAP AuthReq id=0x1 user="alice" password=<hidden>]'),
    (frame(PAP, 2, 1, "084c6f67696e206f6b"), '[PAP AuthAck id=0x1 "Login ok"]'),
    (frame(PAP, 3, 2, "00"), '[PAP AuthNak id=0x2 ""]'),
    (frame(PAP, 1, 3, "05616c696365 2073336372"), "[PAP AuthReq id=0x3 <11 bytes hidden>]"),  # password cut
    # CHAP (RFC 1994 §4)
    (frame(CHAP, 1, 1, "10 00112233445566778899aabbccddeeff 7079736c697270"),
     '[CHAP Challenge id=0x1 <00112233445566778899aabbccddeeff>, name = "pyslirp"]'),
    (frame(CHAP, 2, 1, "10 0123456789abcdeffedcba9876543210 616c696365"),
     '[CHAP Response id=0x1 <hidden 16 bytes>, name = "alice"]'),
    (frame(CHAP, 3, 1, "57656c636f6d65"), '[CHAP Success id=0x1 "Welcome"]'),
    (frame(CHAP, 4, 2), '[CHAP Failure id=0x2 ""]'),
    (frame(CHAP, 2, 3, "20 0102"), "[CHAP Response id=0x3]"),  # Value-Size past the packet
    # pppd's quoting: printable ASCII as is, quote and backslash escaped, the rest as escapes
    (frame(CHAP, 4, 3, '22 5c 0a 0d 09 ff 41'), r'[CHAP Failure id=0x3 "\"\\\n\r\t\377A"]'),
    # Another control protocol: its octets in hex, as pppd shows one it does not know
    (frame(CCP, 1, 1, "1a04 7800"), "[proto=0x80fd] 01 01 00 08 1a 04 78 00"),
]


@pytest.mark.parametrize(("octets", "expected"), PACKETS, ids=[line for _, line in PACKETS])
def test_control_packets_read_as_pppd_prints_them(octets: bytes, expected: str) -> None:
    assert describe_frame(octets) == expected


@pytest.mark.parametrize("octets", [raw("21 4500"), raw("ff03 0021 4500"), raw("2d 0102"), raw("ff03 002f"),
                                    raw("ff03 c0"), b""])
def test_data_and_runt_frames_are_not_described(octets: bytes) -> None:
    assert describe_frame(octets) is None


PASSWORD = b"hunter2-SECRET"


def shown_forms(secret: bytes) -> list[str]:
    """How octets could leak into a line: as text, as hex either way pppd writes it."""
    return [secret[:6].decode("latin-1"), secret[:4].hex(), " ".join(f"{b:02x}" for b in secret[:4])]


@given(cut=st.integers(0, 40), extra=st.binary(max_size=8), wlen=st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_a_pap_password_never_shows_however_the_packet_is_cut(cut: int, extra: bytes, wlen: int) -> None:
    # Well formed, a Password-Length that lies, a Length that cuts the password, trailing octets.
    data = b"\x05alice" + bytes((wlen,)) + PASSWORD + extra
    packet = bytes((1, 1)) + (4 + min(cut, len(data))).to_bytes(2, "big") + data
    text = describe_frame(b"\xff\x03\xc0\x23" + packet)
    assert text is not None and text.startswith("[PAP")
    for form in shown_forms(PASSWORD):
        assert form not in text


@given(cut=st.integers(0, 40), vlen=st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_a_chap_response_value_never_shows(cut: int, vlen: int) -> None:
    digest = hashlib.md5(b"\x01" + PASSWORD + bytes(16)).digest()
    data = bytes((vlen,)) + digest + b"alice"
    packet = bytes((2, 1)) + (4 + min(cut, len(data))).to_bytes(2, "big") + data
    text = describe_frame(b"\xff\x03\xc2\x23" + packet)
    assert text is not None
    for form in shown_forms(digest):
        assert form not in text


class RecordingPppd(Pppd):
    """The scripted client, describing every frame: ``sent`` by us, ``rcvd`` from it."""

    def __init__(self, **options: object) -> None:
        self.lines: list[str] = []
        super().__init__(**options)  # type: ignore[arg-type]

    def receive(self, frame: bytes, accm: int) -> None:
        self.lines.append(f"sent {describe_frame(frame)}")
        super().receive(frame, accm)

    def take(self) -> list[bytes]:
        frames = super().take()
        self.lines += [f"rcvd {describe_frame(f)}" for f in frames]
        return frames


@pytest.mark.parametrize("method", ["pap", "chap"])
def test_a_login_reads_as_pppd_logs_it_without_the_secret(method: str) -> None:
    client = RecordingPppd(user="alice", password=CREDS["alice"])
    Wire(auth_options(method), client).dial()
    text = "\n".join(client.lines)
    if method == "pap":
        assert any(line.startswith("rcvd [PAP AuthReq id=") and line.endswith(' user="alice" password=<hidden>]')
                   for line in client.lines)
        assert any(line.startswith("sent [PAP AuthAck id=") for line in client.lines)
    else:
        assert any(line.startswith("sent [CHAP Challenge id=") and line.endswith(', name = "pyslirp"]')
                   for line in client.lines)
        assert any(line.startswith("rcvd [CHAP Response id=") and line.endswith('<hidden 16 bytes>, name = "alice"]')
                   for line in client.lines)
        assert any(line.startswith("sent [CHAP Success id=") for line in client.lines)
    assert "sent [LCP ConfReq id=0x1" in text and "rcvd [IPCP ConfAck" in text
    for form in shown_forms(CREDS["alice"].encode()):
        assert form not in text


@settings(max_examples=2000, deadline=None)
@given(protocol=st.sampled_from([LCP, IPCP, PAP, CHAP, CCP]), body=st.binary(max_size=80), acfc=st.booleans())
def test_any_octets_describe_without_raising(protocol: int, body: bytes, acfc: bool) -> None:
    text = describe_frame((b"" if acfc else b"\xff\x03") + protocol.to_bytes(2, "big") + body)
    assert text is not None and text.startswith("[") and "]" in text


@settings(max_examples=500, deadline=None)
@given(code=st.integers(0, 15), options=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=12)), max_size=6))
def test_any_option_list_describes_without_raising(code: int, options: list[tuple[int, bytes]]) -> None:
    data = b"".join(bytes((kind, len(value) + 2)) + value for kind, value in options)
    for protocol in (LCP, IPCP):
        text = describe_frame(b"\xff\x03" + protocol.to_bytes(2, "big") + build_packet(code, 1, data))
        assert text is not None and text.endswith("]")
