"""Fuzzing the stack: IPv4 with options and fragments (RFC 791, RFC 815), ICMP (RFC 792), UDP
(RFC 768) and TCP (RFC 9293, options of RFC 7323 and RFC 2018), datagrams fed to
:class:`~pyslirp.net.stack.Stack` as the link hands them over.

Inputs are the captured session's datagrams mutated (their checksums often made right again, so
the mutation reaches the layer above), and generated ones: random IP options, fragments in any
order with duplicates and overlaps, UDP and ICMP with right and wrong lengths and checksums, TCP
segments with random flags, options, and sequence numbers near or far from an established
connection's. Whatever arrives, nothing raises, every datagram is accepted or dropped by a counted
reason, every count is declared, what the stack sends is well formed, and its buffers keep their
bounds.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import fuzzing  # noqa: E402

from pyslirp._core.checksum import internet_checksum, pseudo_header_sum  # noqa: E402
from pyslirp.net import icmp, ipv4, udp  # noqa: E402
from pyslirp.net.stack import (  # noqa: E402
    FRAGMENT_BYTES,
    STACK_COUNTERS,
    ConnectionEvent,
    ConnectionRequest,
    Stack,
    UDPDatagram,
)
from pyslirp.net.tcp_segment import ACK, SYN, checksum_ok, parse_segment  # noqa: E402
from pyslirp.net.tcp_types import TCP_COUNTERS, TCPConfig  # noqa: E402

LOCAL = IPv4Address("10.0.0.1")
PEER = IPv4Address("10.0.0.2")
ROUTED = IPv4Network("192.168.7.0/24")  # a LAN behind the client (allowed_sources)
SOURCES = (PEER.packed, bytes((192, 168, 7, 9)), bytes((172, 16, 0, 1)))
DESTINATIONS = (LOCAL.packed, bytes((8, 8, 8, 8)), PEER.packed, b"\xff" * 4)
UDP_PORTS = frozenset({53, 5000})
SERVICE_PORT = 80
CLIENT_PORT = 40000
#: what drops a datagram before it counts as accepted (ip_in); every datagram is one or the other
IP_INPUT_DROPS = tuple(f"ip_drop_{reason}" for reason in (*ipv4.PARSE_ERRORS, "spoofed_source"))
REASSEMBLY_BYTES = 16 * 1024
MAX_CONNECTIONS = 8
PAYLOAD = bytes(range(256)) * 8
mtus = st.sampled_from([128, 576, 1500])
DECLARED_STACK_COUNTS = STACK_COUNTERS.all_keys()
DECLARED_TCP_COUNTS = TCP_COUNTERS.all_keys()


def new_stack(mtu: int, timestamps: bool = False) -> Stack:
    config = TCPConfig(mss=mtu - 40, rcv_buf=8 * 1024, snd_buf=16 * 1024, timestamps=timestamps)
    return Stack(
        LOCAL, PEER, mtu, tcp_config=config, max_connections=MAX_CONNECTIONS, udp_ports=UDP_PORTS,
        allowed_sources=[ROUTED], reassembly_bytes=REASSEMBLY_BYTES,
    )


# -- building datagrams ---------------------------------------------------------------------------


def ip_datagram(src: bytes, dst: bytes, protocol: int, payload: bytes, *, ident: int = 1, flags_offset: int = 0,
                options: bytes = b"", ttl: int = 64, tos: int = 0) -> bytes:
    """An IPv4 datagram with its header checksum (RFC 791 §3.1); options padded to 32 bits."""
    options += bytes(-len(options) % 4)
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45 + len(options) // 4, tos, 20 + len(options) + len(payload),
                                   ident, flags_offset, ttl, protocol, 0, src, dst) + options)
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    return bytes(header) + payload


def tcp_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                urgent: int, options: bytes, payload: bytes) -> bytes:
    """A TCP segment with its checksum over the pseudo-header (RFC 9293 §3.1)."""
    options += bytes(-len(options) % 4)
    segment = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                    (20 + len(options)) << 2, flags, window, 0, urgent) + options + payload)
    segment[16:18] = internet_checksum(segment, pseudo_header_sum(src, dst, ipv4.PROTO_TCP, len(segment))).to_bytes(2, "big")
    return bytes(segment)


def with_checksums_fixed(datagram: bytes) -> bytes:
    """The datagram with its IPv4 header checksum, and its ICMP, UDP or TCP checksum, made right
    again where the header still says where they are: a mutation then reaches the layer above."""
    data = bytearray(datagram)
    if len(data) < 20 or data[0] >> 4 != 4:
        return datagram
    header_length = (data[0] & 0x0F) * 4
    if not 20 <= header_length <= len(data):
        return datagram
    data[10:12] = b"\0\0"
    data[10:12] = internet_checksum(data[:header_length]).to_bytes(2, "big")
    total = min(len(data), int.from_bytes(data[2:4], "big"))
    payload = data[header_length:total]
    if data[6] & 0x3F or data[7]:  # a fragment: the checksum covers the whole datagram
        return bytes(data)
    src, dst, protocol = bytes(data[12:16]), bytes(data[16:20]), data[9]
    where = {ipv4.PROTO_ICMP: 2, ipv4.PROTO_UDP: 6, ipv4.PROTO_TCP: 16}.get(protocol)
    if where is None or len(payload) < where + 2:
        return bytes(data)
    payload[where : where + 2] = b"\0\0"
    initial = 0 if protocol == ipv4.PROTO_ICMP else pseudo_header_sum(src, dst, protocol, len(payload))
    payload[where : where + 2] = internet_checksum(payload, initial).to_bytes(2, "big")
    data[header_length:total] = payload
    return bytes(data)


# -- generated datagrams --------------------------------------------------------------------------

#: IP options (RFC 791 §3.1): end, no-op, record route, timestamps, source routes, router alert
IP_OPTIONS = (b"\x00", b"\x01", b"\x07\x07\x04" + bytes(4), b"\x44\x0c\x05\x00" + bytes(8),
              b"\x83\x07\x04\x0a\x00\x00\x01", b"\x89\x03\x04", b"\x94\x04\x00\x00")


def ip_options(o: fuzzing.Octets) -> bytes:
    """Up to four options: known ones, unknown kinds, and lengths that lie."""
    options = b""
    for _ in range(o.below(5)):
        form = o.below(3)
        if form == 0:
            options += o.choice(IP_OPTIONS)
        elif form == 1:
            value = o.octets(8)
            options += bytes((o.octet(), len(value) + 2)) + value
        else:
            options += bytes((o.octet(), o.choice([0, 1, 39, 255])))
    return options[:40]


def icmp_message(o: fuzzing.Octets) -> bytes:
    kind = o.choice([icmp.ECHO_REQUEST, icmp.ECHO_REPLY, icmp.DEST_UNREACHABLE, 11, 13, o.octet()])
    message = bytearray(bytes((kind, o.below(4))) + bytes(2) + o.octets(64))
    if not o.chance(4):  # mostly a right checksum
        message[2:4] = internet_checksum(message).to_bytes(2, "big")
    return bytes(message)


def udp_datagram(o: fuzzing.Octets, src: bytes, dst: bytes) -> bytes:
    sport = o.choice([1024, 53, 0, o.number(2)])
    dport = o.choice([53, 5000, 5001, 0, 9, o.number(2)])
    datagram = bytearray(udp.build(src, dst, sport, dport, o.octets(64)))
    fault = o.choice(["none", "none", "length", "checksum", "no_checksum", "truncated"])
    if fault == "length":
        datagram[4:6] = o.number(2).to_bytes(2, "big")
    elif fault == "checksum":
        datagram[6] ^= 0x5A
    elif fault == "no_checksum":
        datagram[6:8] = b"\0\0"
    elif fault == "truncated":
        del datagram[o.below(8) :]
    return bytes(datagram)


def datagram(o: fuzzing.Octets) -> bytes:
    """One IPv4 datagram from the client (or from a host it routes, or a spoofed address), now and
    then with a header field wrong: total length, version, header length or checksum."""
    src, dst = o.choice(SOURCES), o.choice(DESTINATIONS)
    protocol = o.choice([ipv4.PROTO_UDP, ipv4.PROTO_ICMP, ipv4.PROTO_TCP, o.octet()])
    if protocol == ipv4.PROTO_ICMP:
        payload = icmp_message(o)
    elif protocol == ipv4.PROTO_UDP:
        payload = udp_datagram(o, src, dst)
    elif protocol == ipv4.PROTO_TCP:
        payload = tcp_segment(src, dst, 1 + o.below(3), o.choice([SERVICE_PORT, 22]), o.number(4), o.number(4),
                              o.octet(), 8192, 0, b"", o.octets(16))
    else:
        payload = o.octets(32)
    flags = o.choice([0, 0x4000, 0x2000, 0x8000])
    datagram = bytearray(ip_datagram(src, dst, protocol, payload, ident=o.below(4), flags_offset=flags,
                                     options=ip_options(o), ttl=o.choice([64, 0, 1, 255]), tos=o.octet()))
    fault = o.choice(["none", "none", "none", "total_length", "version", "ihl", "checksum", "tail"])
    if fault == "total_length":
        datagram[2:4] = o.number(2).to_bytes(2, "big")
    elif fault == "version":
        datagram[0] = (o.below(16) << 4) | (datagram[0] & 0x0F)
    elif fault == "ihl":
        datagram[0] = (datagram[0] & 0xF0) | o.below(16)
    elif fault == "checksum":
        datagram[10] ^= 0xA5
    elif fault == "tail":
        datagram += bytes(1 + o.below(8))
    if fault in ("total_length", "version", "ihl") and o.chance(2):
        return with_checksums_fixed(bytes(datagram))
    return bytes(datagram)


def fragments(o: fuzzing.Octets) -> list[bytes]:
    """A datagram (captured or generated) cut into fragments at 8-octet boundaries (RFC 791 §3.2),
    sent in any order, some twice, one maybe lost, one maybe moved to overlap another."""
    captured = fuzzing.datagrams()
    whole = datagram(o) if o.chance(3) else o.choice(captured)
    header_length = (whole[0] & 0x0F) * 4
    payload = whole[header_length:]
    units = (len(payload) + 7) // 8
    cuts = sorted({8 * (1 + o.below(units)) for _ in range(1 + o.below(4))} - {8 * units}) if units > 1 else []
    bounds = [0, *cuts, len(payload)]
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        header = bytearray(whole[:header_length])
        header[6:8] = ((0x2000 if end < len(payload) else 0) | start // 8).to_bytes(2, "big")
        header[2:4] = (header_length + end - start).to_bytes(2, "big")
        pieces.append(with_checksums_fixed(bytes(header) + payload[start:end]))
    sent = list(pieces)
    for i in range(len(sent) - 1, 0, -1):  # any order (Fisher-Yates)
        j = o.below(i + 1)
        sent[i], sent[j] = sent[j], sent[i]
    if len(sent) > 1 and o.chance(4):
        del sent[o.below(len(sent))]
    sent += [o.choice(pieces) for _ in range(o.below(3))]
    if o.chance(3):
        moved = bytearray(o.choice(pieces))
        offset = int.from_bytes(moved[6:8], "big")
        moved[6:8] = ((offset & 0xE000) | ((offset + o.choice([1, -1, 2, -2])) & 0x1FFF)).to_bytes(2, "big")
        sent.insert(o.below(len(sent) + 1), with_checksums_fixed(bytes(moved)))
    return sent


captured_datagrams = fuzzing.mutated(list(fuzzing.datagrams()))
#: what arrives at once: one datagram (generated, captured and mutated, or that with its checksums
#: made right again) or the fragments of one
datagram_batches = st.one_of(
    fuzzing.decoded(datagram, 96).map(lambda d: [d]),
    captured_datagrams.map(lambda d: [d]),
    captured_datagrams.map(lambda d: [with_checksums_fixed(d)]),
    fuzzing.decoded(fragments, 128),
)


# -- checks -----------------------------------------------------------------------------------------


def take_checked_output(stack: Stack) -> list[bytes]:
    """What the stack sends: each a valid datagram within the MTU, its transport checksum right."""
    sent = []
    for packet, _interactive in stack.take_output():
        header = ipv4.parse(packet)
        assert len(packet) <= stack.mtu and header.total_length == len(packet)
        payload = packet[header.header_length :]
        if not header.is_fragment:
            if header.protocol == ipv4.PROTO_TCP:
                assert checksum_ok(payload, header.src, header.dst)
            elif header.protocol == ipv4.PROTO_ICMP:
                assert internet_checksum(payload) == 0
            else:
                assert udp.parse(header.src, header.dst, payload)
        sent.append(packet)
    return sent


def answer_events(stack: Stack, now: float) -> None:
    """The runtime's part: a SYN to the service port is accepted, any other refused; a UDP flow
    to port 5000 is refused (port unreachable), the DNS relay takes the others."""
    for event in stack.events():
        if isinstance(event, ConnectionRequest):
            if event.port == SERVICE_PORT and event.address == LOCAL.packed:
                event.conn.accept(now)
            else:
                event.conn.refuse(now)
        elif isinstance(event, UDPDatagram) and event.dst_port == 5000:
            stack.refuse_udp(event)


def assert_bounded_and_declared(stack: Stack) -> None:
    assert stack.counters.keys() <= DECLARED_STACK_COUNTS
    assert stack.tcp_counters.keys() <= DECLARED_TCP_COUNTS
    assert stack._fragments.bytes_held <= FRAGMENT_BYTES
    assert len(stack.connections) <= MAX_CONNECTIONS
    assert 0 <= stack.reassembly.held <= REASSEMBLY_BYTES
    assert stack.reassembly.held == sum(c.receiver.pool_charged for c in stack.connections.values())
    for conn in stack.connections.values():
        assert conn.check_invariants() == []


def feed_batches(stack: Stack, batches: list[tuple[list[bytes], float]]) -> None:
    """Each batch of datagrams in turn, then its pause and the timers due; every datagram is
    accepted (ip_in) or dropped before that by a counted reason."""
    now = 0.0
    received = 0
    for batch, pause in batches:
        for datagram in batch:
            stack.receive(datagram, now)
            received += 1
            answer_events(stack, now)
            take_checked_output(stack)
        now += pause
        stack.handle_timer(now)
        take_checked_output(stack)
        assert_bounded_and_declared(stack)
    counts = stack.counters
    assert counts["ip_in"] + sum(counts[key] for key in IP_INPUT_DROPS) == received


pauses = st.sampled_from([0.0, 0.01, 0.5, 31.0])


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=10)
@given(mtu=mtus, batch=datagram_batches, pause=pauses)
def test_a_datagram_or_its_fragments_are_accepted_or_dropped_by_a_counted_reason(
    mtu: int, batch: list[bytes], pause: float
) -> None:
    feed_batches(new_stack(mtu), [(batch, pause)])


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=0.5)
@given(mtu=mtus, batches=st.lists(st.tuples(datagram_batches, pauses), min_size=2, max_size=6))
def test_datagram_after_datagram_each_is_accepted_or_dropped_by_a_counted_reason(
    mtu: int, batches: list[tuple[list[bytes], float]]
) -> None:
    feed_batches(new_stack(mtu), batches)


# -- TCP through the stack --------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A segment from the client: to the connection under test (sequence and acknowledgment
    numbers as offsets from its RCV.NXT and SND.UNA, SACK edges from SND.UNA) or from another
    client port (numbers as they are)."""

    to_connection: bool
    client_port: int
    flags: int
    seq: int
    ack: int
    window: int
    urgent: int
    options: tuple[tuple, ...]
    payload_length: int
    bad_checksum: bool

    def datagram(self, stack: Stack) -> bytes:
        conn = stack.connections.get((PEER.packed, CLIENT_PORT, LOCAL.packed, SERVICE_PORT))
        seq, ack, base = self.seq, self.ack, 0
        port = self.client_port
        if self.to_connection and conn is not None:
            seq += conn.receiver.rcv_nxt
            base = conn.sender.snd_una
            ack += base
            port = CLIENT_PORT
        options = b"".join(tcp_option(option, base) for option in self.options)[:40]
        segment = bytearray(tcp_segment(PEER.packed, LOCAL.packed, port, SERVICE_PORT, seq, ack, self.flags,
                                        self.window, self.urgent, options, PAYLOAD[: self.payload_length]))
        if self.bad_checksum:
            segment[17] ^= 0x01
        return ip_datagram(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, bytes(segment))


