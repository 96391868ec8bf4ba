"""The RFC 1661 §4 automaton, cell by cell.

The expected table below is transcribed from RFC 1661 §4.1 into this test. Each of the 160 cells
is checked by what the automaton DOES after being driven into the state with real events and
packets: packets sent, layer signals raised, the Restart timer and counter, and the next state.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pyslirp.ppp.fsm import (
    FSM,
    FSM_COUNTERS,
    Action,
    Event,
    FSMConfig,
    Option,
    OptionHandler,
    State,
    Verdict,
    build_options,
    build_packet,
    parse_options,
)

# RFC 1661 §4.1, as printed there (split in two halves as the RFC does).
RFC1661_TABLE = """
      | State
      |    0         1         2         3         4         5
Events| Initial   Starting  Closed    Stopped   Closing   Stopping
------+-----------------------------------------------------------
 Up   |    2     irc,scr/6     -         -         -         -
 Down |    -         -         0       tls/1       0         1
 Open |  tls/1       1     irc,scr/6     3r        5r        5r
 Close|    0       tlf/0       2         2         4         4
  TO+ |    -         -         -         -       str/4     str/5
  TO- |    -         -         -         -       tlf/2     tlf/3
 RCR+ |    -         -       sta/2 irc,scr,sca/8   4         5
 RCR- |    -         -       sta/2 irc,scr,scn/6   4         5
 RCA  |    -         -       sta/2     sta/3       4         5
 RCN  |    -         -       sta/2     sta/3       4         5
 RTR  |    -         -       sta/2     sta/3     sta/4     sta/5
 RTA  |    -         -         2         3       tlf/2     tlf/3
 RUC  |    -         -       scj/2     scj/3     scj/4     scj/5
 RXJ+ |    -         -         2         3         4         5
 RXJ- |    -         -       tlf/2     tlf/3     tlf/2     tlf/3
 RXR  |    -         -         2         3         4         5

      | State
      |    6         7         8           9
Events| Req-Sent  Ack-Rcvd  Ack-Sent    Opened
------+-----------------------------------------
 Up   |    -         -         -           -
 Down |    1         1         1         tld/1
 Open |    6         7         8           9r
 Close|irc,str/4 irc,str/4 irc,str/4 tld,irc,str/4
  TO+ |  scr/6     scr/6     scr/8         -
  TO- |  tlf/3p    tlf/3p    tlf/3p        -
 RCR+ |  sca/8   sca,tlu/9   sca/8   tld,scr,sca/8
 RCR- |  scn/6     scn/7     scn/6   tld,scr,scn/6
 RCA  |  irc/7     scr/6x  irc,tlu/9   tld,scr/6x
 RCN  |irc,scr/6   scr/6x  irc,scr/8   tld,scr/6x
 RTR  |  sta/6     sta/6     sta/6   tld,zrc,sta/5
 RTA  |    6         6         8       tld,scr/6
 RUC  |  scj/6     scj/7     scj/8       scj/9
 RXJ+ |    6         6         8           9
 RXJ- |  tlf/3     tlf/3     tlf/3   tld,irc,str/5
 RXR  |    6         7         8         ser/9
