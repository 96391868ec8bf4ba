"""PAP (RFC 1334) and CHAP-MD5 (RFC 1994) authenticators, and that secrets never leak."""

from __future__ import annotations

import hashlib
import logging
import random

from collections import Counter

import pytest

from pyslirp.ppp.auth import AUTH_COUNTERS, AuthOptions, AuthOutcome, CHAPServer, PAPServer, make_auth_server
from pyslirp.ppp.fsm import FSMConfig
from pyslirp.ppp.fsm import build_packet

CREDS = {"alice": "pa55-w0rd", "bob": "hunter2-secret"}
SECRETS = ("pa55-w0rd", "hunter2-secret")


def pap_request(ident: int, user: bytes, password: bytes) -> bytes:
    return build_packet(1, ident, bytes((len(user),)) + user + bytes((len(password),)) + password)


def chap_response(ident: int, challenge: bytes, secret: bytes, name: bytes) -> bytes:
    value = hashlib.md5(bytes((ident,)) + secret + challenge).digest()
    return build_packet(2, ident, bytes((16,)) + value + name)


def parse_challenge(packet: bytes) -> tuple[int, bytes, bytes]:
    assert packet[0] == 1
    size = packet[4]
    return packet[1], packet[5 : 5 + size], packet[5 + size :]


# --- PAP ------------------------------------------------------------------------------------------


def test_pap_good_login() -> None:
    pap = PAPServer(CREDS, timeout=30)
    pap.start(0)
    pap.receive(pap_request(7, b"alice", b"pa55-w0rd"), 1)
    (ack,) = pap.take_packets()
    assert ack[0] == 2 and ack[1] == 7 and ack[5:] == b"Login ok" and ack[4] == len(b"Login ok")
    assert pap.take_outcomes() == [AuthOutcome(True, "alice", "pap")]
    assert pap.next_deadline() is None
    # §2.2.1: the client retransmits (our Ack was lost): the same answer again.
    pap.receive(pap_request(8, b"alice", b"pa55-w0rd"), 2)
    (again,) = pap.take_packets()
    assert again[0] == 2 and again[1] == 8
    assert pap.take_outcomes() == []


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [(b"alice", b"guess-123", "wrong password"), (b"eve", b"pa55-w0rd", "unknown user"),
     (b"\xff\xfe", b"x", "unknown user"), (b"alice", b"", "wrong password")],
)
def test_pap_bad_login(user: bytes, password: bytes, reason: str) -> None:
    pap = PAPServer(CREDS)
    pap.start(0)
    pap.receive(pap_request(1, user, password), 1)
    (nak,) = pap.take_packets()
    assert nak[0] == 3 and nak[1] == 1
    (outcome,) = pap.take_outcomes()
    assert not outcome.ok and outcome.reason == reason and outcome.method == "pap"
    if password:
        assert password.decode(errors="replace") not in repr(outcome)


def test_pap_malformed_requests_are_counted() -> None:
    pap = PAPServer(CREDS)
    pap.start(0)
    for packet in (b"\x01\x01\x00", build_packet(1, 1, b""), build_packet(1, 1, b"\x05ab"),
                   build_packet(1, 1, b"\x01a\x09pw"), build_packet(2, 1, b"\x00")):
        pap.receive(packet, 0)
    assert pap.counters["malformed"] == 4 and pap.counters["unexpected_code"] == 1
    assert pap.take_packets() == [] and pap.take_outcomes() == []


def test_pap_timeout() -> None:
    pap = PAPServer(CREDS, timeout=15)
    pap.start(100)
    assert pap.next_deadline() == 115
    pap.handle_timer(114)
    assert pap.take_outcomes() == []
    pap.handle_timer(115)
    assert pap.take_outcomes() == [AuthOutcome(False, "", "pap", "timeout waiting for Authenticate-Request")]


# --- CHAP -----------------------------------------------------------------------------------------


def chap(**kw: object) -> CHAPServer:
    return CHAPServer(CREDS, random.Random(9), **kw)  # type: ignore[arg-type]


def test_chap_challenge_and_good_response() -> None:
    server = chap(name="gateway")
    server.start(0)
    ident, challenge, name = parse_challenge(server.take_packets()[0])
    assert len(challenge) == 16 and name == b"gateway"
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 1)
    (success,) = server.take_packets()
    assert success[0] == 3 and success[1] == ident
    assert server.take_outcomes() == [AuthOutcome(True, "alice", "chap")]
    # §4.2: a duplicate Response (our Success was lost) is answered again.
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 2)
    assert server.take_packets() == [success]
    assert server.take_outcomes() == []


def test_chap_challenge_comes_from_the_injected_rng() -> None:
    a, b = chap(), chap()
    a.start(0)
    b.start(0)
    assert a.take_packets() == b.take_packets()


@pytest.mark.parametrize(
    ("secret", "name", "reason"),
    [(b"hunter2-secret", b"alice", "wrong response"), (b"pa55-w0rd", b"mallory", "unknown user")],
)
def test_chap_bad_response(secret: bytes, name: bytes, reason: str) -> None:
    server = chap()
    server.start(0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident, challenge, secret, name), 1)
    (failure,) = server.take_packets()
    assert failure[0] == 4 and failure[1] == ident
    (outcome,) = server.take_outcomes()
    assert outcome == AuthOutcome(False, name.decode(), "chap", reason)


