"""Fuzzing the PPP link: LCP, IPCP, PAP and CHAP packets and their options (RFC 1661 §5-§6,
RFC 1332, RFC 1877, RFC 1334, RFC 1994), and VJ decompression (RFC 1144), in every phase.

Inputs are the captured session's frames mutated, and generated packets: options of every
known type with lengths right and wrong, replies to the link's own Configure-Request (exact Acks,
Naks with other values, Rejects of a subset), CHAP Responses to its Challenge and PAP requests.
Whatever arrives, nothing raises inside the link (``internal_error`` stays 0), each frame ends in
exactly one disposition counter, every count is declared, and what the link sends stays bounded.
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import fuzzing  # noqa: E402

from pyslirp.net import ipv4  # noqa: E402
from pyslirp.ppp.auth import CHAP_CHALLENGE, CHAP_RESPONSE, PAP_AUTH_REQUEST, AuthOptions  # noqa: E402
from pyslirp.ppp.describe import describe_frame  # noqa: E402
from pyslirp.ppp.fsm import Code, build_options, build_packet, parse_options, parse_packet  # noqa: E402
from pyslirp.ppp.ipcp import IPCPOptions  # noqa: E402
from pyslirp.ppp.lcp import LCPOptions  # noqa: E402
from pyslirp.ppp.link import LINK_COUNTERS, RX_DISPOSITIONS, LinkOptions, Phase, PPPLink  # noqa: E402
from pyslirp.ppp.protocols import (  # noqa: E402
    AUTH_CHAP,
    AUTH_PAP,
    DEFAULT_MRU,
    PROTO_CHAP,
    PROTO_IP,
    PROTO_IPCP,
    PROTO_LCP,
    PROTO_PAP,
    PROTO_VJ_COMP,
    PROTO_VJ_UNCOMP,
)
from pyslirp.ppp.vj import VJ_DECOMPRESSOR_COUNTERS, VJDecompressor  # noqa: E402

USER, SECRET = b"alice", b"wonderland"
PEER_MAGIC = 0x5EED1234
CONTROL_PROTOCOLS = (PROTO_LCP, PROTO_IPCP, PROTO_PAP, PROTO_CHAP)
#: LCP and IPCP option types the link knows, and neighbours it does not
OPTION_TYPES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 19, 129, 130, 131, 132, 255)
#: how many frames the link may send in answer to one (a reply, a new request, a reject...)
MAX_OUTPUT_PER_FRAME = 6
DECLARED_LINK_COUNTS = LINK_COUNTERS.all_keys()


def control_frame(protocol: int, code: int, ident: int, data: bytes) -> bytes:
    return b"\xff\x03" + protocol.to_bytes(2, "big") + build_packet(code, ident, data)


def chap_response(ident: int, challenge: bytes, secret: bytes = SECRET) -> bytes:
    value = hashlib.md5(bytes((ident,)) + secret + challenge).digest()
    return control_frame(PROTO_CHAP, CHAP_RESPONSE, ident, bytes((len(value),)) + value + USER)


def pap_request(ident: int, user: bytes, password: bytes) -> bytes:
    return control_frame(PROTO_PAP, PAP_AUTH_REQUEST, ident, bytes((len(user),)) + user + bytes((len(password),)) + password)


@dataclass
class Session:
    """A link and what the fuzzer needs of its output: its last Configure-Request per protocol
    (to reply to it) and its last CHAP Challenge (to answer it)."""

    link: PPPLink
    now: float = 0.0
    requests: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    challenge: tuple[int, bytes] | None = None
    longest_input: int = 0

    def drain(self) -> list[bytes]:
        sent = []
        for frame, _accm in self.link.take_output():
            sent.append(frame)
            protocol, info = fuzzing.split_frame(frame)
            packet = parse_packet(info)
            assert packet is not None, frame
            code, ident, data = packet
            if protocol in (PROTO_LCP, PROTO_IPCP) and code == Code.CONFIGURE_REQUEST:
                self.requests[protocol] = (ident, data)
            elif protocol == PROTO_CHAP and code == CHAP_CHALLENGE:
                self.challenge = (ident, data[1 : 1 + data[0]])
        return sent

    def receive(self, frame: bytes) -> None:
        self.longest_input = max(self.longest_input, len(frame))
        self.link.receive_frame(frame, self.now)

    def answer_negotiation(self, authenticate: bool) -> None:
        """Ack what the link asks, and authenticate when it asks (the peer's half of §3)."""
        for frame in self.drain():
            protocol, info = fuzzing.split_frame(frame)
            code, ident, data = parse_packet(info)  # type: ignore[misc]
            if protocol in (PROTO_LCP, PROTO_IPCP) and code == Code.CONFIGURE_REQUEST:
                self.receive(control_frame(protocol, Code.CONFIGURE_ACK, ident, data))
            elif protocol == PROTO_CHAP and code == CHAP_CHALLENGE and authenticate:
                self.receive(chap_response(ident, data[1 : 1 + data[0]]))


@dataclass(frozen=True)
class Variant:
    """What the link is configured to ask for and offer."""

    mru: int = DEFAULT_MRU
    accm: int = 0
    vj: bool = True
    dns: tuple[IPv4Address, ...] = (IPv4Address("10.0.0.1"),)
    passive: bool = False


#: the defaults; an MRU and an ACCM of its own (LCP asks for both), no VJ and no DNS; passive
VARIANTS = (Variant(), Variant(mru=1400, accm=0x000A0000, vj=False, dns=()), Variant(passive=True))


def session_in(phase: str, auth: str | None, seed: int, variant: Variant) -> Session:
    """A link brought to ``phase`` by a well-behaved peer: dead (never opened), establish (our
    Configure-Request unanswered), authenticate (LCP Opened, no login yet) or network (IPCP
    Opened, VJ both ways when configured)."""
    options = LinkOptions(
        lcp=LCPOptions(mru=variant.mru, accm=variant.accm, echo_interval=2.0, auth_methods=(auth,) if auth else ()),
        ipcp=IPCPOptions(dns=variant.dns, vj=variant.vj),
        auth=AuthOptions(credentials={USER.decode(): SECRET.decode()}, chap_rechallenge_interval=3.0),
        passive=variant.passive,
    )
    session = Session(PPPLink(options, random.Random(seed)))
    if phase == "dead":
        return session
    session.link.open(0.0)
    if phase == "establish":
        session.drain()
        return session
    lcp_request = build_options([(5, PEER_MAGIC.to_bytes(4, "big")), (7, b""), (8, b"")])
    session.receive(control_frame(PROTO_LCP, Code.CONFIGURE_REQUEST, 1, lcp_request))
    session.answer_negotiation(authenticate=False)
    if phase == "network":
        if auth == AUTH_PAP:
            session.receive(pap_request(1, USER, SECRET))
        session.answer_negotiation(authenticate=True)
        vj = [(2, bytes((0x00, 0x2D, 15, 1)))] if variant.vj else []
        ipcp_request = build_options([*vj, (3, bytes((10, 0, 0, 2)))])
        session.receive(control_frame(PROTO_IPCP, Code.CONFIGURE_REQUEST, 1, ipcp_request))
        session.answer_negotiation(authenticate=True)
    session.drain()
    expected = {"authenticate": Phase.AUTHENTICATE if auth else Phase.NETWORK, "network": Phase.NETWORK}[phase]
    assert session.link.phase is expected
    session.link.events()
    return session


# -- what the fuzzer sends --------------------------------------------------------------------------

OPTION_VALUES = (b"", b"\x00\x00", b"\x00\x7f", b"\x05\xdc", b"\xff\xff", bytes(4), b"\xff" * 4, b"\xc0\x23",
                 b"\xc2\x23\x05", b"\xc2\x23\x80", b"\x00\x2d\x0f\x01", b"\x00\x2d\xff\x02", b"\x00\x2d",
                 bytes((10, 0, 0, 2)), bytes((10, 0, 0, 1)), PEER_MAGIC.to_bytes(4, "big"))


def option_value(o: fuzzing.Octets) -> bytes:
    return o.choice(OPTION_VALUES) if o.chance(2) else o.octets(6)


def options(o: fuzzing.Octets) -> bytes:
    """Up to six options of the types the link knows and their neighbours, with values of the
    right and wrong sizes, now and then an octet of the list broken (a length that lies)."""
    data = bytearray(build_options([(o.choice(OPTION_TYPES), option_value(o)) for _ in range(o.below(7))]))
    if data and o.chance(4):
        data[o.below(len(data))] = o.octet()
    return bytes(data)


@dataclass(frozen=True)
class Raw:
    data: bytes

    def frame(self, session: Session) -> bytes:
        return self.data


@dataclass(frozen=True)
class ReplyToRequest:
    """A Configure-Ack, -Nak or -Reject for the link's last Configure-Request of ``protocol``:
    exact (an Ack that opens the layer), with other values, or naming some of its options."""

    protocol: int
    code: int
    keep: int  # a bit per option of the request, for a Reject
    values: tuple[bytes, ...]  # for a Nak
    extra: bytes

    def frame(self, session: Session) -> bytes:
        ident, data = session.requests.get(self.protocol, (1, b""))
        ours = parse_options(data) or []
        if self.code == Code.CONFIGURE_ACK:
            reply = data
        elif self.code == Code.CONFIGURE_REJECT:
            reply = build_options([option for i, option in enumerate(ours) if self.keep >> i & 1])
        else:
            reply = build_options([(t, v) for (t, _), v in zip(ours, self.values)]) + self.extra
        return control_frame(self.protocol, self.code, ident, reply)


@dataclass(frozen=True)
class ChapAnswer:
    """A CHAP Response to the link's last Challenge: right or wrong secret, right or stale ident."""

    right_secret: bool
    ident_offset: int

    def frame(self, session: Session) -> bytes:
        ident, challenge = session.challenge or (0, b"")
        return chap_response((ident + self.ident_offset) & 0xFF, challenge, SECRET if self.right_secret else b"guess")


def control_packet(o: fuzzing.Octets) -> Raw:
    """A control packet: any code (options for the Configure codes), sometimes a Length that
    lies, sometimes padding after it, sometimes a broken address and control."""
    protocol = o.choice(CONTROL_PROTOCOLS)
    code = o.choice([1, 2, 3, 4, o.below(16)])
    data = options(o) if 1 <= code <= 4 else o.octets(24)
    packet = bytearray(build_packet(code, o.octet(), data))
    if o.chance(3):
        packet[2:4] = o.number(2).to_bytes(2, "big")
    packet += o.octets(4)
    header = o.choice([b"\xff\x03", b"", b"\xff\x05", b"\xfe\x03"])
    return Raw(header + protocol.to_bytes(2, "big") + bytes(packet))


def exchange_packet(o: fuzzing.Octets) -> object:
    """What a peer answers the link with: a reply to its Configure-Request, a CHAP Response to its
    Challenge, a PAP Authenticate-Request (right, wrong or malformed)."""
    form = o.below(3)
    if form == 0:
        return ReplyToRequest(
            protocol=o.choice([PROTO_LCP, PROTO_IPCP]),
            code=o.choice([Code.CONFIGURE_ACK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT]),
            keep=o.octet(),
            values=tuple(option_value(o) for _ in range(o.below(7))),
            extra=options(o) if o.chance(3) else b"",
        )
    if form == 1:
        return ChapAnswer(right_secret=not o.chance(3), ident_offset=o.choice([0, 0, 1, 255]))
    user = o.choice([USER, b"", b"mallory", b"\xff\xfe"])
    password = o.choice([SECRET, b"", b"x" * 255])
    return Raw(pap_request(o.octet(), user, password) + o.octets(3))


captured_control = fuzzing.mutated(
    [f.frame for f in fuzzing.corpus() if f.protocol not in (PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP)]
)
inputs = st.one_of(
    captured_control.map(Raw),
    fuzzing.mutated(fuzzing.frames()).map(Raw),
    fuzzing.decoded(control_packet, 96),
    fuzzing.decoded(exchange_packet, 64),
)


def assert_accounted(link: PPPLink, received: int) -> None:
    counts = link.counters()
    assert counts.get("internal_error", 0) == 0
    assert counts.get("rx_frames", 0) == received
    assert sum(counts.get(key, 0) for key in RX_DISPOSITIONS) == received
    assert counts.keys() <= DECLARED_LINK_COUNTS


def receive_and_check(session: Session, item: object, pause: float, received: int) -> None:
    """One frame in (then ``pause`` seconds, the timers that fall due): what the link sends and
    reports stays bounded, and every frame so far is accounted."""
    link = session.link
    frame = item.frame(session)  # type: ignore[attr-defined]
    assert isinstance(describe_frame(frame), (str, type(None)))
    session.receive(frame)
    if pause:
        session.now += pause
        if (deadline := link.next_deadline()) is not None and deadline <= session.now:
            link.handle_timer(session.now)
    sent = session.drain()
    assert len(sent) <= MAX_OUTPUT_PER_FRAME
    for out in sent:
        assert len(out) <= 8 + max(DEFAULT_MRU, session.longest_input)
        assert isinstance(describe_frame(out), str)
    assert len(link.events()) <= MAX_OUTPUT_PER_FRAME
    assert_accounted(link, received)


phases = st.sampled_from(["network", "authenticate", "establish", "network", "dead"])
variants = st.sampled_from(VARIANTS)
auth_methods = st.sampled_from([None, AUTH_PAP, AUTH_CHAP])
pauses = st.sampled_from([0.0, 0.0, 0.4, 2.5, 31.0])


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=10)
@given(phase=phases, auth=auth_methods, variant=variants, seed=st.integers(0, 3), item=inputs, pause=pauses)
def test_one_frame_in_any_phase_is_counted_and_never_fails_inside(
    phase: str, auth: str | None, variant: Variant, seed: int, item: object, pause: float
) -> None:
    session = session_in(phase, auth, seed, variant)
    receive_and_check(session, item, pause, session.link.counters().get("rx_frames", 0) + 1)


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=0.5)
@given(phase=phases, auth=auth_methods, variant=variants, seed=st.integers(0, 3),
       steps=st.lists(st.tuples(inputs, pauses), min_size=2, max_size=12))
