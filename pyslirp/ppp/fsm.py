"""The RFC 1661 §4 option negotiation automaton, shared by LCP and IPCP.

Rules
-----
* Sans-IO: no sockets, no clock, no logging handlers of our own. Every entry point takes
  ``now`` (seconds, any monotonic origin); packets to send are queued and drained with
  :meth:`FSM.take_packets`; layer signals (This-Layer-Up/Down/Started/Finished) are queued and
  drained with :meth:`FSM.take_signals`; the Restart timer is a deadline read with
  :meth:`FSM.next_deadline` and fired with :meth:`FSM.handle_timer`.
* The state transition table of RFC 1661 §4.1 is DATA: ``TRANSITIONS[state][event]`` gives
  ``(actions, next_state)``. The dashes of the RFC table ("illegal transition") are the cells
  missing from it; such an event is counted (``illegal_event``), logged, and otherwise ignored.
* The automaton knows packet formats (§5) but nothing about options: what we request and how we
  judge the peer's options are hooks of an :class:`OptionHandler` (LCP and IPCP subclass it).
* Hooks never re-enter the automaton. A hook that wants something done (close the link, say)
  records it; the link acts after the call returns.

Theory of operation
-------------------
A packet arrives in :meth:`FSM.receive`. Its header is checked (§5: Length beyond the data is a
malformed packet, octets past Length are padding), then it is classified into one event:

  Configure-Request   -> RCR+ / RCR-  (judged option by option, §5.1-§5.4: any option to reject
                                       makes a Configure-Reject of those alone; else any value
                                       to change makes a Configure-Nak; else a Configure-Ack)
  Configure-Ack       -> RCA          (§5.2: Identifier and options must match our last request,
                                       else silently discarded: a stale or bogus Ack)
  Configure-Nak/Rej   -> RCN          (§5.3, §5.4: Identifier must match, a Reject must list a
                                       subset of what we asked, else silently discarded)
  Terminate-Request   -> RTR,  Terminate-Ack -> RTA
  Code-Reject         -> RXJ+ / RXJ-  (the handler says whether the rejected code is one we can
                                       live without)
  other codes         -> the handler may classify them (LCP: Protocol-Reject -> RXJ+/-,
                         Echo-Request/Reply and Discard-Request -> RXR); otherwise RUC.

The event looks up its cell; the state is set, then the cell's actions run in the order written
in the RFC (irc before scr/str, tld before scr). Sending actions use the packet being processed:
sca/scn send the response prepared when the request was judged, sta answers with the received
Identifier, scj returns the received packet, ser answers an Echo-Request.

The Restart timer (§4.6) runs only in Closing, Stopping, Req-Sent, Ack-Rcvd and Ack-Sent. scr and
str (re)start it and decrement the Restart counter; zrc zeroes the counter and starts it; entering
any other state stops it. On expiry the event is TO+ while the counter is > 0, else TO-. irc sets
the counter to Max-Terminate when the same cell sends a Terminate-Request, else Max-Configure.

Max-Failure (§4.6): after that many Configure-Naks sent without sending a Configure-Ack, options
we would Nak are Rejected instead and unsolicited Nak hints are dropped.

Identifiers (§5.1): every Configure-Request, retransmissions included, gets a new Identifier (as
pppd does), so a late reply to an earlier copy is stale and cannot be mistaken for a reply to the
current one. A reply matching the current request that arrives in Ack-Rcvd or Opened is the
RFC's "crossed connection" (§4.3 RCA): the table renegotiates (scr/6x) and we log it.

Implementation options (the footnotes of the §4.1 table): [r] Restart option not implemented
(Open in Stopped/Stopping/Closing/Opened only moves state as the table says); [p] the Passive
option is the link's choice, not the automaton's: TO- in Req-Sent/Ack-Rcvd/Ack-Sent always enters
Stopped with This-Layer-Finished, as the table says, and :class:`PPPLink
<pyslirp.ppp.link.PPPLink>` then goes Dead or, with ``LinkOptions.passive``, leaves LCP waiting
in Stopped for the peer's Configure-Request (§4.2 Stopped); [x] crossed connection handled by
the table itself (scr/6).
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.ppp.protocols import DEFAULT_MRU

__all__ = [
    "Action",
    "Code",
    "Event",
    "FSM",
    "FSMConfig",
    "FSM_COUNTERS",
    "Option",
    "OptionHandler",
    "State",
    "TIMER_STATES",
    "TRANSITIONS",
    "Verdict",
    "build_options",
    "build_packet",
    "parse_options",
    "parse_packet",
]

log = logging.getLogger(__name__)

#: The keys of :attr:`FSM.counters` (LCP adds its own: ``pyslirp.ppp.lcp.LCP_COUNTERS``).
FSM_COUNTERS = CounterSet("fsm", [
    CounterSpec(
        "packets_discarded", "packets silently discarded, by reason (RFC 1661 §5)", prefix="",
        reasons=("short_packet", "bad_length", "malformed_options", "stale_reply", "bad_ack", "bad_reject",
                 "bad_code_reject"),
    ),
    CounterSpec("illegal_event", "events with no transition in the RFC 1661 §4.1 table, ignored"),
    CounterSpec("configure_refusals_sent", "Configure-Naks and -Rejects we sent (§5.3, §5.4)",
                reasons=("nak", "reject"), prefix="sent_"),
    CounterSpec("configure_refusals_received", "Configure-Naks and -Rejects the peer sent",
                reasons=("nak", "reject"), prefix="received_"),
    CounterSpec("crossed_connection", "replies to our request in Ack-Rcvd or Opened: renegotiation (§4.3)"),
    CounterSpec("terminate_request", "Terminate-Requests received (§5.5)"),
    CounterSpec("code_reject", "Code-Rejects received (§5.6)"),
    CounterSpec("unknown_code", "packets of a code we do not know, answered with a Code-Reject (§5.6)"),
])


class State(enum.IntEnum):
    """RFC 1661 §4.2 states, numbered as in the §4.1 table."""

    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(enum.Enum):
    """RFC 1661 §4.3 events."""

    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


class Action(enum.Enum):
    """RFC 1661 §4.4 actions. The four layer signals are also what :meth:`FSM.take_signals` yields."""

    TLU = "tlu"
    TLD = "tld"
    TLS = "tls"
    TLF = "tlf"
    IRC = "irc"
    ZRC = "zrc"
    SCR = "scr"
    SCA = "sca"
    SCN = "scn"
    STR = "str"
    STA = "sta"
    SCJ = "scj"
    SER = "ser"


class Code(enum.IntEnum):
    """Packet codes (RFC 1661 §5; 8-11 are LCP only)."""

    CONFIGURE_REQUEST = 1
    CONFIGURE_ACK = 2
    CONFIGURE_NAK = 3
    CONFIGURE_REJECT = 4
    TERMINATE_REQUEST = 5
    TERMINATE_ACK = 6
    CODE_REJECT = 7
    PROTOCOL_REJECT = 8
    ECHO_REQUEST = 9
    ECHO_REPLY = 10
    DISCARD_REQUEST = 11


# ---------------------------------------------------------------------------------------------
# RFC 1661 §4.1 State Transition Table. Rows are states, columns events; a missing event is the
# RFC's "-" (illegal). Footnotes: 3r/5r/9r restart option, 3p passive option, 6x crossed
# connection (see the module docstring for what we chose).

S = State
E = Event
A = Action
_ = ()  # a cell with no action, e.g. "2"

TRANSITIONS: dict[State, dict[Event, tuple[tuple[Action, ...], State]]] = {
    S.INITIAL: {
        E.UP: (_, S.CLOSED),
        E.OPEN: ((A.TLS,), S.STARTING),
        E.CLOSE: (_, S.INITIAL),
    },
    S.STARTING: {
        E.UP: ((A.IRC, A.SCR), S.REQ_SENT),
        E.OPEN: (_, S.STARTING),
        E.CLOSE: ((A.TLF,), S.INITIAL),
    },
    S.CLOSED: {
        E.DOWN: (_, S.INITIAL),
        E.OPEN: ((A.IRC, A.SCR), S.REQ_SENT),
        E.CLOSE: (_, S.CLOSED),
        E.RCR_PLUS: ((A.STA,), S.CLOSED),
        E.RCR_MINUS: ((A.STA,), S.CLOSED),
        E.RCA: ((A.STA,), S.CLOSED),
        E.RCN: ((A.STA,), S.CLOSED),
        E.RTR: ((A.STA,), S.CLOSED),
        E.RTA: (_, S.CLOSED),
        E.RUC: ((A.SCJ,), S.CLOSED),
        E.RXJ_PLUS: (_, S.CLOSED),
        E.RXJ_MINUS: ((A.TLF,), S.CLOSED),
        E.RXR: (_, S.CLOSED),
    },
    S.STOPPED: {
        E.DOWN: ((A.TLS,), S.STARTING),
        E.OPEN: (_, S.STOPPED),  # 3r
        E.CLOSE: (_, S.CLOSED),
        E.RCR_PLUS: ((A.IRC, A.SCR, A.SCA), S.ACK_SENT),
        E.RCR_MINUS: ((A.IRC, A.SCR, A.SCN), S.REQ_SENT),
        E.RCA: ((A.STA,), S.STOPPED),
        E.RCN: ((A.STA,), S.STOPPED),
        E.RTR: ((A.STA,), S.STOPPED),
        E.RTA: (_, S.STOPPED),
        E.RUC: ((A.SCJ,), S.STOPPED),
        E.RXJ_PLUS: (_, S.STOPPED),
        E.RXJ_MINUS: ((A.TLF,), S.STOPPED),
        E.RXR: (_, S.STOPPED),
    },
    S.CLOSING: {
        E.DOWN: (_, S.INITIAL),
        E.OPEN: (_, S.STOPPING),  # 5r
        E.CLOSE: (_, S.CLOSING),
        E.TO_PLUS: ((A.STR,), S.CLOSING),
        E.TO_MINUS: ((A.TLF,), S.CLOSED),
        E.RCR_PLUS: (_, S.CLOSING),
        E.RCR_MINUS: (_, S.CLOSING),
        E.RCA: (_, S.CLOSING),
        E.RCN: (_, S.CLOSING),
        E.RTR: ((A.STA,), S.CLOSING),
        E.RTA: ((A.TLF,), S.CLOSED),
        E.RUC: ((A.SCJ,), S.CLOSING),
        E.RXJ_PLUS: (_, S.CLOSING),
        E.RXJ_MINUS: ((A.TLF,), S.CLOSED),
        E.RXR: (_, S.CLOSING),
    },
    S.STOPPING: {
        E.DOWN: (_, S.STARTING),
        E.OPEN: (_, S.STOPPING),  # 5r
        E.CLOSE: (_, S.CLOSING),
        E.TO_PLUS: ((A.STR,), S.STOPPING),
        E.TO_MINUS: ((A.TLF,), S.STOPPED),
        E.RCR_PLUS: (_, S.STOPPING),
        E.RCR_MINUS: (_, S.STOPPING),
        E.RCA: (_, S.STOPPING),
        E.RCN: (_, S.STOPPING),
        E.RTR: ((A.STA,), S.STOPPING),
        E.RTA: ((A.TLF,), S.STOPPED),
        E.RUC: ((A.SCJ,), S.STOPPING),
        E.RXJ_PLUS: (_, S.STOPPING),
        E.RXJ_MINUS: ((A.TLF,), S.STOPPED),
        E.RXR: (_, S.STOPPING),
    },
    S.REQ_SENT: {
        E.DOWN: (_, S.STARTING),
        E.OPEN: (_, S.REQ_SENT),
        E.CLOSE: ((A.IRC, A.STR), S.CLOSING),
        E.TO_PLUS: ((A.SCR,), S.REQ_SENT),
        E.TO_MINUS: ((A.TLF,), S.STOPPED),  # 3p
        E.RCR_PLUS: ((A.SCA,), S.ACK_SENT),
        E.RCR_MINUS: ((A.SCN,), S.REQ_SENT),
        E.RCA: ((A.IRC,), S.ACK_RCVD),
        E.RCN: ((A.IRC, A.SCR), S.REQ_SENT),
        E.RTR: ((A.STA,), S.REQ_SENT),
        E.RTA: (_, S.REQ_SENT),
        E.RUC: ((A.SCJ,), S.REQ_SENT),
        E.RXJ_PLUS: (_, S.REQ_SENT),
        E.RXJ_MINUS: ((A.TLF,), S.STOPPED),
        E.RXR: (_, S.REQ_SENT),
    },
    S.ACK_RCVD: {
        E.DOWN: (_, S.STARTING),
        E.OPEN: (_, S.ACK_RCVD),
        E.CLOSE: ((A.IRC, A.STR), S.CLOSING),
        E.TO_PLUS: ((A.SCR,), S.REQ_SENT),
        E.TO_MINUS: ((A.TLF,), S.STOPPED),  # 3p
        E.RCR_PLUS: ((A.SCA, A.TLU), S.OPENED),
        E.RCR_MINUS: ((A.SCN,), S.ACK_RCVD),
        E.RCA: ((A.SCR,), S.REQ_SENT),  # 6x
        E.RCN: ((A.SCR,), S.REQ_SENT),  # 6x
        E.RTR: ((A.STA,), S.REQ_SENT),
        E.RTA: (_, S.REQ_SENT),
        E.RUC: ((A.SCJ,), S.ACK_RCVD),
        E.RXJ_PLUS: (_, S.REQ_SENT),
        E.RXJ_MINUS: ((A.TLF,), S.STOPPED),
        E.RXR: (_, S.ACK_RCVD),
    },
    S.ACK_SENT: {
        E.DOWN: (_, S.STARTING),
        E.OPEN: (_, S.ACK_SENT),
        E.CLOSE: ((A.IRC, A.STR), S.CLOSING),
        E.TO_PLUS: ((A.SCR,), S.ACK_SENT),
        E.TO_MINUS: ((A.TLF,), S.STOPPED),  # 3p
        E.RCR_PLUS: ((A.SCA,), S.ACK_SENT),
        E.RCR_MINUS: ((A.SCN,), S.REQ_SENT),
        E.RCA: ((A.IRC, A.TLU), S.OPENED),
        E.RCN: ((A.IRC, A.SCR), S.ACK_SENT),
        E.RTR: ((A.STA,), S.REQ_SENT),
        E.RTA: (_, S.ACK_SENT),
        E.RUC: ((A.SCJ,), S.ACK_SENT),
        E.RXJ_PLUS: (_, S.ACK_SENT),
        E.RXJ_MINUS: ((A.TLF,), S.STOPPED),
        E.RXR: (_, S.ACK_SENT),
    },
    S.OPENED: {
        E.DOWN: ((A.TLD,), S.STARTING),
        E.OPEN: (_, S.OPENED),  # 9r
        E.CLOSE: ((A.TLD, A.IRC, A.STR), S.CLOSING),
        E.RCR_PLUS: ((A.TLD, A.SCR, A.SCA), S.ACK_SENT),
        E.RCR_MINUS: ((A.TLD, A.SCR, A.SCN), S.REQ_SENT),
        E.RCA: ((A.TLD, A.SCR), S.REQ_SENT),  # 6x
        E.RCN: ((A.TLD, A.SCR), S.REQ_SENT),  # 6x
        E.RTR: ((A.TLD, A.ZRC, A.STA), S.STOPPING),
        E.RTA: ((A.TLD, A.SCR), S.REQ_SENT),
        E.RUC: ((A.SCJ,), S.OPENED),
        E.RXJ_PLUS: (_, S.OPENED),
        E.RXJ_MINUS: ((A.TLD, A.IRC, A.STR), S.STOPPING),
        E.RXR: ((A.SER,), S.OPENED),
    },
}
del S, E, A, _

#: States in which the Restart timer runs (RFC 1661 §4.2: it is "not running" in the others).
TIMER_STATES = frozenset({State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT})

#: States in which a Configure-Request is judged (the table sends sca/scn there).
_JUDGING_STATES = frozenset({State.STOPPED, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED})

#: States with an outstanding Configure-Request, where replies are checked against it (§5.2-§5.4).
_REPLY_CHECK_STATES = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED})

#: An scr from any other state starts a fresh negotiation (options reset to what we want).
_NEGOTIATING_STATES = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT})


# ---------------------------------------------------------------------------------------------
# Packets and options (RFC 1661 §5, §6)

#: A configuration option: (type, value) — the value without the type and length octets.
Option = tuple[int, bytes]


def earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two deadlines, either of which may be unset (None)."""
    if a is None:
        return b
    return a if b is None or a <= b else b