def tcp_option(option: tuple, base: int) -> bytes:
    """RFC 9293 §3.2 options, RFC 7323 window scale and timestamps, RFC 2018 SACK; and wrong ones."""
    kind, *values = option
    if kind == "mss":
        return struct.pack("!BBH", 2, 4, values[0])
    if kind == "wscale":
        return bytes((3, 3, values[0]))
    if kind == "sack_permitted":
        return b"\x04\x02"
    if kind == "sack":
        edges = b"".join(struct.pack("!II", (base + left) & 0xFFFFFFFF, (base + right) & 0xFFFFFFFF)
                         for left, right in values[0])
        return bytes((5, 2 + len(edges))) + edges
    if kind == "timestamps":
        return struct.pack("!BBII", 8, 10, values[0], values[1])
    if kind == "raw":
        return values[0]
    raise AssertionError(kind)


#: option octets that lie: lengths 0 and 1, lengths past the header, known kinds of the wrong length
BROKEN_OPTIONS = (b"\x00", b"\x01", b"\x02\x00", b"\x05\x02", b"\x08\x0a", b"\x03\x04\x07\x00", b"\x02\x03\x05",
                  b"\x1e\x06\x00\x00\x00\x00", b"\xfe\x01")
NEAR = (0, 1, -1, 1460, -1460, 65535, -65536, 2**31, -(2**31))