def test_frame_after_frame_the_link_counts_every_one_and_never_fails_inside(
    phase: str, auth: str | None, variant: Variant, seed: int, steps: list[tuple[object, float]]
) -> None:
    session = session_in(phase, auth, seed, variant)
    received = session.link.counters().get("rx_frames", 0)
    for item, pause in steps:
        received += 1
        receive_and_check(session, item, pause, received)


# -- VJ decompression (RFC 1144 §4) -----------------------------------------------------------------

#: each direction's IP and VJ frames in the order they crossed the line: the slots they load and use
VJ_RUNS = [
    [(f.protocol, f.info) for f in fuzzing.corpus()
     if f.direction == direction and f.protocol in (PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP)]
    for direction in (fuzzing.RECEIVED, fuzzing.SENT)
]
ALL_VJ_INFOS = [info for run in VJ_RUNS for _, info in run]
#: decompressor outcomes: each frame ends in exactly one
VJ_OUTCOMES = ("compressed", "uncompressed", "passed_ip", "errors", "tossed")


@pytest.mark.fuzz
@fuzzing.fuzz_settings(weight=10)
@given(
    direction=st.sampled_from([0, 1]),
    start=st.integers(0, 63),
    length=st.integers(1, 24),
    damaged=st.lists(st.tuples(st.integers(0, 23), st.binary(min_size=4, max_size=16)), max_size=3),
    lost=st.lists(st.integers(0, 23), max_size=2),
    protocol_changes=st.lists(st.tuples(st.integers(0, 23), st.sampled_from([PROTO_IP, PROTO_VJ_COMP,
                                                                              PROTO_VJ_UNCOMP, 0x0057])), max_size=1),
    max_slot_id=st.sampled_from([0, 2, 15, 255]),
    compress_slot_id=st.booleans(),
)
def test_vj_decompression_of_a_damaged_real_run_gives_valid_datagrams_or_a_counted_drop(
    direction: int, start: int, length: int, damaged: list[tuple[int, bytes]], lost: list[int],
    protocol_changes: list[tuple[int, int]], max_slot_id: int, compress_slot_id: bool,
) -> None:
    whole = VJ_RUNS[direction]
    run = whole[start % len(whole) :][:length]
    frames = [[protocol, info] for protocol, info in run]
    for index, program in damaged:  # the line corrupted a frame and the FCS did not catch it
        if index < len(frames):
            frames[index][1] = fuzzing.mutate(frames[index][1], program, ALL_VJ_INFOS)
    for index, protocol in protocol_changes:
        if index < len(frames):
            frames[index][0] = protocol
    decompressor = VJDecompressor(max_slot_id, compress_slot_id)
    decoded = 0
    for index, (protocol, payload) in enumerate(frames):
        if index in lost:  # the deframer dropped it: the link tells VJ to resynchronise (§4.2)
            decompressor.toss()
            continue
        decoded += 1
        datagram = decompressor.decompress(protocol, payload)
        if datagram is not None and protocol != PROTO_IP:
            header = ipv4.parse(datagram)  # a rebuilt header is a valid one
            assert header.total_length == len(datagram) and header.protocol == ipv4.PROTO_TCP
    counts = decompressor.counters()
    assert sum(counts[key] for key in VJ_OUTCOMES) == decoded
    assert counts["toss_requests"] == len(frames) - decoded
    assert counts.keys() <= VJ_DECOMPRESSOR_COUNTERS.all_keys()