def build_packet(code: int, ident: int, data: bytes = b"") -> bytes:
    """Code, Identifier, Length, Data (RFC 1661 §5)."""
    return bytes((code, ident & 0xFF)) + (len(data) + 4).to_bytes(2, "big") + data


def parse_packet(packet: bytes) -> tuple[int, int, bytes] | None:
    """Code, Identifier and the Data up to Length (RFC 1661 §5: octets past it are padding), or
    None when the header is short or Length runs past the packet. PAP and CHAP packets share
    the format (RFC 1334 §2.2, RFC 1994 §4)."""
    if len(packet) < 4:
        return None
    length = int.from_bytes(packet[2:4], "big")
    if length < 4 or length > len(packet):
        return None
    return packet[0], packet[1], bytes(packet[4:length])


def parse_options(data: bytes) -> list[Option] | None:
    """Split a Configure-* option list (RFC 1661 §6); None if an option's Length is malformed."""
    options: list[Option] = []
    i = 0
    n = len(data)
    while i < n:
        if n - i < 2:
            return None
        length = data[i + 1]
        if length < 2 or i + length > n:
            return None
        options.append((data[i], bytes(data[i + 2 : i + length])))
        i += length
    return options


def build_options(options: list[Option] | tuple[Option, ...]) -> bytes:
    """Encode options as Type, Length, Data (RFC 1661 §6)."""
    return b"".join(bytes((t, len(v) + 2)) + v for t, v in options)