"""

EVENT_NAMES = ["Up", "Down", "Open", "Close", "TO+", "TO-", "RCR+", "RCR-", "RCA", "RCN", "RTR", "RTA", "RUC",
               "RXJ+", "RXJ-", "RXR"]


def parse_rfc_table(text: str) -> dict[tuple[int, str], tuple[tuple[str, ...], int] | None]:
    """{(state number, event name): (action names, next state) or None for '-'}"""
    cells: dict[tuple[int, str], tuple[tuple[str, ...], int] | None] = {}
    states: list[int] = []
    for line in text.splitlines():
        if "|" not in line:
            continue
        label, _, rest = line.partition("|")
        label = label.strip()
        fields = rest.split()
        if not label and fields and all(f.isdigit() for f in fields):
            states = [int(f) for f in fields]
            continue
        if label not in EVENT_NAMES:
            continue
        assert len(fields) == len(states), line
        for state, cell in zip(states, fields):
            if cell == "-":
                cells[(state, label)] = None
                continue
            match = re.fullmatch(r"(?:([a-z,]+)/)?(\d)([prx]?)", cell)
            assert match, cell
            actions = tuple(match.group(1).split(",")) if match.group(1) else ()
            cells[(state, label)] = (actions, int(match.group(2)))
    return cells


EXPECTED = parse_rfc_table(RFC1661_TABLE)


def test_transcription_is_complete() -> None:
    assert len(EXPECTED) == 160
    assert {s for s, _ in EXPECTED} == set(range(10))


# --- a minimal protocol on the automaton -------------------------------------------------------

GOOD = (1, b"\x01")  # an option we Ack
BAD = (1, b"\x02")  # an option we Nak (suggesting GOOD)
ECHO_REQUEST, ECHO_REPLY = 9, 10


class ToyHandler(OptionHandler):
    """Requests GOOD; Acks GOOD, Naks BAD, Rejects anything else; code 9 is Echo-Request (RXR)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_options(self) -> list[Option]:
        return [GOOD]

    def judge_option(self, opt_type: int, value: bytes) -> tuple[Verdict, bytes]:
        if (opt_type, value) == GOOD:
            return Verdict.ACK, value
        if (opt_type, value) == BAD:
            return Verdict.NAK, GOOD[1]
        return Verdict.REJECT, value

    def classify(self, code: int, ident: int, data: bytes) -> Event | None:
        return Event.RXR if code == ECHO_REQUEST else None

    def echo(self, code: int, ident: int, data: bytes, now: float) -> bytes | None:
        return data


RESTART = 3.0
CONFIG = FSMConfig(restart_interval=RESTART, max_configure=3, max_terminate=2, max_failure=5)
# Counters run out after one send: used to reach TO- naturally.
CONFIG_ONE = FSMConfig(restart_interval=RESTART, max_configure=1, max_terminate=1, max_failure=5)


class Driver:
    def __init__(self, config: FSMConfig = CONFIG) -> None:
        self.config = config
        self.fsm = FSM("TOY", ToyHandler(), config)
        self.now = 100.0
        self.sent: list[bytes] = []
        self.last_rx_id = -1

    def drain(self) -> None:
        self.sent.extend(self.fsm.take_packets())
        self.fsm.take_signals()

    def last_request(self) -> bytes | None:
        requests = [p for p in self.sent + self.fsm.take_packets() if p[0] == 1]
        return requests[-1] if requests else None

    def rx(self, code: int, ident: int, data: bytes = b"") -> None:
        self.last_rx_id = ident
        self.fsm.receive(build_packet(code, ident, data), self.now)

    def expire(self) -> None:
        deadline = self.fsm.next_deadline()
        assert deadline is not None
        self.now = deadline
        self.fsm.handle_timer(self.now)

    def ack_our_request(self) -> None:
        req = self.last_request()
        assert req is not None
        self.rx(2, req[1], req[4:])


def drive(state: State, variant: str = "") -> Driver:
    """Bring a fresh automaton into ``state`` through events and packets only."""
    config = CONFIG_ONE if variant == "counter-zero" else CONFIG
    d = Driver(config)
    f = d.fsm
    if state is State.INITIAL:
        pass
    elif state is State.STARTING:
        f.open(d.now)
    elif state is State.CLOSED:
        f.up(d.now)
    elif state is State.STOPPED:
        f.open(d.now)
        f.up(d.now)
        d.drain()
        while f.state is State.REQ_SENT:
            d.expire()
            d.drain()
    elif state is State.CLOSING:
        f.open(d.now)
        f.up(d.now)
        d.drain()
        f.close(d.now)
    elif state is State.STOPPING:
        if variant == "counter-zero":
            d = drive(State.OPENED)
            d.rx(5, 0x77)  # Terminate-Request: tld,zrc,sta/5
        else:
            d = drive(State.CLOSING)
            d.fsm.open(d.now)  # 5r
        return settle(d, state)
    elif state is State.REQ_SENT:
        f.open(d.now)
        f.up(d.now)
    elif state is State.ACK_RCVD:
        d = drive(State.REQ_SENT, variant)
        d.drain()
        d.ack_our_request()
    elif state is State.ACK_SENT:
        d = drive(State.REQ_SENT, variant)
        d.rx(1, 0x55, build_options([GOOD]))
    elif state is State.OPENED:
        d = drive(State.ACK_RCVD, variant)
        d.rx(1, 0x56, build_options([GOOD]))
    return settle(d, state)


