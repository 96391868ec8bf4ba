"""Van Jacobson TCP/IP header compression (RFC 1144) for PPP (RFC 1332 §3.2).

Sans-IO: bytes in, bytes out, no clock. One ``VJCompressor`` per link for what we send (sized by
the peer's Max-Slot-Id and Comp-Slot-Id), one ``VJDecompressor`` for what we receive (sized by
ours).

Theory of operation
-------------------
Both ends keep, per *slot* (RFC 1144 "connection state"), a copy of the last TCP/IP header sent on
that connection. The compressor sends one of three PPP protocols:

* ``0x0021`` IP: not compressible (not TCP, fragment, runt, SYN/FIN/RST or no ACK — §3.2.3);
  state is not touched.
* ``0x002F`` uncompressed TCP: the datagram unchanged except the IP protocol byte, which carries
  the slot number (§3.2.3). Both ends (re)load the slot from it. The IP header checksum is left as
  computed for protocol 6; the receiver restores the 6 and checks it.
* ``0x002D`` compressed TCP (§3.2.2): change mask ``C I P S A W U`` (0x40 … 0x01), the slot
  number if C, the TCP checksum (always, 2 bytes), then the deltas in the order urgent, window,
  ack, seq, IP ID, then the TCP data. A delta is one byte 1..255, or 0 followed by 16 bits.

Everything not carried by a compressed packet must equal the slot's saved header: version, IHL,
TOS, DF/flags, TTL, IP options, TCP data offset, TCP flags other than PSH and URG, and TCP options.
If any differ the packet goes uncompressed. This is what RFC 1144 Appendix A and Linux slhc do
(both compress with IP options when they are unchanged); we are slightly stricter than slhc by
also checking the TCP flag bits it ignores (ECE/CWR), and by not using the special encodings
right after an URG segment (they would leave URG set at the receiver), so that a round trip is
always byte-exact. Slots are taken in order 0, 1, 2, … and then reused least recently used
first, as slhc does. In PPP the first byte of a compressed packet is the change mask; its 0x80
bit (the SLIP type bit) is never sent and is ignored on receipt.

TCP timestamps (RFC 7323) change on every segment, so a connection that negotiated them is sent
uncompressed on almost every segment — by slhc as by us. Our own TCP should not offer timestamps
on a VJ-compressed link.

Error recovery (§4.2): a damaged frame is reported by the link through ``toss()``; compressed
packets without an explicit slot are then discarded until an uncompressed packet or one with the
C bit re-establishes where we are. A stale slot decoded after that yields a bad TCP checksum, which
the receiving TCP drops; its retransmission goes uncompressed ("nothing changed", §3.2.3) and
repairs the slot.
"""

from __future__ import annotations

from pyslirp._core.checksum import internet_checksum
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.net.wire import put16, put32, u16, u32
from pyslirp.ppp.protocols import PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP

__all__ = [
    "VJCompressor",
    "VJDecompressor",
    "VJ_COMPRESSOR_COUNTERS",
    "VJ_DECOMPRESSOR_COUNTERS",
]

# Change mask bits (RFC 1144 §3.2.2, Appendix A.1)
NEW_C = 0x40
NEW_I = 0x20
PUSH_BIT = 0x10
NEW_S = 0x08
NEW_A = 0x04
NEW_W = 0x02
NEW_U = 0x01
SPECIALS_MASK = NEW_S | NEW_A | NEW_W | NEW_U
SPECIAL_I = NEW_S | NEW_W | NEW_U  # echoed interactive traffic: seq and ack += last data length
SPECIAL_D = NEW_S | NEW_A | NEW_W | NEW_U  # unidirectional data: seq += last data length

# TCP flags
_FIN, _SYN, _RST, _PSH, _ACK, _URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_FLAGS_FIXED = 0xFF & ~(_PSH | _URG)  # flag bits a compressed packet cannot change

_IPPROTO_TCP = 6
_MASK32 = 0xFFFFFFFF  # sequence numbers are 32 bits