def near(o: fuzzing.Octets) -> int:
    """A sequence offset: one the stack's arithmetic cares about, a small one either way, any."""
    form = o.below(3)
    if form == 0:
        return o.choice(NEAR)
    if form == 1:
        return o.number(2) - 0x8000
    return o.number(4)


def tcp_options(o: fuzzing.Octets) -> tuple[tuple, ...]:
    options: list[tuple] = []
    for _ in range(o.below(5)):
        kind = o.choice(["mss", "wscale", "sack_permitted", "sack", "timestamps", "raw"])
        if kind == "mss":
            options.append((kind, o.choice([1460, 0, 1, 48, 536, 65535])))
        elif kind == "wscale":
            options.append((kind, o.below(21)))
        elif kind == "sack":
            options.append((kind, tuple((near(o), near(o)) for _ in range(1 + o.below(4)))))
        elif kind == "timestamps":
            options.append((kind, o.number(4), o.number(4)))
        elif kind == "raw":
            options.append((kind, o.choice(BROKEN_OPTIONS)))
        else:
            options.append((kind,))
    return tuple(options)


def segment(o: fuzzing.Octets) -> Segment:
    """To the connection under test mostly, or from another client port; any flags, numbers near
    or far, any options, a payload of any size, now and then a wrong checksum."""
    port = o.choice([None, None, 40001, 40002, 40003])
    flags = o.choice([ACK, ACK | 0x08, SYN, SYN | ACK, 0x04, 0x14, 0x11, ACK | 0x20, o.octet()])
    return Segment(
        to_connection=port is None,
        client_port=port or CLIENT_PORT,
        flags=flags,
        seq=near(o),
        ack=near(o),
        window=o.choice([65535, 0, 1, 8192, o.number(2)]),
        urgent=o.choice([0, 0, 1, 0xFFFF]),
        options=tcp_options(o),
        payload_length=o.choice([0, 0, 1, 100, 1460, o.octet()]),
        bad_checksum=o.chance(5),
    )