def test_chap_response_with_wrong_identifier_is_stale() -> None:
    server = chap()
    server.start(0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response((ident + 1) & 0xFF, challenge, b"pa55-w0rd", b"alice"), 1)
    assert server.take_packets() == [] and server.take_outcomes() == []
    assert server.counters["stale_response"] == 1


def test_chap_retransmits_with_new_identifier_and_value() -> None:
    server = chap(restart_interval=3.0, max_transmits=3, timeout=100.0)
    server.start(0)
    first = parse_challenge(server.take_packets()[0])
    server.handle_timer(3.0)
    second = parse_challenge(server.take_packets()[0])
    assert second[0] != first[0] and second[1] != first[1]
    # A response to the superseded challenge is not accepted.
    server.receive(chap_response(first[0], first[1], b"pa55-w0rd", b"alice"), 3.5)
    assert server.take_outcomes() == []
    server.handle_timer(6.0)
    server.handle_timer(9.0)
    assert server.take_outcomes() == [AuthOutcome(False, "", "chap", "timeout waiting for Response")]


def test_chap_rechallenge_requires_the_same_user() -> None:
    server = chap(rechallenge_interval=60.0)
    server.start(0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 1)
    server.take_packets()
    server.take_outcomes()
    assert server.next_deadline() == 61.0
    server.handle_timer(61.0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 62)
    assert server.take_outcomes() == [AuthOutcome(True, "alice", "chap", rechallenge=True)]
    server.take_packets()
    server.handle_timer(122.0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident, challenge, b"hunter2-secret", b"bob"), 123)
    assert server.take_outcomes() == [
        AuthOutcome(False, "bob", "chap", "user changed on re-challenge", rechallenge=True)
    ]


def test_make_auth_server() -> None:
    rng = random.Random(1)
    options, fsm = AuthOptions(CREDS, timeout=20.0), FSMConfig(restart_interval=2.0, max_configure=4)
    assert isinstance(make_auth_server("pap", options, fsm, rng), PAPServer)
    chap = make_auth_server("chap", options, fsm, rng)
    assert isinstance(chap, CHAPServer)
    # CHAP retransmits on the automaton's restart timer, at most Max-Configure times.
    assert (chap.timeout, chap.restart_interval, chap.max_transmits) == (20.0, 2.0, 4)
    with pytest.raises(ValueError):
        make_auth_server("eap", options, fsm, rng)


def test_every_auth_count_is_declared_and_each_declared_count_happens() -> None:
    pap = PAPServer(CREDS)
    pap.receive(pap_request(1, b"alice", b"pa55-w0rd"), 0)  # unexpected_request: not started
    pap.start(0)
    for packet in (b"\x01", build_packet(2, 1), pap_request(2, b"alice", b"pa55-w0rd"),
                   pap_request(2, b"alice", b"pa55-w0rd")):  # malformed, unexpected_code, success, repeated
        pap.receive(packet, 1)
    server = chap(rechallenge_interval=60.0)
    server.start(0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident + 1, challenge, b"pa55-w0rd", b"alice"), 1)  # stale_response
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 1)
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 2)  # repeated_response
    server.handle_timer(61.0)  # rechallenge
    server.handle_timer(300.0)  # no Response: failure
    total = Counter(pap.counters) + Counter(server.counters)
    assert AUTH_COUNTERS.undeclared(total) == []
    assert set(total) == AUTH_COUNTERS.all_keys()


def test_secrets_never_in_logs_reprs_or_outcomes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for server in (PAPServer(CREDS), chap()):
        server.start(0)
        sent = server.take_packets()
        seen += [packet.hex() for packet in sent]
        if isinstance(server, PAPServer):
            server.receive(pap_request(1, b"alice", b"pa55-w0rd"), 1)
            server.receive(pap_request(2, b"bob", b"hunter2-secretX"), 1)
        else:
            ident, challenge, _ = parse_challenge(sent[0])
            server.receive(chap_response(ident, challenge, b"hunter2-secret", b"alice"), 1)
        seen += [repr(o) for o in server.take_outcomes()]
        seen.append(repr(server))
        seen.append(repr(server.counters))
    text = "\n".join(seen) + caplog.text
    for secret in SECRETS:
        assert secret not in text
        assert secret.encode().hex() not in text


def test_a_refusal_fails_even_the_right_credentials_and_tells_the_peer_why() -> None:
    pap = PAPServer(CREDS)
    pap.refusal = "blocked for a while"
    pap.start(0)
    pap.receive(pap_request(7, b"alice", b"pa55-w0rd"), 1)
    (nak,) = pap.take_packets()
    assert nak[0] == 3 and nak[5:] == b"blocked for a while"  # Authenticate-Nak with the message
    assert pap.take_outcomes() == [AuthOutcome(False, "alice", "pap", "blocked")]

    server = chap()
    server.refusal = "blocked for a while"
    server.start(0)
    ident, challenge, _ = parse_challenge(server.take_packets()[0])
    server.receive(chap_response(ident, challenge, b"pa55-w0rd", b"alice"), 1)
    (failure,) = server.take_packets()
    assert failure[0] == 4 and failure[4:] == b"blocked for a while"  # Failure with the message
    assert server.take_outcomes() == [AuthOutcome(False, "alice", "chap", "blocked")]