def settle(d: Driver, state: State) -> Driver:
    d.drain()
    assert d.fsm.state is state, (d.fsm.state, state)
    return d


PEER_ID = 0x99
UNKNOWN_CODE = 0x20


def fire(d: Driver, event: str) -> None:
    """Produce ``event`` the way it happens: a call, a timer expiry, or a packet from the peer."""
    f = d.fsm
    if event == "Up":
        f.up(d.now)
    elif event == "Down":
        f.down(d.now)
    elif event == "Open":
        f.open(d.now)
    elif event == "Close":
        f.close(d.now)
    elif event in ("TO+", "TO-"):
        wanted_plus = event == "TO+"
        if f.next_deadline() is not None and (f.restart_counter > 0) == wanted_plus:
            d.expire()
        else:
            # The timer is not running here (or cannot have this counter): the event cannot
            # arise from the clock, so inject it to see the automaton refuse or handle it.
            f.handle_event(Event.TO_PLUS if wanted_plus else Event.TO_MINUS, d.now)
    elif event == "RCR+":
        d.rx(1, PEER_ID, build_options([GOOD]))
    elif event == "RCR-":
        d.rx(1, PEER_ID, build_options([BAD]))
    elif event == "RCA":
        req = d.last_request()
        if req is not None:
            d.rx(2, req[1], req[4:])
        else:
            d.rx(2, PEER_ID, build_options([GOOD]))
    elif event == "RCN":
        req = d.last_request()
        d.rx(3, req[1] if req is not None else PEER_ID, build_options([GOOD]))
    elif event == "RTR":
        d.rx(5, PEER_ID)
    elif event == "RTA":
        d.rx(6, PEER_ID)
    elif event == "RUC":
        d.rx(UNKNOWN_CODE, PEER_ID, b"junk")
    elif event == "RXJ+":
        d.rx(7, PEER_ID, build_packet(12, 1, b""))  # Code-Reject of an optional code
    elif event == "RXJ-":
        d.rx(7, PEER_ID, build_packet(1, 1, b""))  # Code-Reject of Configure-Request
    elif event == "RXR":
        d.rx(ECHO_REQUEST, PEER_ID, b"\x00\x00\x00\x00ping")
    else:  # pragma: no cover
        raise AssertionError(event)


# What each sending action puts on the wire (RFC 1661 §5 codes).
SEND_CODE = {"scr": 1, "sca": 2, "scn": 3, "str": 5, "sta": 6, "scj": 7, "ser": ECHO_REPLY}
SIGNAL = {"tlu": Action.TLU, "tld": Action.TLD, "tls": Action.TLS, "tlf": Action.TLF}
TIMER_STATES = {4, 5, 6, 7, 8}  # RFC 1661 §4.2: the Restart timer runs in these only


def variant_for(state: int, event: str) -> str:
    # TO- needs an exhausted Restart counter with the timer running.
    return "counter-zero" if event == "TO-" and state in (4, 5, 6, 8) else ""


CELLS = sorted(EXPECTED, key=lambda c: (c[0], EVENT_NAMES.index(c[1])))