segments = fuzzing.decoded(segment, 80)
APP_CALLS = ("send", "read", "shutdown_write", "close", "abort")
app_calls = st.tuples(st.sampled_from(APP_CALLS), st.sampled_from([1, 100, 5000, 20_000]))
step_pauses = st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.5, 70.0])


def call_application(stack: Stack, call: str, size: int, now: float) -> None:
    conn = stack.connections.get((PEER.packed, CLIENT_PORT, LOCAL.packed, SERVICE_PORT))
    if conn is None:
        return
    if call == "send":
        if conn.send_space:  # as the pipe does: never after shutdown_write or close
            conn.send(bytes(min(size, conn.send_space)), now)
    elif call == "read":
        conn.read(size, now)
    else:
        getattr(conn, call)(now)


def established(mtu: int, timestamps: bool, client_options: bytes) -> Stack:
    """A stack with the client's connection to the service port accepted, established, and 3000
    octets of ours in flight."""
    stack = new_stack(mtu, timestamps)
    syn = tcp_segment(PEER.packed, LOCAL.packed, CLIENT_PORT, SERVICE_PORT, 1000, 0, SYN, 65535, 0, client_options, b"")
    stack.receive(ip_datagram(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, syn), 0.0)
    answer_events(stack, 0.0)
    (synack,) = take_checked_output(stack)
    header = ipv4.parse(synack)
    server_seq = parse_segment(synack[header.header_length :]).seq  # type: ignore[union-attr]
    ack = tcp_segment(PEER.packed, LOCAL.packed, CLIENT_PORT, SERVICE_PORT, 1001, server_seq + 1, ACK, 65535, 0, b"", b"")
    stack.receive(ip_datagram(PEER.packed, LOCAL.packed, ipv4.PROTO_TCP, ack), 0.01)
    conn = stack.connections[(PEER.packed, CLIENT_PORT, LOCAL.packed, SERVICE_PORT)]
    assert [e.event for e in stack.events() if isinstance(e, ConnectionEvent)], "not established"
    conn.send(bytes(3000), 0.01)
    take_checked_output(stack)
    return stack


