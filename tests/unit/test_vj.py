"""Van Jacobson header compression (RFC 1144) — pyslirp.ppp.vj.

Packets are built by hand below (IPv4 + TCP with real checksums). Expected compressed encodings
are written out from RFC 1144 §3.2.3's rules, never computed with the module under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyslirp.ppp.protocols import PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP
from pyslirp.ppp.vj import (
    VJ_COMPRESSOR_COUNTERS,
    VJ_DECOMPRESSOR_COUNTERS,
    VJCompressor,
    VJDecompressor,
)

# --------------------------------------------------------------------------------------------
# Packet builders (independent of the module under test)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
A = bytes([10, 0, 0, 1])
B = bytes([10, 0, 0, 2])
C = bytes([192, 168, 7, 9])


def inet_checksum(data: bytes) -> int:
    """RFC 1071, the textbook way: sum 16-bit words, fold carries, complement."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(
    src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int = 0, tos: int = 0,
    ttl: int = 64, df: bool = True, mf: bool = False, frag_off: int = 0, options: bytes = b"",
) -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    flags_frag = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag_off
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident, flags_frag, ttl, proto,
        0, src, dst,
    ) + options
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:] + payload


def tcp_segment(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int = ACK,
    win: int = 8192, data: bytes = b"", *, urp: int = 0, topts: bytes = b"", ident: int = 0,
    tos: int = 0, ttl: int = 64, df: bool = True, ipopts: bytes = b"", reserved: int = 0,
) -> bytes:
    assert len(topts) % 4 == 0
    doff = 5 + len(topts) // 4
    hdr = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (doff << 4) | reserved,
        flags, win, 0, urp,
    ) + topts
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(hdr) + len(data))
    csum = inet_checksum(pseudo + hdr + data)
    seg = hdr[:16] + struct.pack("!H", csum) + hdr[18:] + data
    return ipv4(src, dst, 6, seg, ident=ident, tos=tos, ttl=ttl, df=df, options=ipopts)


def tcp_checksum_ok(pkt: bytes) -> bool:
    ihl4 = (pkt[0] & 15) * 4
    seg = pkt[ihl4:]
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    return inet_checksum(pseudo + seg) == 0


def tcp_csum_bytes(pkt: bytes) -> bytes:
    ihl4 = (pkt[0] & 15) * 4
    return pkt[ihl4 + 16:ihl4 + 18]


MSS_OPT = bytes([2, 4, 0x05, 0xB4])


def ts_opt(val: int, ecr: int) -> bytes:
    return bytes([1, 1, 8, 10]) + struct.pack("!II", val, ecr)


def sack_opt(left: int, right: int) -> bytes:
    return bytes([1, 1, 5, 10]) + struct.pack("!II", left, right)


IP_OPT_RR = bytes([7, 7, 4, 0, 0, 0, 0, 0])  # record route with one empty slot (8 bytes)


def pair(max_slot_id: int = 15, cid: bool = True) -> tuple[VJCompressor, VJDecompressor]:
    return VJCompressor(max_slot_id, cid), VJDecompressor(max_slot_id, cid)


def roundtrip(comp: VJCompressor, dec: VJDecompressor, pkt: bytes) -> tuple[int, bytes]:
    proto, payload = comp.compress(pkt)
    assert dec.decompress(proto, payload) == pkt
    return proto, payload


# --------------------------------------------------------------------------------------------
# The packet builders above


def test_builder_checksums_are_valid() -> None:
    pkt = tcp_segment(A, B, 1025, 23, 1000, 2000, ACK | PSH, 4096, b"a", ident=100)
    assert inet_checksum(pkt[:20]) == 0
    assert tcp_checksum_ok(pkt)


# --------------------------------------------------------------------------------------------
# Known-answer encodings (RFC 1144 §3.2.3), written out by hand


def telnet(seq: int, ack: int, flags: int, win: int, data: bytes, ident: int, urp: int = 0) -> bytes:
    return tcp_segment(A, B, 1025, 23, seq, ack, flags, win, data, ident=ident, urp=urp)


def test_uncompressed_tcp_carries_slot_in_protocol_byte() -> None:
    comp, dec = pair()
    p1 = telnet(1000, 2000, ACK | PSH, 4096, b"a", 100)
    proto, payload = comp.compress(p1)
    # §3.2.2 / slhc: the datagram as is, IP protocol byte replaced by the slot (first slot is 0).
    assert proto == PROTO_VJ_UNCOMP == 0x2F
    assert payload == p1[:9] + b"\x00" + p1[10:]
    assert dec.decompress(proto, payload) == p1


