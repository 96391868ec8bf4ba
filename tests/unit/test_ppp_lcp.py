"""LCP (RFC 1661 §5-§6) on its own: options both ways, echo, keepalive, rejects, loopback hints."""

from __future__ import annotations

import random

import pytest

from pyslirp.ppp.fsm import FSM_COUNTERS, Event, FSMConfig, State, Verdict, build_options, build_packet, parse_options
from pyslirp.ppp.lcp import LCP, LCP_COUNTERS, LCPOptions

MAGIC_PEER = 0x01020304


def make(**kw: object) -> LCP:
    return LCP(LCPOptions(**kw), FSMConfig(), random.Random(42))  # type: ignore[arg-type]


def opened(**kw: object) -> tuple[LCP, list[bytes]]:
    """An LCP brought to Opened by a peer that Acks everything and asks for magic only."""
    lcp = make(**kw)
    lcp.fsm.open(0)
    lcp.fsm.up(0)
    (req,) = lcp.fsm.take_packets()
    lcp.fsm.receive(build_packet(2, req[1], req[4:]), 0)
    lcp.fsm.receive(build_packet(1, 0x10, build_options([(5, MAGIC_PEER.to_bytes(4, "big"))])), 0)
    assert lcp.fsm.state is State.OPENED
    return lcp, [req, *lcp.fsm.take_packets()]


def request_options(lcp: LCP) -> dict[int, bytes]:
    lcp.reset_options()
    return dict(lcp.request_options())


# --- what we ask --------------------------------------------------------------------------------


def test_default_request_asks_accm0_magic_pfc_acfc() -> None:
    opts = request_options(make())
    assert opts[2] == bytes(4)
    assert len(opts[5]) == 4 and opts[5] != bytes(4)
    assert opts[7] == b"" and opts[8] == b""
    assert 1 not in opts and 3 not in opts  # MRU 1500 is the default: not requested


def test_request_with_mru_and_auth() -> None:
    assert request_options(make(mru=1000, auth_methods=("chap", "pap")))[1] == (1000).to_bytes(2, "big")
    assert request_options(make(auth_methods=("chap",)))[3] == bytes.fromhex("c22305")
    assert request_options(make(auth_methods=("pap",)))[3] == bytes.fromhex("c023")


def test_magic_comes_from_the_injected_rng() -> None:
    a, b = make(), make()
    assert request_options(a)[5] == request_options(b)[5]


def test_nak_of_accm_adds_the_peers_characters() -> None:
    lcp = make(accm=0x0)
    lcp.reset_options()
    lcp.peer_naked([(2, (0x000A0000).to_bytes(4, "big"))])
    assert dict(lcp.request_options())[2] == (0x000A0000).to_bytes(4, "big")


def test_nak_of_chap_with_pap_falls_back_only_if_allowed() -> None:
    lcp = make(auth_methods=("chap", "pap"))
    lcp.reset_options()
    lcp.peer_naked([(3, bytes.fromhex("c023"))])
    assert dict(lcp.request_options())[3] == bytes.fromhex("c023")
    lcp = make(auth_methods=("chap",))
    lcp.reset_options()
    lcp.peer_naked([(3, bytes.fromhex("c023"))])
    assert 3 not in dict(lcp.request_options())


def test_nak_of_mru() -> None:
    lcp = make(mru=1000)
    lcp.reset_options()
    lcp.peer_naked([(1, (600).to_bytes(2, "big"))])
    assert dict(lcp.request_options())[1] == (600).to_bytes(2, "big")
    lcp.peer_naked([(1, (60).to_bytes(2, "big"))])  # below the floor: ignored
    assert dict(lcp.request_options())[1] == (600).to_bytes(2, "big")


def test_rejected_options_are_no_longer_asked() -> None:
    lcp = make(auth_methods=("pap",))
    lcp.reset_options()
    lcp.peer_rejected([(7, b""), (8, b""), (3, bytes.fromhex("c023")), (5, bytes(4)), (2, bytes(4))])
    assert lcp.request_options() == []


def test_ack_records_what_we_asked() -> None:
    lcp, _ = opened(auth_methods=("pap",))
    assert lcp.auth_method == "pap"
    assert lcp.acked_accm == 0 and lcp.acked_pfc and lcp.acked_acfc
    assert lcp.our_magic != 0