_SLOT_BYTE = [bytes((i,)) for i in range(256)]
_PROTO_TCP_BYTE = bytes((_IPPROTO_TCP,))

# The counts both directions keep (one spec each, so the link's tx and rx sets name them alike).
_COMPRESSED = CounterSpec("compressed", "TCP/IP datagrams carried with a compressed header (§3.2.2)")
_UNCOMPRESSED = CounterSpec("uncompressed", "TCP/IP datagrams carried whole, (re)loading a slot (§3.2.3)")
_PASSED_IP = CounterSpec("passed_ip", "datagrams carried as plain IP (protocol 0x0021)")

#: The keys of :meth:`VJCompressor.counters`.
VJ_COMPRESSOR_COUNTERS = CounterSet("vj_compressor", [
    _COMPRESSED,
    _UNCOMPRESSED,
    CounterSpec(
        "uncompressed_reasons", "TCP/IP datagrams sent uncompressed, by why (§3.2.3)", prefix="uncompressed_",
        reasons=("new_slot", "header_changed", "options_changed", "urgent_pointer", "large_delta", "no_change",
                 "special_collision"),
    ),
    _PASSED_IP,
    CounterSpec("passed_ip_reasons", "datagrams sent as plain IP, by why (§3.2.3)", prefix="passed_ip_",
                reasons=("not_tcp", "fragment", "tcp_control", "malformed")),
    CounterSpec("slot_reuses", "slots taken from the least recently used connection (§3.2.3)"),
    CounterSpec("bytes_in", "bytes of datagrams given to the compressor", unit="bytes"),
    CounterSpec("bytes_out", "bytes of what it made of them", unit="bytes"),
])

#: The keys of :meth:`VJDecompressor.counters`.
VJ_DECOMPRESSOR_COUNTERS = CounterSet("vj_decompressor", [
    _COMPRESSED,
    _UNCOMPRESSED,
    _PASSED_IP,
    CounterSpec("errors", "packets that could not be decoded (each sets the toss flag, §4.2)"),
    CounterSpec(
        "decode_errors", "packets that could not be decoded, by why", prefix="error_",
        reasons=("runt", "bad_slot", "uninitialized_slot", "truncated", "bad_ip_header", "bad_ip_checksum",
                 "too_long", "unknown_protocol"),
    ),
    CounterSpec("tossed", "implicit-slot packets discarded until the next explicit slot (§4.2)"),
    CounterSpec("toss_requests", "damaged frames the link reported (§4.2)"),
    CounterSpec("implicit_slot_unnegotiated", "packets that omitted the slot number without Comp-Slot-Id agreed"),
])


def _encode(out: bytearray, n: int) -> None:
    """Append a delta: one byte for 1..255, else 0 then 16 bits big-endian (RFC 1144 §3.2.2)."""
    if 0 < n < 256:
        out.append(n)
    else:
        out.append(0)
        out.append(n >> 8 & 0xFF)
        out.append(n & 0xFF)


def _decode(p: bytes, pos: int) -> tuple[int, int]:
    """Read a delta at ``pos``; raises IndexError if the frame ends inside it."""
    b = p[pos]
    if b:
        return b, pos + 1
    return (p[pos + 1] << 8) | p[pos + 2], pos + 3


class _TxSlot:
    """Compressor copy of the last header sent on one connection."""

    __slots__ = (
        "slot", "vihl", "tos", "frag", "ttl", "ipopt", "offb", "flags", "tcpopt",
        "tot_len", "id", "seq", "ack", "win", "urp", "hlen",
    )

    def __init__(self, slot: int) -> None:
        self.slot = slot