def test_known_answer_sequence_with_implicit_slot() -> None:
    comp, dec = pair(cid=True)
    p1 = telnet(1000, 2000, ACK | PSH, 4096, b"a", 100)
    roundtrip(comp, dec, p1)

    # Echoed keystroke: seq and ack both advance by the last data length (1) -> SPECIAL_I (SWU =
    # 0x0B) with P (0x10); slot omitted (same as last); checksum; data. ID +1 is implicit.
    p2 = telnet(1001, 2001, ACK | PSH, 4096, b"b", 101)
    assert roundtrip(comp, dec, p2) == (0x2D, b"\x1b" + tcp_csum_bytes(p2) + b"b")

    # Unidirectional data: only seq advances, by the last data length -> SPECIAL_D (SAWU = 0x0F).
    p3 = telnet(1002, 2001, ACK, 4096, b"cc", 102)
    assert roundtrip(comp, dec, p3) == (0x2D, b"\x0f" + tcp_csum_bytes(p3) + b"cc")

    # Window -96 (16-bit two's complement 0xFFA0, 3-byte form), ack +300 (3-byte form),
    # seq +2 (1 byte), ID +5 (I bit, 1 byte). Mask I|S|A|W = 0x2E; deltas in order W A S I.
    p4 = telnet(1004, 2301, ACK, 4000, b"", 107)
    assert roundtrip(comp, dec, p4) == (
        0x2D, b"\x2e" + tcp_csum_bytes(p4) + b"\x00\xff\xa0" + b"\x00\x01\x2c" + b"\x02" + b"\x05"
    )

    # Nothing changed but data follows a pure ACK (§3.2.3 case 0): compressed, mask = P only.
    p5 = telnet(1004, 2301, ACK | PSH, 4000, b"d", 108)
    assert roundtrip(comp, dec, p5) == (0x2D, b"\x10" + tcp_csum_bytes(p5) + b"d")

    # Urgent data: U bit, the urgent pointer itself (not a delta); 0 takes the 3-byte form.
    # seq +1 (S), ID +1 implicit. Mask P|S|U = 0x19; order U then S.
    p6 = telnet(1005, 2301, ACK | PSH | URG, 4000, b"x", 109, urp=0)
    assert roundtrip(comp, dec, p6) == (
        0x2D, b"\x19" + tcp_csum_bytes(p6) + b"\x00\x00\x00" + b"\x01" + b"x"
    )

    # After an urgent segment a plain S change must not use SPECIAL_D (it would leave URG set at
    # the receiver); explicit S delta instead: mask S = 0x08, delta 1.
    p7 = telnet(1006, 2301, ACK, 4000, b"y", 110)
    assert roundtrip(comp, dec, p7) == (0x2D, b"\x08" + tcp_csum_bytes(p7) + b"\x01" + b"y")

    # IP ID unchanged: I bit with delta 0 in the 3-byte form; seq +1 == last length -> SPECIAL_D.
    p8 = telnet(1007, 2301, ACK, 4000, b"z", 110)
    assert roundtrip(comp, dec, p8) == (
        0x2D, b"\x2f" + tcp_csum_bytes(p8) + b"\x00\x00\x00" + b"z"
    )

    # A retransmission (nothing changed, same length) goes uncompressed (§3.2.3 case 0).
    proto, payload = roundtrip(comp, dec, p8)
    assert proto == PROTO_VJ_UNCOMP and payload[9] == 0

    assert comp.counters()["compressed"] == 7
    assert comp.counters()["uncompressed"] == 2
    assert dec.counters()["compressed"] == 7
    assert dec.counters()["uncompressed"] == 2


def test_decodes_slhc_style_explicit_id_delta_on_wrap() -> None:
    # Linux slhc computes the ID delta without 16-bit wrap, so at 65535 -> 0 it sends the I bit
    # with an explicit delta of 1 where we would send nothing. Both must decode the same.
    dec = VJDecompressor(15, True)
    p1 = telnet(1000, 2000, ACK, 4096, b"a", 0xFFFF)
    assert dec.decompress(0x2F, p1[:9] + b"\x03" + p1[10:]) == p1  # slot 3
    p2 = telnet(1001, 2000, ACK, 4096, b"b", 0)
    frame = b"\x2f" + tcp_csum_bytes(p2) + b"\x01" + b"b"  # I | SPECIAL_D, ID delta 1
    assert dec.decompress(0x2D, frame) == p2
    # The SLIP type bit (0x80) is not part of PPP's change mask; tolerate it like slhc does.
    p3 = telnet(1002, 2000, ACK, 4096, b"c", 1)
    assert dec.decompress(0x2D, b"\x8f" + tcp_csum_bytes(p3) + b"c") == p3