@pytest.mark.parametrize(("state", "event"), CELLS, ids=[f"{State(s).name}-{e}" for s, e in CELLS])
def test_cell(state: int, event: str) -> None:
    d = drive(State(state), variant_for(state, event))
    f = d.fsm
    counter_before = f.restart_counter
    deadline_before = f.next_deadline()
    illegal_before = f.counters["illegal_event"]

    fire(d, event)

    packets = f.take_packets()
    signals = f.take_signals()
    codes = sorted(p[0] for p in packets)
    cell = EXPECTED[(state, event)]

    if cell is None:  # "-": an illegal event is counted and changes nothing
        assert f.counters["illegal_event"] == illegal_before + 1
        assert f.state == state
        assert codes == []
        assert signals == []
        assert f.next_deadline() == deadline_before
        return

    actions, next_state = cell
    assert f.counters["illegal_event"] == illegal_before
    assert f.state == next_state
    assert codes == sorted(SEND_CODE[a] for a in actions if a in SEND_CODE)
    assert signals == [SIGNAL[a] for a in actions if a in SIGNAL]

    # Restart counter (RFC 1661 §4.4/§4.6): irc loads Max-Terminate before a Terminate-Request,
    # else Max-Configure; zrc zeroes it; each Configure- or Terminate-Request decrements it.
    sends = sum(1 for a in actions if a in ("scr", "str"))
    if "irc" in actions:
        start = d.config.max_terminate if "str" in actions else d.config.max_configure
        assert f.restart_counter == start - sends
    elif "zrc" in actions:
        assert f.restart_counter == 0
    else:
        assert f.restart_counter == counter_before - sends

    # Restart timer: stopped outside the timer states, (re)started by scr/str/zrc, else untouched.
    if next_state not in TIMER_STATES:
        assert f.next_deadline() is None
    elif sends or "zrc" in actions:
        assert f.next_deadline() == d.now + RESTART
    else:
        assert deadline_before is not None
        assert f.next_deadline() == deadline_before

    # Answers carry the Identifier of what they answer (RFC 1661 §5.2-§5.5, §5.8).
    for p in packets:
        if p[0] in (2, 3, 6, ECHO_REPLY):
            assert p[1] == d.last_rx_id


# --- behaviour around the table -----------------------------------------------------------------


def test_configure_requests_until_max_configure_then_finished() -> None:
    d = Driver(FSMConfig(restart_interval=2.0, max_configure=4))
    d.fsm.open(0)
    d.fsm.up(0)
    requests = d.fsm.take_packets()
    while d.fsm.state is State.REQ_SENT:
        d.expire()
        requests += d.fsm.take_packets()
    assert [p[0] for p in requests] == [1, 1, 1, 1]
    assert len({p[1] for p in requests}) == 4  # a new Identifier each time
    assert d.fsm.state is State.STOPPED
    assert d.fsm.take_signals() == [Action.TLS, Action.TLF]
    assert d.now == 8.0  # four Restart periods of 2 s after t=0
    assert d.fsm.next_deadline() is None


def test_terminate_requests_until_max_terminate() -> None:
    d = drive(State.OPENED)
    d.fsm.close(d.now, "bye")
    sent = d.fsm.take_packets()
    while d.fsm.state is State.CLOSING:
        d.expire()
        sent += d.fsm.take_packets()
    assert [p[0] for p in sent] == [5, 5]
    assert sent[0][4:] == b"bye"
    assert d.fsm.state is State.CLOSED


def test_stale_and_bogus_acks_are_discarded() -> None:
    d = drive(State.REQ_SENT)
    req = d.last_request()
    assert req is not None
    d.rx(2, (req[1] + 1) & 0xFF, req[4:])  # wrong Identifier
    d.rx(2, req[1], build_options([BAD]))  # options differ from what we sent
    assert d.fsm.state is State.REQ_SENT
    assert d.fsm.counters["stale_reply"] == 1
    assert d.fsm.counters["bad_ack"] == 1
    assert d.fsm.take_packets() == []
    d.rx(2, req[1], req[4:])
    assert d.fsm.state is State.ACK_RCVD