class Verdict(enum.Enum):
    """How we answer one option of the peer's Configure-Request (RFC 1661 §5.2-§5.4)."""

    ACK = "ack"
    NAK = "nak"
    REJECT = "reject"


@dataclass
class FSMConfig:
    """RFC 1661 §4.6 counters and timer."""

    restart_interval: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5


class OptionHandler:
    """The protocol-specific half of the automaton. LCP and IPCP subclass it; defaults are no-ops.

    Hooks must not call back into the :class:`FSM`.
    """

    # --- our Configure-Request -----------------------------------------------------------
    def reset_options(self) -> None:
        """A fresh negotiation starts: go back to the options we want."""

    def request_options(self) -> list[Option]:
        """The options of our next Configure-Request."""
        return []

    def peer_acked(self, options: list[Option]) -> None:
        """The peer acknowledged our request (these are exactly the options we sent)."""

    def peer_naked(self, options: list[Option]) -> None:
        """The peer sent a Configure-Nak for our last request: adjust what we ask."""

    def peer_rejected(self, options: list[Option]) -> None:
        """The peer rejected these options (a subset of our last request): stop asking them."""

    # --- the peer's Configure-Request ------------------------------------------------------
    def judge_option(self, opt_type: int, value: bytes) -> tuple[Verdict, bytes]:
        """Judge one option; for NAK, return the value we suggest. Default: reject everything."""
        return Verdict.REJECT, value

    def hint_options(self, seen: set[int]) -> list[Option]:
        """Options the peer did not send that we want it to (appended to a Nak, RFC 1332 §3.3)."""
        return []

    def we_acked(self, options: list[Option]) -> None:
        """We sent a Configure-Ack for these options of the peer: they are its settings now."""

    # --- layer signals -----------------------------------------------------------------------
    def this_layer_up(self, now: float) -> None:
        """tlu (RFC 1661 §4.4)."""

    def this_layer_down(self, now: float) -> None:
        """tld."""

    def this_layer_started(self, now: float) -> None:
        """tls."""

    def this_layer_finished(self, now: float) -> None:
        """tlf."""

    # --- other packets -----------------------------------------------------------------------
    def terminate_requested(self, data: bytes) -> None:
        """A Terminate-Request arrived (data: the peer's free-form reason, if any)."""

    def code_reject_permitted(self, code: int) -> bool:
        """RXJ+ (True) or RXJ- (False) for a Code-Reject of ``code`` (RFC 1661 §5.6)."""
        return not (Code.CONFIGURE_REQUEST <= code <= Code.CODE_REJECT)

    def classify(self, code: int, ident: int, data: bytes) -> Event | Literal["discard"] | None:
        """An event for a code beyond 1-7 (LCP: 8-11); "discard" to drop a malformed packet
        silently; None for Receive-Unknown-Code."""
        return None

    def echo(self, code: int, ident: int, data: bytes, now: float) -> bytes | None:
        """RXR in Opened (ser): the Echo-Reply data to send, or None to send nothing."""
        return None