def test_known_answer_explicit_slot_when_not_negotiated() -> None:
    comp, dec = pair(cid=False)
    roundtrip(comp, dec, telnet(1000, 2000, ACK | PSH, 4096, b"a", 100))
    p2 = telnet(1001, 2001, ACK | PSH, 4096, b"b", 101)
    # C bit (0x40) set and slot 0 present on every compressed packet.
    assert roundtrip(comp, dec, p2) == (0x2D, b"\x5b\x00" + tcp_csum_bytes(p2) + b"b")
    p3 = telnet(1002, 2002, ACK | PSH, 4096, b"c", 102)
    assert roundtrip(comp, dec, p3) == (0x2D, b"\x5b\x00" + tcp_csum_bytes(p3) + b"c")


def test_special_encoding_collision_goes_uncompressed() -> None:
    comp, dec = pair()
    roundtrip(comp, dec, telnet(1000, 2000, ACK, 4096, b"aaaa", 1))
    # Real changes S|W|U (== SPECIAL_I) cannot be encoded: send uncompressed.
    p = telnet(1010, 2000, ACK | URG, 5000, b"b", 2, urp=3)
    proto, _ = roundtrip(comp, dec, p)
    assert proto == PROTO_VJ_UNCOMP
    assert comp.counters()["uncompressed_special_collision"] == 1
    # S|A|W|U (== SPECIAL_D) likewise.
    p = telnet(1020, 2005, ACK | URG, 5001, b"b", 3, urp=3)
    proto, _ = roundtrip(comp, dec, p)
    assert proto == PROTO_VJ_UNCOMP
    assert comp.counters()["uncompressed_special_collision"] == 2


def test_special_i_needs_equal_deltas_equal_to_last_length() -> None:
    comp, dec = pair()
    roundtrip(comp, dec, telnet(1000, 2000, ACK, 4096, b"abc", 1))
    p = telnet(1003, 2002, ACK, 4096, b"x", 2)  # seq +3, ack +2: explicit S|A = 0x0C, A then S
    assert roundtrip(comp, dec, p) == (0x2D, b"\x0c" + tcp_csum_bytes(p) + b"\x02\x03" + b"x")


def test_large_and_backward_deltas_go_uncompressed() -> None:
    comp, dec = pair()
    roundtrip(comp, dec, telnet(100000, 2000, ACK, 4096, b"a", 1))
    for seq, ack in [(100000 + 70000, 2000), (100000, 2000 + 0x10000), (99000, 2000), (0, 1999)]:
        proto, _ = roundtrip(comp, dec, telnet(seq, ack, ACK, 4096, b"ab", 2))
        assert proto == PROTO_VJ_UNCOMP
    assert comp.counters()["uncompressed_large_delta"] == 4
    # 0xFFFF exactly still compresses (3-byte form).
    p = telnet(0xFFFF, 1999, ACK, 4096, b"a", 3)
    assert roundtrip(comp, dec, p) == (0x2D, b"\x08" + tcp_csum_bytes(p) + b"\x00\xff\xff" + b"a")


def test_sequence_wraparound_compresses() -> None:
    comp, dec = pair()
    roundtrip(comp, dec, telnet(0xFFFFFFF0, 0xFFFFFFFF, ACK, 4096, b"x" * 32, 65535))
    p = telnet(0x10, 0x4, ACK, 4096, b"y", 0)  # seq +32 == last length, ack +5, ID 65535 -> 0
    assert roundtrip(comp, dec, p) == (
        0x2D, b"\x0c" + tcp_csum_bytes(p) + b"\x05" + b"\x20" + b"y"
    )


def test_urgent_pointer_moving_without_urg_goes_uncompressed() -> None:
    comp, dec = pair()
    roundtrip(comp, dec, telnet(1, 1, ACK, 100, b"a", 1, urp=0))
    proto, _ = roundtrip(comp, dec, telnet(2, 1, ACK, 100, b"a", 2, urp=7))
    assert proto == PROTO_VJ_UNCOMP
    assert comp.counters()["uncompressed_urgent_pointer"] == 1


# --------------------------------------------------------------------------------------------
# What is not compressed