def test_ack_for_an_earlier_copy_is_stale_after_retransmission() -> None:
    d = drive(State.REQ_SENT)
    first = d.last_request()
    assert first is not None
    d.expire()  # TO+: retransmission, new Identifier
    second = d.fsm.take_packets()[0]
    assert second[1] != first[1]
    d.rx(2, first[1], first[4:])
    assert d.fsm.state is State.REQ_SENT
    d.rx(2, second[1], second[4:])
    assert d.fsm.state is State.ACK_RCVD


def test_reject_must_be_a_subset_of_the_request() -> None:
    d = drive(State.REQ_SENT)
    req = d.last_request()
    assert req is not None
    d.rx(4, req[1], build_options([(9, b"zz")]))
    assert d.fsm.counters["bad_reject"] == 1
    assert d.fsm.state is State.REQ_SENT
    d.rx(4, req[1], build_options([GOOD]))
    assert d.fsm.counters["received_reject"] == 1
    assert [p[0] for p in d.fsm.take_packets()] == [1]  # irc,scr/6


def test_reject_wins_over_nak_and_ack_is_an_exact_copy() -> None:
    d = drive(State.REQ_SENT)
    d.rx(1, 7, build_options([GOOD, BAD, (42, b"?")]))
    (reply,) = d.fsm.take_packets()
    assert reply[0] == 4 and reply[1] == 7
    assert parse_options(reply[4:]) == [(42, b"?")]
    d.rx(1, 8, build_options([GOOD, BAD]))
    (reply,) = d.fsm.take_packets()
    assert reply[0] == 3 and parse_options(reply[4:]) == [GOOD]
    data = build_options([GOOD]) + b""
    d.rx(1, 9, data)
    (reply,) = d.fsm.take_packets()
    assert reply == build_packet(2, 9, data)


def test_max_failure_turns_naks_into_rejects() -> None:
    d = Driver(FSMConfig(max_failure=2, max_configure=50))
    d.fsm.open(0)
    d.fsm.up(0)
    d.fsm.take_packets()
    codes = []
    for ident in range(4):
        d.rx(1, ident, build_options([BAD]))
        codes += [p[0] for p in d.fsm.take_packets()]
    assert codes == [3, 3, 4, 4]
    d.rx(1, 10, build_options([GOOD]))  # an Ack resets the failure count
    d.rx(1, 11, build_options([BAD]))
    assert [p[0] for p in d.fsm.take_packets()] == [2, 3]


def test_hint_options_are_added_to_naks_only() -> None:
    class Hinting(ToyHandler):
        def hint_options(self, seen: set[int]) -> list[Option]:
            return [] if 3 in seen else [(3, b"hint")]

        def judge_option(self, opt_type: int, value: bytes) -> tuple[Verdict, bytes]:
            if (opt_type, value) == (3, b"hint"):
                return Verdict.ACK, value
            return super().judge_option(opt_type, value)

    f = FSM("H", Hinting(), CONFIG)
    f.open(0)
    f.up(0)
    f.take_packets()
    f.receive(build_packet(1, 1, build_options([GOOD])), 0)
    (nak,) = f.take_packets()
    assert nak[0] == 3 and parse_options(nak[4:]) == [(3, b"hint")]
    f.receive(build_packet(1, 2, build_options([GOOD, (3, b"hint")])), 0)
    assert f.take_packets()[0][0] == 2


def test_malformed_packets_are_counted_not_raised() -> None:
    d = drive(State.REQ_SENT)
    f = d.fsm
    f.receive(b"\x01\x01\x00", d.now)  # shorter than a header
    f.receive(b"\x01\x01\x00\x09\x01\x03", d.now)  # Length beyond the data
    f.receive(b"\x01\x01\x00\x03", d.now)  # Length below 4
    f.receive(build_packet(1, 1, b"\x01\x09\x01"), d.now)  # option overruns the list
    f.receive(build_packet(1, 1, b"\x01\x01"), d.now)  # option Length < 2
    f.receive(build_packet(7, 1, b""), d.now)  # empty Code-Reject
    assert f.counters["short_packet"] == 1
    assert f.counters["bad_length"] == 2
    assert f.counters["malformed_options"] == 2
    assert f.counters["bad_code_reject"] == 1
    assert f.take_packets() == []
    assert f.state is State.REQ_SENT