class VJCompressor:
    """RFC 1144 compressor for datagrams we send.

    ``max_slot_id``: the peer's Max-Slot-Id (it has ``max_slot_id + 1`` slots).
    ``compress_slot_id``: the peer's Comp-Slot-Id — whether we may omit the slot number when it
    is the same as in the previous compressed/uncompressed TCP packet.
    """

    def __init__(self, max_slot_id: int, compress_slot_id: bool) -> None:
        if not 0 <= max_slot_id <= 255:
            raise ValueError(f"max_slot_id must be 0..255, not {max_slot_id}")
        self.max_slot_id = max_slot_id
        self.compress_slot_id = bool(compress_slot_id)
        # Connection key -> slot, least recently used first (RFC 1144 §3.2.3: LRU reuse): a dict
        # keeps insertion order, and a slot used is taken out and put back at the end.
        self._lru: dict[tuple[int, int, int], _TxSlot] = {}
        self._last_slot = -1  # slot of the last VJ packet sent, for implicit slot numbers
        self._c: dict[str, int] = dict.fromkeys(sorted(VJ_COMPRESSOR_COUNTERS.all_keys()), 0)

    def counters(self) -> dict[str, int]:
        return dict(self._c)

    def _pass_ip(self, packet: bytes, reason: str) -> tuple[int, bytes]:
        c = self._c
        c["passed_ip"] += 1
        c[reason] += 1
        n = len(packet)
        c["bytes_in"] += n
        c["bytes_out"] += n
        return PROTO_IP, packet

    def compress(self, packet: bytes) -> tuple[int, bytes]:
        """Return ``(ppp_protocol, payload)`` for one IPv4 datagram."""
        data = packet if type(packet) is bytes else bytes(packet)
        n = len(data)
        if n < 40:  # shorter than IP + TCP fixed headers: nothing to gain
            if n >= 20 and data[9] != _IPPROTO_TCP:
                return self._pass_ip(data, "passed_ip_not_tcp")
            return self._pass_ip(data, "passed_ip_malformed")
        if data[9] != _IPPROTO_TCP:
            return self._pass_ip(data, "passed_ip_not_tcp")
        # The header fields, read in place (wire.py)
        vihl = data[0]
        tot_len = u16(data, 2)
        ihl4 = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl4 < 20 or tot_len != n or n < ihl4 + 20:
            return self._pass_ip(data, "passed_ip_malformed")
        frag = u16(data, 6)
        if frag & 0x3FFF:  # MF or a fragment offset (§3.2.3: only whole datagrams)
            return self._pass_ip(data, "passed_ip_fragment")
        offb = data[ihl4 + 12]
        flags = data[ihl4 + 13]
        hlen = ihl4 + ((offb >> 4) << 2)
        if hlen < ihl4 + 20 or hlen > n:
            return self._pass_ip(data, "passed_ip_malformed")
        # §3.2.3: SYN, FIN, RST or no ACK -> connection setup/teardown, sent as plain IP.
        if flags & (_SYN | _FIN | _RST) or not flags & _ACK:
            return self._pass_ip(data, "passed_ip_tcp_control")

        c = self._c
        c["bytes_in"] += n
        tos = data[1]
        ip_id = u16(data, 4)
        ttl = data[8]
        seq = u32(data, ihl4 + 4)
        ack = u32(data, ihl4 + 8)
        win = u16(data, ihl4 + 14)
        urp = u16(data, ihl4 + 18)
        key = (u32(data, 12), u32(data, 16), u32(data, ihl4))  # addresses, ports
        lru = self._lru
        cs = lru.pop(key, None)
        if cs is None:
            # §3.2.3: a new connection takes the least recently used slot and goes uncompressed.
            if len(lru) <= self.max_slot_id:
                cs = _TxSlot(len(lru))
            else:
                cs = lru.pop(next(iter(lru)))
                c["slot_reuses"] += 1
            lru[key] = cs
            result: bytes | str = "uncompressed_new_slot"
        else:
            lru[key] = cs  # now the most recently used
            if (
                vihl != cs.vihl or tos != cs.tos or frag != cs.frag or ttl != cs.ttl
                or offb != cs.offb or (flags ^ cs.flags) & _FLAGS_FIXED
            ):
                result = "uncompressed_header_changed"
            elif (ihl4 > 20 and data[20:ihl4] != cs.ipopt) or (
                hlen > ihl4 + 20 and data[ihl4 + 20:hlen] != cs.tcpopt
            ):
                result = "uncompressed_options_changed"
            else:
                result = self._compress_tcp(
                    data, cs, hlen, tot_len, ip_id, seq, ack, flags, win, urp, ihl4
                )
                if type(result) is bytes:
                    c["compressed"] += 1
                    c["bytes_out"] += len(result)
                    return PROTO_VJ_COMP, result

        # §3.2.3 uncompressed TCP: (re)load the slot; send the datagram with the slot number in
        # the IP protocol field.
        cs.vihl, cs.tos, cs.frag, cs.ttl, cs.offb, cs.hlen = vihl, tos, frag, ttl, offb, hlen
        cs.ipopt = data[20:ihl4]
        cs.tcpopt = data[ihl4 + 20:hlen]
        cs.tot_len, cs.id, cs.seq, cs.ack = tot_len, ip_id, seq, ack
        cs.win, cs.urp, cs.flags = win, urp, flags
        self._last_slot = cs.slot
        c["uncompressed"] += 1
        c[result] += 1  # type: ignore[index]
        c["bytes_out"] += n
        return PROTO_VJ_UNCOMP, data[:9] + _SLOT_BYTE[cs.slot] + data[10:]

    def _compress_tcp(
        self, packet: bytes, cs: _TxSlot, hlen: int, tot_len: int, ip_id: int,
        seq: int, ack: int, flags: int, win: int, urp: int, ihl4: int,
    ) -> bytes | str:
        """§3.2.3: the compressed frame, or the counter name of why it must go uncompressed.

        The slot is updated only when a compressed frame is returned.
        """
        out = bytearray(4)  # mask, slot, TCP checksum: filled in at the end; deltas follow
        changes = 0
        # Deltas in the order the receiver reads them: U, W, A, S (then I).
        if flags & _URG:
            _encode(out, urp)  # the pointer itself, not a delta
            changes = NEW_U
        elif urp != cs.urp:
            return "uncompressed_urgent_pointer"  # URG clear but the pointer moved (RFC 793 allows)
        d = (win - cs.win) & 0xFFFF  # the window may shrink: a 16-bit two's complement delta
        if d:
            _encode(out, d)
            changes |= NEW_W
        delta_a = (ack - cs.ack) & _MASK32
        if delta_a:
            if delta_a > 0xFFFF:  # includes acks going backwards
                return "uncompressed_large_delta"
            _encode(out, delta_a)
            changes |= NEW_A
        delta_s = (seq - cs.seq) & _MASK32
        if delta_s:
            if delta_s > 0xFFFF:  # includes retransmissions from before the saved segment
                return "uncompressed_large_delta"
            _encode(out, delta_s)
            changes |= NEW_S

        last_data = cs.tot_len - hlen  # data length of the previous segment in this slot
        if changes == 0:
            # Data after a pure ACK (interactive traffic) goes compressed; anything else with
            # nothing changed is a retransmission or window probe: resend the full header.
            if tot_len == cs.tot_len or last_data != 0:
                return "uncompressed_no_change"
        elif changes == SPECIAL_I or changes == SPECIAL_D:
            return "uncompressed_special_collision"  # real changes that look like a special case
        elif cs.flags & _URG:
            # The special encodings leave URG as it was at the receiver: after an urgent
            # segment keep the explicit deltas, whose decoding clears URG. (slhc does not.)
            pass
        elif changes == NEW_S | NEW_A:
            if delta_s == delta_a == last_data:
                changes = SPECIAL_I  # echoed interactive traffic
                del out[4:]
        elif changes == NEW_S:
            if delta_s == last_data:
                changes = SPECIAL_D  # unidirectional data
                del out[4:]

        d = (ip_id - cs.id) & 0xFFFF
        if d != 1:
            _encode(out, d)
            changes |= NEW_I
        if flags & _PSH:
            changes |= PUSH_BIT

        cs.tot_len, cs.id, cs.seq, cs.ack = tot_len, ip_id, seq, ack
        cs.win, cs.urp, cs.flags = win, urp, flags
        out[2] = packet[ihl4 + 16]  # the TCP checksum is always sent
        out[3] = packet[ihl4 + 17]
        slot = cs.slot
        if self.compress_slot_id and slot == self._last_slot:
            out[1] = changes
            del out[0]
        else:
            out[0] = changes | NEW_C
            out[1] = slot
            self._last_slot = slot
        return bytes(out) + packet[hlen:]