def test_non_tcp_fragments_and_control_segments_pass_as_ip() -> None:
    comp, dec = pair()
    udp = ipv4(A, B, 17, struct.pack("!HHHH", 53, 53, 12, 0) + b"dns!", ident=7)
    icmp = ipv4(A, B, 1, b"\x08\x00\x00\x00" + b"ping" * 8)
    frag_mf = ipv4(A, B, 6, tcp_segment(A, B, 1, 2, 3, 4)[20:], mf=True, df=False)
    frag_off = ipv4(A, B, 6, b"x" * 24, frag_off=185, df=False)
    syn = tcp_segment(A, B, 1025, 80, 1, 0, SYN, topts=MSS_OPT)
    synack = tcp_segment(B, A, 80, 1025, 9, 2, SYN | ACK, topts=MSS_OPT)
    fin = tcp_segment(A, B, 1025, 80, 2, 10, FIN | ACK)
    rst = tcp_segment(A, B, 1025, 80, 2, 10, RST | ACK)
    no_ack = tcp_segment(A, B, 1025, 80, 2, 10, PSH, data=b"x")
    runt = b"\x45\x00\x00\x10" + b"\x00" * 12
    short_tcp = ipv4(A, B, 6, b"\x00" * 10)
    bad_len = tcp_segment(A, B, 1025, 80, 2, 10, ACK, data=b"abc") + b"pad"
    not_v4 = b"\x60" + tcp_segment(A, B, 1025, 80, 2, 10, ACK, data=b"abc")[1:]
    cases = {
        "passed_ip_not_tcp": [udp, icmp],
        "passed_ip_fragment": [frag_mf, frag_off],
        "passed_ip_tcp_control": [syn, synack, fin, rst, no_ack],
        "passed_ip_malformed": [runt, short_tcp, bad_len, not_v4],
    }
    for reason, pkts in cases.items():
        for pkt in pkts:
            proto, payload = comp.compress(pkt)
            assert (proto, payload) == (PROTO_IP, pkt), reason
            assert dec.decompress(proto, payload) == pkt
        assert comp.counters()[reason] == len(pkts)
    assert comp.counters()["passed_ip"] == 13
    assert comp.counters()["compressed"] == comp.counters()["uncompressed"] == 0
    assert dec.counters()["passed_ip"] == 13


def test_fields_a_compressed_header_cannot_carry_force_uncompressed() -> None:
    comp, dec = pair()
    base = dict(src=A, dst=B, sport=5000, dport=22, ack=77, win=1000)
    seq = 1

    def send(**kw: object) -> int:
        nonlocal seq
        args = {**base, "seq": seq, "data": b"q", "ident": seq, **kw}
        seq += 1
        return roundtrip(comp, dec, tcp_segment(**args))[0]  # type: ignore[arg-type]

    assert send() == PROTO_VJ_UNCOMP  # new slot
    assert send() == PROTO_VJ_COMP
    for change in [
        {"tos": 0x02},  # ECN CE/ECT in the TOS byte
        {"ttl": 63},
        {"df": False},
        {"flags": ACK | ECE},
        {"flags": ACK | CWR},
        {"reserved": 0x01},  # NS / reserved bits beside the data offset
    ]:
        assert send(**change) == PROTO_VJ_UNCOMP, change
        base.update({k: v for k, v in change.items()})
        assert send() == PROTO_VJ_COMP, change
    assert comp.counters()["uncompressed_header_changed"] == 6


def test_tcp_options_unchanged_compress_changed_go_uncompressed() -> None:
    comp, dec = pair()
    ts = 1000
    seq = 1

    def send(topts: bytes, ipopts: bytes = b"") -> int:
        nonlocal seq
        p = tcp_segment(A, B, 40000, 443, seq, 5, ACK, 29200, b"data", topts=topts,
                        ipopts=ipopts, ident=seq)
        seq += 4
        return roundtrip(comp, dec, p)[0]

    # Timestamps that change on every segment (how Linux sends them): always uncompressed.
    for _ in range(5):
        ts += 1
        assert send(ts_opt(ts, 99)) == PROTO_VJ_UNCOMP
    # The same options on consecutive segments: compressed, rebuilt from the slot.
    assert send(ts_opt(ts, 99)) == PROTO_VJ_COMP
    assert send(ts_opt(ts, 99)) == PROTO_VJ_COMP
    # SACK blocks appear / change: uncompressed, then compressed while they stay.
    assert send(sack_opt(10, 20)) == PROTO_VJ_UNCOMP
    assert send(sack_opt(10, 20)) == PROTO_VJ_COMP
    assert send(sack_opt(10, 30)) == PROTO_VJ_UNCOMP
    assert send(b"") == PROTO_VJ_UNCOMP  # option length changes too
    assert send(b"") == PROTO_VJ_COMP
    # IP options: compressed while unchanged (RFC 1144 Appendix A, slhc), uncompressed if not.
    assert send(b"", IP_OPT_RR) == PROTO_VJ_UNCOMP
    assert send(b"", IP_OPT_RR) == PROTO_VJ_COMP
    rr2 = bytes([7, 7, 8, 10, 0, 0, 1, 0])
    assert send(b"", rr2) == PROTO_VJ_UNCOMP
    assert send(MSS_OPT, rr2) == PROTO_VJ_UNCOMP
    assert send(MSS_OPT, rr2) == PROTO_VJ_COMP
    c = comp.counters()
    assert c["uncompressed_options_changed"] == 7
    assert c["uncompressed_header_changed"] == 3  # data-offset / IHL changes
    assert c["uncompressed_new_slot"] == 1