def run_steps(stack: Stack, steps: list[tuple[object, float]]) -> None:
    """Segments from the client and calls of the service, each followed by its pause and the
    timers due by then; the stack stays consistent after each."""
    now = 0.02
    for step, pause in steps:
        if isinstance(step, Segment):
            stack.receive(step.datagram(stack), now)
        else:
            call_application(stack, *step, now)  # type: ignore[misc]
        answer_events(stack, now)
        take_checked_output(stack)
        now += pause
        for _ in range(3):  # what is due by now, a bounded number of rounds
            if (deadline := stack.next_deadline()) is None or deadline > now:
                break
            stack.handle_timer(now)
            answer_events(stack, now)
            take_checked_output(stack)
        assert_bounded_and_declared(stack)


client_syn_options = st.sampled_from(
    [b"", b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00"]
)


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=10)
@given(mtu=mtus, timestamps=st.booleans(), client_options=client_syn_options, segment=segments,
       then=st.none() | app_calls, pause=step_pauses)
def test_a_segment_to_an_established_connection_keeps_the_stack_consistent(
    mtu: int, timestamps: bool, client_options: bytes, segment: Segment, then: tuple[str, int] | None, pause: float
) -> None:
    steps: list[tuple[object, float]] = [(segment, pause)]
    if then is not None:
        steps.append((then, pause))
    run_steps(established(mtu, timestamps, client_options), steps)


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=0.5)
@given(mtu=mtus, with_connection=st.booleans(), timestamps=st.booleans(), client_options=client_syn_options,
       steps=st.lists(st.tuples(segments | app_calls, step_pauses), min_size=2, max_size=16))
def test_segment_after_segment_with_and_without_a_connection_keeps_the_stack_consistent(
    mtu: int, with_connection: bool, timestamps: bool, client_options: bytes, steps: list[tuple[object, float]]
) -> None:
    stack = established(mtu, timestamps, client_options) if with_connection else new_stack(mtu, timestamps)
    run_steps(stack, steps)


# -- what the fuzzing found -------------------------------------------------------------------------


def test_a_refused_syn_to_another_address_is_answered_from_that_address_with_a_valid_checksum() -> None:
    stack = new_stack(1500)
    elsewhere = bytes((192, 0, 2, 7))
    syn = tcp_segment(PEER.packed, elsewhere, CLIENT_PORT, 22, 1, 0, SYN, 65535, 0, b"", b"")
    stack.receive(ip_datagram(PEER.packed, elsewhere, ipv4.PROTO_TCP, syn), 0.0)
    answer_events(stack, 0.0)  # refused: no route
    (reset,) = take_checked_output(stack)  # the RST's checksum is right for its addresses
    header = ipv4.parse(reset)
    assert (header.src, header.dst) == (elsewhere, PEER.packed)