@dataclass
class _Received:
    code: int
    ident: int
    data: bytes
    packet: bytes
    response: bytes | None = None  # the Configure-Ack/Nak/Reject prepared for an RCR
    response_code: int = 0
    acked_options: list[Option] | None = None


class FSM:
    """One RFC 1661 automaton instance (one per protocol: LCP, IPCP)."""

    def __init__(self, name: str, handler: OptionHandler, config: FSMConfig | None = None) -> None:
        self.name = name
        self.handler = handler
        self.config = config or FSMConfig()
        self.state = State.INITIAL
        self.restart_counter = 0
        #: Largest packet we send (Code-Reject copies are truncated to it); LCP sets the peer's MRU.
        self.max_packet = DEFAULT_MRU
        #: Data of our Terminate-Requests (a reason text; never a secret).
        self.terminate_data = b""
        #: Keys: :data:`FSM_COUNTERS` (LCP's: ``pyslirp.ppp.lcp.LCP_COUNTERS``).
        self.counters: Counter[str] = Counter()
        #: The last event applied (for the link to explain a This-Layer-Finished).
        self.last_event: Event | None = None
        self._deadline: float | None = None
        self._next_id = 1
        self._req_id: int | None = None
        self._req_data: bytes | None = None
        self._naks_sent = 0
        self._rx: _Received | None = None
        self._outbox: list[bytes] = []
        self._signals: list[Action] = []

    def __repr__(self) -> str:
        return f"<FSM {self.name} {self.state.name}>"

    # --- outputs -------------------------------------------------------------------------------
    def take_packets(self) -> list[bytes]:
        """Packets (Code, Identifier, Length, Data) to send, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def take_signals(self) -> list[Action]:
        """Layer signals (TLU, TLD, TLS, TLF) raised since the last call, in order."""
        out, self._signals = self._signals, []
        return out

    def next_deadline(self) -> float | None:
        """When the Restart timer expires, or None when it is not running."""
        return self._deadline

    # --- administrative and lower-layer events (RFC 1661 §4.3) ---------------------------------
    def up(self, now: float) -> None:
        self.handle_event(Event.UP, now)

    def down(self, now: float) -> None:
        self.handle_event(Event.DOWN, now)

    def open(self, now: float) -> None:
        self.handle_event(Event.OPEN, now)

    def close(self, now: float, reason: str = "") -> None:
        self.terminate_data = reason.encode("utf-8", "replace")[:64]
        self.handle_event(Event.CLOSE, now)

    def handle_timer(self, now: float) -> None:
        """Fire the Restart timer if it has expired (§4.6): TO+ while the counter is > 0, else TO-."""
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self.restart_counter > 0:
            self.handle_event(Event.TO_PLUS, now)
        else:
            self.handle_event(Event.TO_MINUS, now)

    def send_packet(self, code: int, data: bytes) -> int:
        """Send a packet outside the table (LCP Echo-Request, Protocol-Reject); returns its Identifier."""
        ident = self._new_id()
        self._outbox.append(build_packet(code, ident, data[: max(0, self.max_packet - 4)]))
        return ident

    # --- the table -----------------------------------------------------------------------------
    def handle_event(self, event: Event, now: float) -> bool:
        """Apply one event. Returns False (and counts ``illegal_event``) for a "-" cell."""
        cell = TRANSITIONS[self.state].get(event)
        if cell is None:
            self.counters["illegal_event"] += 1
            log.warning("%s: illegal event %s in state %s ignored", self.name, event.value, self.state.name)
            return False
        actions, next_state = cell
        self.last_event = event
        previous = self.state
        self.state = next_state
        if next_state not in TIMER_STATES:
            self._deadline = None
        for action in actions:
            self._do(action, actions, previous, now)
        if previous != next_state:
            log.debug("%s: %s --%s--> %s", self.name, previous.name, event.value, next_state.name)
        return True

    def _do(self, action: Action, actions: tuple[Action, ...], previous: State, now: float) -> None:
        handler = self.handler
        rx = self._rx
        if action is Action.TLU:
            self._signals.append(action)
            handler.this_layer_up(now)
        elif action is Action.TLD:
            self._signals.append(action)
            handler.this_layer_down(now)
        elif action is Action.TLS:
            self._signals.append(action)
            handler.this_layer_started(now)
        elif action is Action.TLF:
            self._signals.append(action)
            handler.this_layer_finished(now)
        elif action is Action.IRC:
            # §4.4: Max-Terminate or Max-Configure "as appropriate".
            if Action.STR in actions:
                self.restart_counter = self.config.max_terminate
            else:
                self.restart_counter = self.config.max_configure
        elif action is Action.ZRC:
            # §4.4: zero the counter; the timer still runs one period before TO-.
            self.restart_counter = 0
            self._deadline = now + self.config.restart_interval
        elif action is Action.SCR:
            self._send_configure_request(previous, now)
        elif action is Action.SCA:
            if rx is not None and rx.response is not None:
                self._outbox.append(rx.response)
                self._naks_sent = 0
                handler.we_acked(rx.acked_options or [])
        elif action is Action.SCN:
            if rx is not None and rx.response is not None:
                self._outbox.append(rx.response)
                if rx.response_code == Code.CONFIGURE_NAK:
                    self._naks_sent += 1
        elif action is Action.STR:
            self._outbox.append(build_packet(Code.TERMINATE_REQUEST, self._new_id(), self.terminate_data))
            self.restart_counter -= 1
            self._deadline = now + self.config.restart_interval
        elif action is Action.STA:
            ident = rx.ident if rx is not None else self._new_id()
            self._outbox.append(build_packet(Code.TERMINATE_ACK, ident))
        elif action is Action.SCJ:
            if rx is not None:
                copy = rx.packet[: max(0, self.max_packet - 4)]
                self._outbox.append(build_packet(Code.CODE_REJECT, self._new_id(), copy))
        elif action is Action.SER:
            if rx is not None:
                reply = handler.echo(rx.code, rx.ident, rx.data, now)
                if reply is not None:
                    self._outbox.append(build_packet(Code.ECHO_REPLY, rx.ident, reply[: max(0, self.max_packet - 4)]))

    def _send_configure_request(self, previous: State, now: float) -> None:
        if previous not in _NEGOTIATING_STATES:
            # A fresh negotiation (pppd's resetci): ask for what we want again.
            self.handler.reset_options()
            self._naks_sent = 0
        data = build_options(self.handler.request_options())
        self._req_id = self._new_id()
        self._req_data = data
        self._outbox.append(build_packet(Code.CONFIGURE_REQUEST, self._req_id, data))
        self.restart_counter -= 1
        self._deadline = now + self.config.restart_interval

    def _new_id(self) -> int:
        ident = self._next_id
        self._next_id = (self._next_id + 1) & 0xFF
        return ident

    # --- receiving -----------------------------------------------------------------------------
    def receive(self, packet: bytes, now: float) -> None:
        """Process one packet of this protocol (the PPP Information field). Never raises."""
        parsed = parse_packet(packet)
        if parsed is None:
            self.counters["short_packet" if len(packet) < 4 else "bad_length"] += 1
            return
        code, ident, data = parsed
        rx = _Received(code, ident, data, bytes(packet[: 4 + len(data)]))
        self._rx = rx
        try:
            event = self._classify(rx)
            if event is not None:
                self.handle_event(event, now)
        finally:
            self._rx = None

    def _classify(self, rx: _Received) -> Event | None:
        code = rx.code
        if code == Code.CONFIGURE_REQUEST:
            return self._classify_request(rx)
        if code in (Code.CONFIGURE_ACK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT):
            return self._classify_reply(rx)
        if code == Code.TERMINATE_REQUEST:
            self.counters["terminate_request"] += 1
            self.handler.terminate_requested(rx.data)
            return Event.RTR
        if code == Code.TERMINATE_ACK:
            return Event.RTA
        if code == Code.CODE_REJECT:
            if not rx.data:
                self.counters["bad_code_reject"] += 1
                return None
            self.counters["code_reject"] += 1
            rejected = rx.data[0]
            log.info("%s: peer Code-Rejected code %d", self.name, rejected)
            return Event.RXJ_PLUS if self.handler.code_reject_permitted(rejected) else Event.RXJ_MINUS
        event = self.handler.classify(code, rx.ident, rx.data)
        if event is None:
            self.counters["unknown_code"] += 1
            return Event.RUC
        if event == "discard":
            return None
        return event

    def _classify_request(self, rx: _Received) -> Event | None:
        options = parse_options(rx.data)
        if options is None:
            self.counters["malformed_options"] += 1
            return None
        if self.state not in _JUDGING_STATES:
            return Event.RCR_PLUS  # Closed/Closing/Stopping answer the same whatever it holds
        give_up_naks = self._naks_sent >= self.config.max_failure
        acks: list[Option] = []
        naks: list[Option] = []
        rejects: list[Option] = []
        for opt_type, value in options:
            verdict, suggestion = self.handler.judge_option(opt_type, value)
            if verdict is Verdict.ACK:
                acks.append((opt_type, value))
            elif verdict is Verdict.NAK and not give_up_naks:
                naks.append((opt_type, suggestion))
            else:
                rejects.append((opt_type, value))
        if not rejects and not give_up_naks:
            naks.extend(self.handler.hint_options({t for t, _ in options}))
        if rejects:
            rx.response_code = Code.CONFIGURE_REJECT
            rx.response = build_packet(Code.CONFIGURE_REJECT, rx.ident, build_options(rejects))
            self.counters["sent_reject"] += 1
            return Event.RCR_MINUS
        if naks:
            rx.response_code = Code.CONFIGURE_NAK
            rx.response = build_packet(Code.CONFIGURE_NAK, rx.ident, build_options(naks))
            self.counters["sent_nak"] += 1
            return Event.RCR_MINUS
        rx.response_code = Code.CONFIGURE_ACK
        rx.response = build_packet(Code.CONFIGURE_ACK, rx.ident, rx.data)  # §5.2: an exact copy
        rx.acked_options = options
        return Event.RCR_PLUS

    def _classify_reply(self, rx: _Received) -> Event | None:
        code = rx.code
        event = Event.RCA if code == Code.CONFIGURE_ACK else Event.RCN
        if self.state not in _REPLY_CHECK_STATES:
            return event  # no request outstanding: the table answers (sta) or ignores it
        if rx.ident != self._req_id or self._req_data is None:
            self.counters["stale_reply"] += 1
            return None
        options = parse_options(rx.data)
        if options is None:
            self.counters["malformed_options"] += 1
            return None
        if code == Code.CONFIGURE_ACK:
            if rx.data != self._req_data:  # §5.2: the options must match exactly
                self.counters["bad_ack"] += 1
                return None
            self._note_crossed(event)
            self.handler.peer_acked(options)
            return event
        if code == Code.CONFIGURE_REJECT:
            sent = parse_options(self._req_data) or []
            if not _is_ordered_subset(options, sent):  # §5.4: only options we sent, unmodified
                self.counters["bad_reject"] += 1
                return None
            self._note_crossed(event)
            self.counters["received_reject"] += 1
            self.handler.peer_rejected(options)
            return event
        self._note_crossed(event)
        self.counters["received_nak"] += 1
        self.handler.peer_naked(options)
        return event

    def _note_crossed(self, event: Event) -> None:
        if self.state in (State.ACK_RCVD, State.OPENED):
            self.counters["crossed_connection"] += 1
            log.info("%s: %s in %s: crossed connection, renegotiating", self.name, event.value, self.state.name)


def _is_ordered_subset(part: list[Option], whole: list[Option]) -> bool:
    i = 0
    for option in part:
        while i < len(whole) and whole[i] != option:
            i += 1
        if i == len(whole):
            return False
        i += 1
    return True