# --------------------------------------------------------------------------------------------
# Slots: LRU reuse, implicit/explicit numbers, small Max-Slot-Id


def conn_packet(i: int, seq: int, ident: int, data: bytes = b"z") -> bytes:
    return tcp_segment(A, B, 2000 + i, 80, seq, 1, ACK, 512, data, ident=ident)


def test_slots_are_reused_least_recently_used_first() -> None:
    comp, dec = pair(max_slot_id=2)
    slots = {}
    for i in range(3):  # connections 0, 1, 2 take slots 0, 1, 2
        proto, payload = roundtrip(comp, dec, conn_packet(i, 100, 1))
        assert proto == PROTO_VJ_UNCOMP
        slots[i] = payload[9]
    assert slots == {0: 0, 1: 1, 2: 2}
    # Touch 0, so 1 is now the least recently used.
    assert roundtrip(comp, dec, conn_packet(0, 101, 2))[0] == PROTO_VJ_COMP
    proto, payload = roundtrip(comp, dec, conn_packet(3, 100, 1))
    assert (proto, payload[9]) == (PROTO_VJ_UNCOMP, 1)
    # 2 is now the oldest; 0 and 3 still compress.
    assert roundtrip(comp, dec, conn_packet(0, 102, 3))[0] == PROTO_VJ_COMP
    assert roundtrip(comp, dec, conn_packet(3, 101, 2))[0] == PROTO_VJ_COMP
    proto, payload = roundtrip(comp, dec, conn_packet(1, 101, 2))  # 1 evicted: new slot 2
    assert (proto, payload[9]) == (PROTO_VJ_UNCOMP, 2)
    assert comp.counters()["slot_reuses"] == 2


def test_single_slot_max_slot_id_zero() -> None:
    comp, dec = pair(max_slot_id=0)
    for n in range(1, 6):
        for i in range(3):
            proto, payload = roundtrip(comp, dec, conn_packet(i, 100 + n, n))
            assert proto == PROTO_VJ_UNCOMP and payload[9] == 0


def test_slot_number_sent_only_when_it_changes() -> None:
    comp, dec = pair(max_slot_id=3, cid=True)
    roundtrip(comp, dec, conn_packet(0, 100, 1))
    roundtrip(comp, dec, conn_packet(1, 100, 1))
    # Alternate: each switch carries C and the slot; a repeat on the same slot omits it.
    p = conn_packet(0, 101, 2)
    assert roundtrip(comp, dec, p)[1][:2] == b"\x4f\x00"  # C | SPECIAL_D, slot 0
    p = conn_packet(0, 102, 3)
    assert roundtrip(comp, dec, p)[1][:1] == b"\x0f"
    p = conn_packet(1, 101, 2)
    assert roundtrip(comp, dec, p)[1][:2] == b"\x4f\x01"
    # A plain-IP packet in between does not change the receiver's current slot.
    udp = ipv4(A, B, 17, b"12345678")
    assert comp.compress(udp) == (PROTO_IP, udp)
    p = conn_packet(1, 102, 3)
    assert roundtrip(comp, dec, p)[1][:1] == b"\x0f"


def test_decompressor_accepts_implicit_slot_even_if_not_negotiated() -> None:
    comp = VJCompressor(15, True)
    dec = VJDecompressor(15, False)
    roundtrip(comp, dec, conn_packet(0, 100, 1))
    proto, payload = roundtrip(comp, dec, conn_packet(0, 101, 2))
    assert payload[0] & 0x40 == 0
    assert dec.counters()["implicit_slot_unnegotiated"] == 1


@pytest.mark.parametrize("bad", [-1, 256])
def test_max_slot_id_range(bad: int) -> None:
    with pytest.raises(ValueError):
        VJCompressor(bad, True)
    with pytest.raises(ValueError):
        VJDecompressor(bad, True)


# --------------------------------------------------------------------------------------------
# Error recovery (§4)


def bulk(seq0: int, n: int, size: int = 100, sport: int = 3000, ident0: int = 1) -> list[bytes]:
    return [
        tcp_segment(A, B, sport, 80, seq0 + k * size, 1, ACK, 8192, bytes([k % 256]) * size,
                    ident=ident0 + k)
        for k in range(n)
    ]