def test_padding_after_length_is_ignored() -> None:
    d = drive(State.REQ_SENT)
    d.fsm.receive(build_packet(1, 5, build_options([GOOD])) + b"\x00\x00pad", d.now)
    (ack,) = d.fsm.take_packets()
    assert ack == build_packet(2, 5, build_options([GOOD]))


def test_code_reject_returns_the_packet_truncated_to_max_packet() -> None:
    d = drive(State.OPENED)
    d.fsm.max_packet = 20
    packet = build_packet(UNKNOWN_CODE, 3, bytes(100))
    d.fsm.receive(packet, d.now)
    (rej,) = d.fsm.take_packets()
    assert rej[0] == 7 and len(rej) == 20
    assert rej[4:] == packet[:16]
    assert d.fsm.counters["unknown_code"] == 1


def test_terminate_ack_echoes_the_request_identifier() -> None:
    d = drive(State.OPENED)
    d.rx(5, 0x3C, b"going")
    (ack,) = d.fsm.take_packets()
    assert ack == build_packet(6, 0x3C)


def test_echo_only_answered_in_opened() -> None:
    d = drive(State.ACK_SENT)
    d.rx(ECHO_REQUEST, 1, b"abcd")
    assert d.fsm.take_packets() == []
    d = drive(State.OPENED)
    d.rx(ECHO_REQUEST, 1, b"abcd")
    assert d.fsm.take_packets() == [build_packet(ECHO_REPLY, 1, b"abcd")]


def test_renegotiation_from_opened_resets_options() -> None:
    class Counting(ToyHandler):
        resets = 0

        def reset_options(self) -> None:
            type(self).resets += 1

    f = FSM("C", Counting(), CONFIG)
    f.up(0)
    f.open(0)  # Closed: irc,scr/6 -> a fresh negotiation
    assert Counting.resets == 1
    req = f.take_packets()[0]
    f.receive(build_packet(2, req[1], req[4:]), 0)
    f.receive(build_packet(1, 1, build_options([GOOD])), 0)
    assert f.state is State.OPENED
    f.receive(build_packet(1, 2, build_options([GOOD])), 0)  # tld,scr,sca/8
    assert Counting.resets == 2
    assert f.state is State.ACK_SENT


def test_every_count_is_declared_and_each_declared_count_happens() -> None:
    total: Counter[str] = Counter()
    for state, event in CELLS:  # every event in every state (illegal_event, Code-Reject, ...)
        d = drive(State(state), variant_for(state, event))
        fire(d, event)
        total.update(d.fsm.counters)
    d = drive(State.REQ_SENT)
    req = d.last_request()
    assert req is not None
    for code, ident, data in (
        (2, (req[1] + 1) & 0xFF, req[4:]),  # stale_reply
        (2, req[1], build_options([BAD])),  # bad_ack
        (4, req[1], build_options([(9, b"zz")])),  # bad_reject
        (3, req[1], b"\x01"),  # malformed_options
        (1, 7, build_options([(42, b"?")])),  # sent_reject
        (4, req[1], build_options([GOOD])),  # received_reject
    ):
        d.rx(code, ident, data)
    d.fsm.receive(b"\x01\x01\x00", d.now)  # short_packet
    d.fsm.receive(b"\x01\x01\x00\x09", d.now)  # bad_length
    d.rx(7, 1)  # bad_code_reject
    total.update(d.fsm.counters)
    assert FSM_COUNTERS.undeclared(total) == []
    assert set(total) == FSM_COUNTERS.all_keys()