class _RxSlot:
    """Decompressor copy of the last header received on one slot."""

    __slots__ = ("hdr", "ihl4", "hlen", "tot_len", "id", "seq", "ack", "offb", "flags",
                 "win", "urp")


class VJDecompressor:
    """RFC 1144 decompressor for frames we receive.

    ``max_slot_id``: our Max-Slot-Id as acknowledged by the peer (we keep ``max_slot_id + 1``
    slots). ``compress_slot_id``: whether we allowed the peer to omit slot numbers; a peer that
    omits them anyway is accepted (as slhc does) and counted as ``implicit_slot_unnegotiated``.
    """

    def __init__(self, max_slot_id: int, compress_slot_id: bool) -> None:
        if not 0 <= max_slot_id <= 255:
            raise ValueError(f"max_slot_id must be 0..255, not {max_slot_id}")
        self.max_slot_id = max_slot_id
        self.compress_slot_id = bool(compress_slot_id)
        self._slots: list[_RxSlot | None] = [None] * (max_slot_id + 1)
        self._current = -1
        # §4.2: until a slot is named explicitly, implicit-slot packets cannot be decoded.
        self._toss = True
        self._c: dict[str, int] = dict.fromkeys(sorted(VJ_DECOMPRESSOR_COUNTERS.all_keys()), 0)

    def counters(self) -> dict[str, int]:
        return dict(self._c)

    def toss(self) -> None:
        """The link lost or damaged a frame (§4.2): drop implicit-slot packets until resync."""
        self._toss = True
        self._c["toss_requests"] += 1

    def _error(self, reason: str) -> None:
        # §4.2 / Appendix A.3 "bad:": every decoding error also sets the toss flag.
        self._toss = True
        c = self._c
        c["errors"] += 1
        c[reason] += 1
        return None

    def decompress(self, protocol: int, payload: bytes) -> bytes | None:
        """Return the IPv4 datagram carried by a PPP frame, or None if it must be dropped."""
        data = payload if type(payload) is bytes else bytes(payload)
        if protocol == PROTO_VJ_COMP:
            return self._compressed(data)
        if protocol == PROTO_VJ_UNCOMP:
            return self._uncompressed(data)
        if protocol == PROTO_IP:
            self._c["passed_ip"] += 1
            return data
        self._c["errors"] += 1
        self._c["error_unknown_protocol"] += 1
        return None

    def _uncompressed(self, p: bytes) -> bytes | None:
        """§3.2.4 / A.3: reload a slot from a full header whose protocol byte is the slot number."""
        n = len(p)
        if n < 40:
            return self._error("error_runt")
        vihl = p[0]
        ihl4 = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl4 < 20 or n < ihl4 + 20:
            return self._error("error_bad_ip_header")
        offb = p[ihl4 + 12]
        hlen = ihl4 + ((offb >> 4) << 2)
        tot_len = (p[2] << 8) | p[3]
        if hlen < ihl4 + 20 or hlen > tot_len or tot_len > n:
            return self._error("error_bad_ip_header")
        slot = p[9]
        if slot > self.max_slot_id:
            return self._error("error_bad_slot")
        out = p[:9] + _PROTO_TCP_BYTE + p[10:tot_len]
        # The sender computed the header checksum with protocol 6: it must verify as is.
        if internet_checksum(out[:ihl4]):
            return self._error("error_bad_ip_checksum")
        rs = self._slots[slot]
        if rs is None:
            rs = self._slots[slot] = _RxSlot()
        hdr = rs.hdr = bytearray(out[:hlen])
        rs.ihl4, rs.hlen, rs.tot_len = ihl4, hlen, tot_len
        rs.id = u16(out, 4)
        rs.seq = u32(out, ihl4 + 4)
        rs.ack = u32(out, ihl4 + 8)
        rs.offb = out[ihl4 + 12]
        rs.flags = out[ihl4 + 13]
        rs.win = u16(out, ihl4 + 14)
        rs.urp = u16(out, ihl4 + 18)
        self._current = slot
        self._toss = False
        self._c["uncompressed"] += 1
        return out

    def _compressed(self, p: bytes) -> bytes | None:
        """§3.2.4 / A.3: rebuild the header from the slot and the deltas."""
        n = len(p)
        if n < 3:
            return self._error("error_runt")
        changes = p[0]
        if changes & NEW_C:
            slot = p[1]
            if slot > self.max_slot_id:
                return self._error("error_bad_slot")
            rs = self._slots[slot]
            if rs is None:
                return self._error("error_uninitialized_slot")
            self._toss = False  # §4.2: an explicit slot number resynchronises
            self._current = slot
            pos = 2
        else:
            if self._toss:
                self._c["tossed"] += 1
                return None
            if not self.compress_slot_id:
                self._c["implicit_slot_unnegotiated"] += 1
            rs = self._slots[self._current]
            pos = 1
        try:
            tcp_sum = (p[pos] << 8) | p[pos + 1]
            pos += 2
            seq, ack, win, urp, flags = rs.seq, rs.ack, rs.win, rs.urp, rs.flags
            special = changes & SPECIALS_MASK
            if special == SPECIAL_I:
                d = rs.tot_len - rs.hlen
                seq += d
                ack += d
            elif special == SPECIAL_D:
                seq += rs.tot_len - rs.hlen
            else:
                if changes & NEW_U:
                    flags |= _URG
                    urp, pos = _decode(p, pos)
                else:
                    flags &= ~_URG
                if changes & NEW_W:
                    d, pos = _decode(p, pos)
                    win = (win + d) & 0xFFFF
                if changes & NEW_A:
                    d, pos = _decode(p, pos)
                    ack += d
                if changes & NEW_S:
                    d, pos = _decode(p, pos)
                    seq += d
            if changes & NEW_I:
                d, pos = _decode(p, pos)
                ip_id = (rs.id + d) & 0xFFFF
            else:
                ip_id = (rs.id + 1) & 0xFFFF
        except IndexError:
            return self._error("error_truncated")
        if pos > n:
            return self._error("error_truncated")
        hlen = rs.hlen
        tot_len = hlen + n - pos
        if tot_len > 0xFFFF:
            return self._error("error_too_long")
        flags = (flags | _PSH) if changes & PUSH_BIT else (flags & ~_PSH)
        seq &= _MASK32
        ack &= _MASK32
        # Commit: rewrite the saved header in place and recompute the IP header checksum.
        ihl4 = rs.ihl4
        hdr = rs.hdr
        put16(hdr, 2, tot_len)
        put16(hdr, 4, ip_id)
        hdr[10] = hdr[11] = 0
        put16(hdr, 10, internet_checksum(hdr[:ihl4]))
        put32(hdr, ihl4 + 4, seq)
        put32(hdr, ihl4 + 8, ack)
        hdr[ihl4 + 13] = flags  # the data offset (ihl4 + 12) never changes in a slot
        put16(hdr, ihl4 + 14, win)
        put16(hdr, ihl4 + 16, tcp_sum)
        put16(hdr, ihl4 + 18, urp)
        rs.tot_len, rs.id, rs.seq, rs.ack, rs.flags, rs.win, rs.urp = (
            tot_len, ip_id, seq, ack, flags, win, urp
        )
        self._c["compressed"] += 1
        return bytes(hdr) + p[pos:]