def test_lost_frame_toss_until_uncompressed_resyncs() -> None:
    comp, dec = pair()
    pkts = bulk(5000, 12)
    frames = [comp.compress(p) for p in pkts]
    assert frames[0][0] == PROTO_VJ_UNCOMP
    assert all(f[0] == PROTO_VJ_COMP for f in frames[1:])
    for k in range(4):
        assert dec.decompress(*frames[k]) == pkts[k]
    # frames[4] is lost on the line; the link's deframer reports it.
    dec.toss()
    for k in range(5, 12):
        assert dec.decompress(*frames[k]) is None
    assert dec.counters()["tossed"] == 7
    assert dec.counters()["toss_requests"] == 1
    # The receiving TCP retransmits from the hole: seq goes backwards -> uncompressed -> resync.
    retx = tcp_segment(A, B, 3000, 80, 5400, 1, ACK, 8192, bytes([4]) * 100, ident=13)
    proto, payload = comp.compress(retx)
    assert proto == PROTO_VJ_UNCOMP
    assert dec.decompress(proto, payload) == retx
    for p in bulk(5500, 6, ident0=14):
        proto, payload = comp.compress(p)
        assert proto == PROTO_VJ_COMP
        assert dec.decompress(proto, payload) == p
    assert dec.counters()["tossed"] == 7


def test_explicit_slot_clears_toss_and_stale_slot_fails_tcp_checksum() -> None:
    # §4.3: a packet naming its slot ends tossing. If that slot missed an update, the rebuilt
    # header is wrong and the TCP checksum (always sent, §3.2.3) catches it at the end host.
    comp, dec = pair(cid=True)
    a = bulk(1000, 4, sport=3000)
    b = bulk(9000, 3, sport=3001)
    order = [a[0], b[0], a[1], a[2], b[1], a[3], b[2]]
    frames = [comp.compress(p) for p in order]
    for f, p in zip(frames[:3], order[:3]):
        assert dec.decompress(*f) == p
    # a[2] (implicit slot, follows a[1]) is lost.
    dec.toss()
    assert frames[3][1][0] & 0x40 == 0
    out = dec.decompress(*frames[4])  # b[1] names slot 1: resynchronises, b's state is intact
    assert out == order[4]
    out = dec.decompress(*frames[5])  # a[3] names slot 0, but slot 0 missed a[2]
    assert out is not None and out != order[5]
    assert not tcp_checksum_ok(out)
    assert dec.decompress(*frames[6]) == order[6]


def test_counters_hold_exactly_the_declared_keys() -> None:
    # Counting is a plain dict increment of a key made from the declaration: an undeclared key
    # raises KeyError, so the tests of each reason above check it is declared.
    assert set(VJCompressor(15, True).counters()) == VJ_COMPRESSOR_COUNTERS.all_keys()
    assert set(VJDecompressor(15, True).counters()) == VJ_DECOMPRESSOR_COUNTERS.all_keys()


def test_compressed_before_any_uncompressed_is_tossed() -> None:
    dec = VJDecompressor(15, True)
    assert dec.decompress(PROTO_VJ_COMP, b"\x0f\x12\x34data") is None
    assert dec.counters()["tossed"] == 1
    # Naming a slot never loaded is an error (slhc: "uninitialized").
    assert dec.decompress(PROTO_VJ_COMP, b"\x4f\x03\x12\x34data") is None
    assert dec.counters()["error_uninitialized_slot"] == 1


def test_decompressor_errors_are_counted_and_set_toss() -> None:
    comp, dec = pair(max_slot_id=3, cid=False)  # every compressed packet names its slot
    p0 = conn_packet(0, 100, 1)
    proto, unc = comp.compress(p0)
    assert dec.decompress(proto, unc) == p0

    def bad(protocol: int, payload: bytes, reason: str) -> None:
        before = dec.counters()
        assert dec.decompress(protocol, payload) is None
        after = dec.counters()
        assert after[reason] == before[reason] + 1, reason
        assert after["errors"] == before["errors"] + 1

    bad(PROTO_VJ_UNCOMP, unc[:9] + b"\x04" + unc[10:], "error_bad_slot")  # slot > 3
    bad(PROTO_VJ_UNCOMP, unc[:30], "error_runt")
    bad(PROTO_VJ_UNCOMP, unc[:-1], "error_bad_ip_header")  # shorter than total length
    bad(PROTO_VJ_UNCOMP, b"\x44" + unc[1:], "error_bad_ip_header")
    bad(PROTO_VJ_UNCOMP, b"\x65" + unc[1:], "error_bad_ip_header")
    bad(PROTO_VJ_UNCOMP, unc[:8] + b"\x3f" + unc[9:], "error_bad_ip_checksum")  # TTL
    bad(PROTO_VJ_COMP, b"\x40", "error_runt")
    bad(PROTO_VJ_COMP, b"\x40\x09\x00\x00", "error_bad_slot")
    bad(PROTO_VJ_COMP, b"\x40\x00\x00", "error_truncated")  # checksum cut short
    bad(PROTO_VJ_COMP, b"\x4e\x00\x12\x34\x00\x01", "error_truncated")  # W in 3-byte form
    bad(0x0057, b"\x60" + b"\x00" * 39, "error_unknown_protocol")
    # An error sets toss: the next implicit-slot packet is dropped...
    assert dec.decompress(PROTO_VJ_COMP, b"\x0f\x00\x00x") is None
    assert dec.counters()["tossed"] == 1
    # ...and the slot still decodes correctly once named again: errors never touched its state.
    p1 = conn_packet(0, 101, 2)
    proto, payload = comp.compress(p1)
    assert payload[0] & 0x40
    assert dec.decompress(proto, payload) == p1