# --- judging the peer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "verdict", "suggestion"),
    [
        ((1, (1500).to_bytes(2, "big")), Verdict.ACK, None),
        ((1, (296).to_bytes(2, "big")), Verdict.ACK, None),
        ((1, (64).to_bytes(2, "big")), Verdict.NAK, (128).to_bytes(2, "big")),
        ((1, b"\x05"), Verdict.REJECT, None),
        ((2, (0xA0000).to_bytes(4, "big")), Verdict.ACK, None),
        ((2, b"\x00\x00"), Verdict.REJECT, None),
        ((3, bytes.fromhex("c023")), Verdict.REJECT, None),  # we do not authenticate ourselves
        ((4, bytes.fromhex("c0250000")), Verdict.REJECT, None),  # Quality-Protocol
        ((5, MAGIC_PEER.to_bytes(4, "big")), Verdict.ACK, None),
        ((5, b"\x01"), Verdict.REJECT, None),
        ((7, b""), Verdict.ACK, None),
        ((8, b""), Verdict.ACK, None),
        ((7, b"x"), Verdict.REJECT, None),
        ((13, b"\x06"), Verdict.REJECT, None),  # Callback
        ((0x77, b"whatever"), Verdict.REJECT, None),
    ],
)
def test_judge_option(option: tuple[int, bytes], verdict: Verdict, suggestion: bytes | None) -> None:
    lcp = make()
    lcp.reset_options()
    got, value = lcp.judge_option(*option)
    assert got is verdict
    if suggestion is not None:
        assert value == suggestion


def test_magic_zero_is_nakd_with_a_nonzero_value() -> None:
    lcp = make()
    lcp.reset_options()
    verdict, value = lcp.judge_option(5, bytes(4))
    assert verdict is Verdict.NAK and value != bytes(4)
    assert lcp.loop_indications == 0


def test_our_own_magic_is_nakd_and_counted() -> None:
    lcp = make()
    ours = request_options(lcp)[5]
    verdict, value = lcp.judge_option(5, ours)
    assert verdict is Verdict.NAK and value != ours
    assert lcp.loop_indications == 1
    # §6.4: the same value coming back in a Nak is another indication, and we change magic.
    lcp.peer_naked([(5, value)])
    assert lcp.loop_indications == 2
    assert dict(lcp.request_options())[5] != ours


def test_repeated_loop_indications_declare_loopback() -> None:
    lcp = make(loopback_fail=3)
    for _ in range(3):
        lcp.judge_option(5, request_options(lcp)[5])
    assert lcp.loopback_detected


def test_we_acked_sets_the_peer_values_from_scratch() -> None:
    lcp = make()
    lcp.we_acked([(1, (296).to_bytes(2, "big")), (2, (0xA0000).to_bytes(4, "big")), (7, b""), (8, b"")])
    assert (lcp.peer_mru, lcp.peer_accm, lcp.peer_pfc, lcp.peer_acfc) == (296, 0xA0000, True, True)
    lcp.we_acked([])
    assert (lcp.peer_mru, lcp.peer_accm, lcp.peer_pfc, lcp.peer_acfc) == (1500, 0xFFFFFFFF, False, False)


# --- echo, discard, rejects ---------------------------------------------------------------------


def test_echo_request_is_answered_with_our_magic() -> None:
    lcp, _ = opened()
    lcp.fsm.receive(build_packet(9, 0x33, MAGIC_PEER.to_bytes(4, "big") + b"data"), 0)
    (reply,) = lcp.fsm.take_packets()
    assert reply == build_packet(10, 0x33, lcp.our_magic.to_bytes(4, "big") + b"data")


def test_echo_before_opened_is_ignored() -> None:
    lcp = make()
    lcp.fsm.open(0)
    lcp.fsm.up(0)
    lcp.fsm.take_packets()
    lcp.fsm.receive(build_packet(9, 1, bytes(4)), 0)
    assert lcp.fsm.take_packets() == []


def test_own_echo_request_is_a_loop_indication() -> None:
    lcp, _ = opened()
    lcp.fsm.receive(build_packet(9, 1, lcp.our_magic.to_bytes(4, "big")), 0)
    assert lcp.fsm.take_packets() == []
    assert lcp.loop_indications == 1


def test_keepalive_sends_echo_and_fails_after_unanswered_requests() -> None:
    lcp, _ = opened(echo_interval=10.0, echo_failures=2)
    assert lcp.next_deadline() == 10.0
    lcp.handle_timer(10.0)
    (echo,) = lcp.fsm.take_packets()
    assert echo[0] == 9 and echo[4:8] == lcp.our_magic.to_bytes(4, "big")
    lcp.fsm.receive(build_packet(10, echo[1], MAGIC_PEER.to_bytes(4, "big")), 10.5)
    assert lcp.echos_pending == 0
    lcp.handle_timer(20.0)
    lcp.handle_timer(30.0)
    assert lcp.echos_pending == 2 and not lcp.keepalive_failed
    lcp.handle_timer(40.0)
    assert lcp.keepalive_failed
    assert lcp.next_deadline() is None


def test_keepalive_stops_when_layer_goes_down() -> None:
    lcp, _ = opened(echo_interval=10.0)
    lcp.fsm.receive(build_packet(5, 1), 1.0)  # Terminate-Request: tld
    assert lcp.next_deadline() == 4.0  # only the zrc Restart period remains


