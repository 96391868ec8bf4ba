"""IPCP (RFC 1332, RFC 1877) on its own: judging the client's request, our request, VJ both ways."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyslirp.ppp.fsm import FSMConfig, State, Verdict, build_options, build_packet, parse_options
from pyslirp.ppp.ipcp import IPCP, IPCPOptions, VJParams

LOCAL, PEER = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
DNS1, DNS2 = IPv4Address("10.0.0.1"), IPv4Address("9.9.9.9")


def make(**kw: object) -> IPCP:
    return IPCP(IPCPOptions(**kw), FSMConfig())  # type: ignore[arg-type]


def vj(max_slot: int, comp: int, proto: int = 0x002D) -> bytes:
    return proto.to_bytes(2, "big") + bytes((max_slot, comp))


@pytest.mark.parametrize(
    ("kw", "option", "verdict", "suggestion"),
    [
        ({}, (3, PEER.packed), Verdict.ACK, None),
        ({}, (3, bytes(4)), Verdict.NAK, PEER.packed),
        ({}, (3, IPv4Address("192.168.7.7").packed), Verdict.NAK, PEER.packed),
        ({}, (3, b"\x0a\x00"), Verdict.REJECT, None),
        ({}, (1, LOCAL.packed + PEER.packed), Verdict.REJECT, None),  # deprecated IP-Addresses
        ({}, (2, vj(15, 1)), Verdict.ACK, None),
        ({}, (2, vj(3, 0)), Verdict.ACK, None),
        ({}, (2, vj(255, 1)), Verdict.NAK, vj(15, 1)),
        ({"vj_slots": 8}, (2, vj(15, 1)), Verdict.NAK, vj(7, 1)),
        ({}, (2, vj(15, 7)), Verdict.NAK, vj(15, 0)),
        ({}, (2, (0x0037).to_bytes(2, "big")), Verdict.REJECT, None),  # old VJ numbering
        ({}, (2, vj(15, 1, proto=0x0061)), Verdict.REJECT, None),
        ({"vj": False}, (2, vj(15, 1)), Verdict.REJECT, None),
        ({"dns": (DNS1, DNS2)}, (129, bytes(4)), Verdict.NAK, DNS1.packed),
        ({"dns": (DNS1, DNS2)}, (131, bytes(4)), Verdict.NAK, DNS2.packed),
        ({"dns": (DNS1, DNS2)}, (129, DNS1.packed), Verdict.ACK, None),
        ({"dns": (DNS1,)}, (131, bytes(4)), Verdict.REJECT, None),
        ({}, (129, bytes(4)), Verdict.REJECT, None),
        ({"dns": (DNS1, DNS2)}, (130, bytes(4)), Verdict.REJECT, None),  # NBNS
        ({"dns": (DNS1, DNS2)}, (132, bytes(4)), Verdict.REJECT, None),
        ({}, (200, b"?"), Verdict.REJECT, None),
    ],
)
def test_judge_option(kw: dict, option: tuple[int, bytes], verdict: Verdict, suggestion: bytes | None) -> None:
    got, value = make(**kw).judge_option(*option)
    assert got is verdict
    if suggestion is not None:
        assert value == suggestion


def test_missing_address_is_hinted_in_a_nak() -> None:
    ipcp = make()
    ipcp.fsm.open(0)
    ipcp.fsm.up(0)
    ipcp.fsm.take_packets()
    ipcp.fsm.receive(build_packet(1, 1, build_options([(2, vj(15, 1))])), 0)
    (nak,) = ipcp.fsm.take_packets()
    assert nak[0] == 3 and parse_options(nak[4:]) == [(3, PEER.packed)]


def test_our_request() -> None:
    ipcp = make(local_ip=IPv4Address("172.16.0.1"), peer_ip=IPv4Address("172.16.0.2"), vj_slots=16)
    ipcp.reset_options()
    assert ipcp.request_options() == [(2, vj(15, 1)), (3, IPv4Address("172.16.0.1").packed)]
    assert make(vj=False).request_options() == [(3, LOCAL.packed)]


def test_nak_and_reject_of_our_request() -> None:
    ipcp = make()
    ipcp.reset_options()
    ipcp.peer_naked([(2, vj(5, 0)), (3, IPv4Address("1.2.3.4").packed)])
    assert ipcp.request_options() == [(2, vj(5, 0)), (3, LOCAL.packed)]  # our address is not negotiable
    ipcp.peer_naked([(2, (0x0037).to_bytes(2, "big"))])
    assert ipcp.request_options() == [(3, LOCAL.packed)]
    ipcp.reset_options()
    ipcp.peer_rejected([(2, vj(15, 1)), (3, LOCAL.packed)])
    assert ipcp.request_options() == []


def test_vj_directions_after_negotiation() -> None:
    ipcp = make(vj_slots=16)
    ipcp.fsm.open(0)
    ipcp.fsm.up(0)
    (req,) = ipcp.fsm.take_packets()
    ipcp.fsm.receive(build_packet(2, req[1], req[4:]), 0)  # the peer Acks our VJ: we decompress
    ipcp.fsm.receive(build_packet(1, 9, build_options([(3, PEER.packed), (2, vj(3, 0))])), 0)
    assert ipcp.fsm.state is State.OPENED
    assert ipcp.rx_vj == VJParams(15, True)
    assert ipcp.tx_vj == VJParams(3, False)  # what the peer can receive: we compress with it
    assert ipcp.peer_address == PEER


def test_dns_acked_is_recorded() -> None:
    ipcp = make(dns=(DNS1, DNS2))
    ipcp.we_acked([(3, PEER.packed), (129, DNS1.packed), (131, DNS2.packed)])
    assert ipcp.dns_acked == (DNS1, DNS2)