def test_uncompressed_trailing_bytes_are_trimmed_to_total_length() -> None:
    comp, dec = pair()
    p = conn_packet(0, 1, 1)
    proto, payload = comp.compress(p)
    assert dec.decompress(proto, payload + b"\x00\x00") == p


# --------------------------------------------------------------------------------------------
# Property tests: long random conversations round-trip byte for byte


class _Conn:
    def __init__(self, i: int) -> None:
        self.src, self.dst = (A, B) if i % 3 else (B, C)
        if i % 2:
            self.src, self.dst = self.dst, self.src
        self.sport, self.dport = 1024 + i, 22 + (i % 4)
        self.seq = (i * 0x9E3779B9) & 0xFFFFFFFF
        self.ack = (i * 0x7F4A7C15) & 0xFFFFFFFF
        self.win = 16384
        self.ident = i * 1000
        self.last_len = 0
        self.tos = 0
        self.ttl = 64
        self.ts = i * 7
        self.topts = b""
        self.ipopts = b""
        self.urp = 0


# One step of a connection: (conn, seq move, ack move, window move, id move, data length, push,
# urgent, rare event, random value).
_step = st.tuples(
    st.integers(0, 11),
    st.sampled_from(["same", "last", "last", "last", "small", "big", "back"]),
    st.sampled_from(["same", "same", "seq", "seq", "small", "big", "back"]),
    st.sampled_from(["same", "same", "same", "same", "up", "down", "far"]),
    st.sampled_from(["one", "one", "one", "zero", "jump"]),
    st.sampled_from([0, 0, 1, 1, 2, 40, 255, 256, 536, 1460]),
    st.booleans(),
    st.sampled_from([False] * 9 + [True]),
    st.sampled_from(
        [None] * 40
        + ["tos", "ttl", "ts_on", "ts_tick", "opts_off", "sack", "ipopt", "udp", "frag", "fin",
           "syn", "ece", "urp_moves"]
    ),
    st.integers(0, 0xFFFFFFFF),
)


def _packets(steps: list[tuple], n_conns: int = 12) -> list[bytes]:
    conns: dict[int, _Conn] = {}
    out = []
    for ci, smove, amove, wmove, imove, dlen, push, urg, event, r in steps:
        ci %= n_conns
        c = conns.setdefault(ci, _Conn(ci))
        c.seq = {
            "same": c.seq, "last": c.seq + c.last_len, "small": c.seq + 1 + r % 300,
            "big": c.seq + 1 + r % 0x30000, "back": c.seq - 1 - r % 5000,
        }[smove] & 0xFFFFFFFF
        delta_s = 0 if smove == "same" else 1
        c.ack = {
            "same": c.ack, "seq": c.ack + (c.last_len if smove == "last" else delta_s),
            "small": c.ack + 1 + (r >> 8) % 1000, "big": c.ack + (r >> 4) % 0x30000,
            "back": c.ack - 1 - r % 100,
        }[amove] & 0xFFFFFFFF
        c.win = {
            "same": c.win, "up": c.win + r % 64, "down": c.win - r % 300, "far": r >> 16,
        }[wmove] & 0xFFFF
        c.ident = {"one": c.ident + 1, "zero": c.ident, "jump": c.ident + (r >> 3)}[imove] & 0xFFFF
        flags = ACK | (PSH if push else 0)
        urp = c.urp
        if urg:
            flags |= URG
            urp = c.urp = (r >> 5) % 2000
        if event == "tos":
            c.tos ^= 0x02
        elif event == "ttl":
            c.ttl = 64 if c.ttl != 64 else 128
        elif event == "ts_on":
            c.topts = ts_opt(c.ts, r)
        elif event == "ts_tick":
            c.ts += 1
            c.topts = ts_opt(c.ts, r)
        elif event == "opts_off":
            c.topts = b""
        elif event == "sack":
            c.topts = sack_opt(r, (r + 100) & 0xFFFFFFFF)
        elif event == "ipopt":
            c.ipopts = b"" if c.ipopts else IP_OPT_RR
        elif event == "ece":
            flags |= ECE
        elif event == "urp_moves":
            urp = c.urp = r % 100
        elif event == "fin":
            flags |= FIN
        elif event == "syn":
            flags = SYN | ACK
        data = bytes((r + k) & 0xFF for k in range(dlen))
        if event == "udp":
            out.append(ipv4(c.src, c.dst, 17, struct.pack("!HHHH", 1, 2, 8 + dlen, 0) + data,
                            ident=c.ident))
            continue
        pkt = tcp_segment(c.src, c.dst, c.sport, c.dport, c.seq, c.ack, flags, c.win, data,
                          urp=urp, topts=c.topts, ident=c.ident, tos=c.tos, ttl=c.ttl,
                          ipopts=c.ipopts)
        if event == "frag":
            pkt = ipv4(c.src, c.dst, 6, pkt[(pkt[0] & 15) * 4:], ident=c.ident, mf=True, df=False)
        out.append(pkt)
        c.last_len = dlen
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_slot_id=st.integers(0, 5),
    cid=st.booleans(),
    n_conns=st.integers(1, 9),
    steps=st.lists(_step, min_size=10, max_size=300),
)
def test_random_conversations_round_trip(max_slot_id: int, cid: bool, n_conns: int,
                                         steps: list) -> None:
    # Often more connections than slots (max_slot_id + 1), so slots are reused under LRU.
    comp, dec = pair(max_slot_id, cid)
    pkts = _packets(steps, n_conns)
    for pkt in pkts:
        proto, payload = comp.compress(pkt)
        assert proto in (PROTO_IP, PROTO_VJ_UNCOMP, PROTO_VJ_COMP)
        if proto == PROTO_VJ_COMP:
            assert len(payload) < len(pkt)
            assert payload[0] & 0x80 == 0
            assert cid or payload[0] & 0x40
        elif proto == PROTO_VJ_UNCOMP:
            assert payload[9] <= max_slot_id
        assert dec.decompress(proto, payload) == pkt
    cc, dc = comp.counters(), dec.counters()
    assert cc["compressed"] + cc["uncompressed"] + cc["passed_ip"] == len(pkts)
    for k in ("compressed", "uncompressed", "passed_ip"):
        assert cc[k] == dc[k]
    assert dc["errors"] == dc["tossed"] == 0