def test_code_reject_of_echo_disables_keepalive_and_is_permitted() -> None:
    lcp, _ = opened(echo_interval=10.0)
    lcp.fsm.receive(build_packet(7, 1, build_packet(9, 5, bytes(4))), 1.0)
    assert lcp.fsm.state is State.OPENED
    assert lcp.next_deadline() is None


def test_code_reject_of_configure_request_is_catastrophic() -> None:
    lcp, _ = opened()
    lcp.fsm.receive(build_packet(7, 1, build_packet(1, 5, b"")), 1.0)
    assert lcp.fsm.state is State.STOPPING  # RXJ- in Opened: tld,irc,str/5
    assert lcp.fsm.take_packets()[0][0] == 5


def test_protocol_reject_of_lcp_is_catastrophic_others_are_reported() -> None:
    lcp, _ = opened()
    lcp.fsm.receive(build_packet(8, 1, (0x8021).to_bytes(2, "big") + b"ipcp packet"), 1.0)
    assert lcp.fsm.state is State.OPENED and lcp.rejected_protocols == [0x8021]
    lcp.fsm.receive(build_packet(8, 2, b"\x01"), 1.0)  # too short
    assert lcp.fsm.counters["bad_protocol_reject"] == 1
    lcp.fsm.receive(build_packet(8, 3, (0xC021).to_bytes(2, "big")), 1.0)
    assert lcp.fsm.last_event is Event.RXJ_MINUS and lcp.fsm.state is State.STOPPING


def test_protocol_reject_is_sent_only_when_opened_and_fits_the_peer_mru() -> None:
    lcp = make()
    assert not lcp.protocol_reject(0x8057, b"x")
    lcp, _ = opened()
    lcp.fsm.max_packet = 64
    assert lcp.protocol_reject(0x8057, bytes(200))
    (rej,) = lcp.fsm.take_packets()
    assert rej[0] == 8 and len(rej) == 64 and rej[4:6] == b"\x80\x57"


def test_our_configure_request_is_well_formed() -> None:
    _, sent = opened(auth_methods=("chap",), mru=1200)
    req = sent[0]
    assert req[0] == 1 and int.from_bytes(req[2:4], "big") == len(req)
    assert [t for t, _ in parse_options(req[4:]) or []] == [1, 2, 3, 5, 7, 8]


def test_code_reject_of_protocol_reject_is_tolerated() -> None:
    lcp, _ = opened()
    lcp.fsm.receive(build_packet(7, 1, build_packet(8, 5, b"\x80\x57")), 1.0)
    assert lcp.fsm.state is State.OPENED


def test_every_lcp_count_is_declared_and_each_of_its_own_happens() -> None:
    lcp, _ = opened(echo_interval=10.0)
    peer_magic, our_magic = MAGIC_PEER.to_bytes(4, "big"), lcp.our_magic.to_bytes(4, "big")
    for code, data in (
        (9, peer_magic),  # echo_request
        (9, our_magic),  # and a loop_indication
        (10, peer_magic),  # echo_reply
        (10, b"ab"),  # short_echo
        (11, peer_magic),  # discard_request
        (8, b"\x80\x57"),  # protocol_reject
        (8, b"\x80"),  # bad_protocol_reject
    ):
        lcp.fsm.receive(build_packet(code, 7, data), 1.0)
    lcp.handle_timer(10.0)  # echo_request_sent
    counts = lcp.fsm.counters
    assert LCP_COUNTERS.undeclared(counts) == []
    assert set(counts) >= LCP_COUNTERS.all_keys() - FSM_COUNTERS.all_keys()


def test_an_echoed_reject_of_our_own_echoed_request_does_not_drop_authentication() -> None:
    # A client's tty echoes for a moment while pppd opens it: our Configure-Request comes back,
    # we Reject the authentication it asks of us, and that Reject comes back too.
    lcp = make(auth_methods=("chap",))
    lcp.fsm.open(0)
    lcp.fsm.up(0)
    (req,) = lcp.fsm.take_packets()
    lcp.fsm.receive(req, 0)  # our own request, echoed
    (reject,) = lcp.fsm.take_packets()
    assert reject[0] == 4 and parse_options(reject[4:])[0][0] == 3  # we Reject its auth option
    lcp.fsm.receive(reject, 0)  # the echo of our Reject, with our request's identifier
    (again,) = lcp.fsm.take_packets()
    assert dict(parse_options(again[4:]))[3] == bytes.fromhex("c22305")  # still asking for CHAP
    assert lcp.loop_indications == 2 and not lcp.loopback_detected
    # The real peer then asks with its own magic and Acks ours: authentication stays required.
    lcp.fsm.receive(build_packet(1, 0x10, build_options([(5, MAGIC_PEER.to_bytes(4, "big"))])), 0)
    lcp.fsm.receive(build_packet(2, again[1], again[4:]), 0)
    assert lcp.fsm.state is State.OPENED and lcp.auth_method == "chap"
    assert lcp.loop_indications == 0