def test_long_interleaved_conversation_mostly_compresses() -> None:
    # Eight bulk/interactive connections over four slots, round-robin in bursts.
    comp, dec = pair(max_slot_id=3)
    total = 0
    for burst in range(40):
        for i in range(8):
            if (burst + i) % 2:
                continue
            for k in range(5):
                n = burst * 5 + k
                p = tcp_segment(A, B, 6000 + i, 80, 10 ** 6 * i + n * 512, 77 + burst, ACK,
                                8192, b"\xaa" * 512, ident=(n + i) & 0xFFFF)
                roundtrip(comp, dec, p)
                total += 1
    c = comp.counters()
    assert c["compressed"] + c["uncompressed"] == total
    assert c["compressed"] > c["uncompressed"]
    assert c["bytes_out"] < c["bytes_in"]


# --------------------------------------------------------------------------------------------
# Robustness: garbage never raises


@settings(max_examples=500, deadline=None)
@given(
    protocol=st.sampled_from([PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP, 0x0057]),
    frames=st.lists(st.binary(max_size=80), min_size=1, max_size=8),
    primed=st.booleans(),
    toss=st.booleans(),
    cid=st.booleans(),
)
def test_garbage_never_raises(protocol: int, frames: list[bytes], primed: bool, toss: bool,
                              cid: bool) -> None:
    comp, dec = pair(max_slot_id=2, cid=cid)
    if primed:
        for i in range(3):
            roundtrip(comp, dec, conn_packet(i, 100, 1))
    if toss:
        dec.toss()
    for f in frames:
        for proto in (protocol, PROTO_VJ_COMP):
            out = dec.decompress(proto, f)
            assert out is None or isinstance(out, bytes)
            if out is not None and proto != PROTO_IP:
                assert len(out) == struct.unpack_from("!H", out, 2)[0]
                assert inet_checksum(out[:(out[0] & 15) * 4]) == 0
    c = dec.counters()
    assert all(v >= 0 for v in c.values())


@settings(max_examples=300, deadline=None)
@given(
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 199), st.integers(1, 255)), max_size=4),
)
def test_damaged_real_frames_never_raise(cut: int, flips: list[tuple[int, int]]) -> None:
    comp, dec = pair(max_slot_id=1)
    pkts = [conn_packet(0, 100, 1), conn_packet(0, 101, 2), conn_packet(1, 1, 9, b"ab"),
            telnet(1000, 2000, ACK | URG, 100, b"x" * 50, 5, urp=3)]
    for p in pkts:
        proto, payload = comp.compress(p)
        damaged = bytearray(payload[:cut] if cut < len(payload) else payload)
        for pos, x in flips:
            if pos < len(damaged):
                damaged[pos] ^= x
        out = dec.decompress(proto, bytes(damaged))
        assert out is None or isinstance(out, bytes)
