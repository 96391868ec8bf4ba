"""The sans-IO PPP link: LCP, authentication, IPCP and VJ joined by the RFC 1661 §3 phases.

Phases (RFC 1661 §3.2):

    Dead --open()--> Establish --LCP Opened--> Authenticate --success--> Network --IPCP Opened: LinkUp
      ^                  |                         |                        |
      +---- LCP finished (Terminate exchanged, timed out, line down): LinkDown(reason) <-- Terminate

* Establish (§3.4): only LCP frames are processed; anything else is dropped and counted.
* Authenticate (§3.5): LCP and the negotiated authentication protocol; NCP and IP frames dropped.
* Network (§3.6): IPCP runs; IP (and VJ) datagrams flow once IPCP is Opened.
* Terminate (§3.7): LCP is closing; only LCP is processed.

Passive (RFC 1661 §4.2 Stopped, the [p] of the §4.1 table; ``LinkOptions.passive``): when our
Configure-Requests go unanswered (TO-), the link does not go Dead: it stays in Establish with LCP
waiting in Stopped, and the peer's Configure-Request starts the negotiation (counted as
``lcp_passive_wait``; no LinkDown). :meth:`PPPLink.close` and :meth:`PPPLink.line_down` end the
wait.

In any phase with LCP Opened, a frame of a protocol we do not speak (IPv6CP 0x8057, CCP 0x80FD,
IPv6 0x0057, ...) is answered with an LCP Protocol-Reject (§5.7).

The link is sans-IO: the runtime feeds it deframed frames (:meth:`PPPLink.receive_frame`),
outgoing datagrams (:meth:`PPPLink.encode_datagram`), and the time (:meth:`PPPLink.handle_timer`
at :meth:`PPPLink.next_deadline`); it drains control frames with :meth:`PPPLink.take_output`
(each paired with the ACCM to stuff it with: LCP always 0xFFFFFFFF, as Linux ppp_async does) and
events with :meth:`PPPLink.events`. Nothing here raises on bad input: every frame dropped or
rejected is counted by reason in :meth:`PPPLink.counters` (keys: :data:`LINK_COUNTERS`).

Without Van Jacobson compression (``pyslirp.ppp.vj`` failing to import, a broken build) the link
simply does not negotiate VJ.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any, Callable, Union

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.ppp.auth import AUTH_COUNTERS, AuthOptions, AuthOutcome, AuthServer, make_auth_server
from pyslirp.ppp.fsm import FSM_COUNTERS, Action, Event, FSMConfig, State, earlier
from pyslirp.ppp.ipcp import IPCP, IPCPOptions
from pyslirp.ppp.lcp import LCP, LCP_COUNTERS, LCPOptions
from pyslirp.ppp.protocols import (
    DEFAULT_ACCM,
    DEFAULT_MRU,
    PROTO_CHAP,
    PROTO_IP,
    PROTO_IPCP,
    PROTO_LCP,
    PROTO_PAP,
    PROTO_VJ_COMP,
    PROTO_VJ_UNCOMP,
)
from pyslirp.ppp.randomness import OSRandom, RandomSource

try:
    from pyslirp.ppp import vj
except ImportError:  # pragma: no cover - a broken build: the link runs without VJ
    vj = None  # type: ignore[assignment]

__all__ = [
    "AuthFailed",
    "AuthSucceeded",
    "KeepaliveFailed",
    "LINK_COUNTERS",
    "LinkDown",
    "LinkEvent",
    "LinkOptions",
    "LinkUp",
    "LoopbackDetected",
    "NetworkDown",
    "PPPLink",
    "Phase",
    "ProtocolRejected",
    "RX_DISPOSITIONS",
]

log = logging.getLogger(__name__)

_ADDRESS_CONTROL = b"\xff\x03"

FRAMES_RECEIVED = CounterSpec(
    "frames_received", "frames handed on, by protocol", reasons=("lcp", "auth", "ipcp", "ip", "vj"), prefix="rx_"
)
FRAMES_DROPPED = CounterSpec(
    "frames_dropped", "frames dropped or Protocol-Rejected, by reason (RFC 1661 §3, §5.7)", prefix="",
    reasons=(
        "short_frame", "bad_address_control", "bad_protocol", "link_dead", "lcp_not_open", "auth_unexpected",
        "ncp_before_network", "ip_before_ipcp_open", "vj_not_negotiated", "vj_dropped", "protocol_rejected",
        "internal_error",
    ),
)
#: Every frame given to receive_frame ends in exactly one of these counters.
RX_DISPOSITIONS = tuple(key for spec in (FRAMES_RECEIVED, FRAMES_DROPPED) for _, key in spec.keys())

# Where PPPLink.counters() puts each protocol object's own counters.
_LCP_PREFIX, _IPCP_PREFIX, _AUTH_PREFIX, _VJ_TX_PREFIX, _VJ_RX_PREFIX = "lcp_", "ipcp_", "auth_", "vj_tx_", "vj_rx_"

#: The keys of :meth:`PPPLink.counters`.
LINK_COUNTERS = CounterSet("link", [
    CounterSpec("rx_frames", "frames received: each ends in one frames_received or frames_dropped count"),
    FRAMES_RECEIVED,
    FRAMES_DROPPED,
    CounterSpec("frame_error", "damaged frames the deframer reported (VJ resynchronises, RFC 1144 §4.2)"),
    CounterSpec("frames_sent", "frames sent, by protocol", reasons=("lcp", "ipcp", "auth", "ip", "vj"), prefix="tx_"),
    CounterSpec("tx_before_ipcp_open", "datagrams to send before IPCP was Opened, dropped"),
    CounterSpec("tx_over_peer_mru", "datagrams sent although longer than the peer's MRU"),
    CounterSpec("vj_compress_error", "datagrams the VJ compressor failed on, sent as plain IP"),
    CounterSpec("vj_unavailable", "1 when VJ is configured but pyslirp.ppp.vj does not import"),
    CounterSpec("lcp_passive_wait", "LCP negotiations timed out into waiting for the peer (passive)"),
    CounterSpec("open_while_active", "open() calls during a session, ignored"),
    CounterSpec("no_peer_address", "links closed because the address pool had no address for the client"),
])
LINK_COUNTERS.include(_LCP_PREFIX, LCP_COUNTERS, protocol="lcp")
LINK_COUNTERS.include(_IPCP_PREFIX, FSM_COUNTERS, protocol="ipcp")
LINK_COUNTERS.include(_AUTH_PREFIX, AUTH_COUNTERS)
if vj is not None:
    LINK_COUNTERS.include(_VJ_TX_PREFIX, vj.VJ_COMPRESSOR_COUNTERS, direction="tx")
    LINK_COUNTERS.include(_VJ_RX_PREFIX, vj.VJ_DECOMPRESSOR_COUNTERS, direction="rx")

#: Protocol objects' counts, each with its key prefix in LINK_COUNTERS.
_Prefixed = Iterable[tuple[str, Mapping[str, int]]]


class Phase(enum.Enum):
    """RFC 1661 §3.2 link phases."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkUp:
    """IPCP is Opened: datagrams flow between local_ip and peer_ip."""

    local_ip: IPv4Address
    peer_ip: IPv4Address
    dns: tuple[IPv4Address, ...]
    peer_mru: int = DEFAULT_MRU  # the largest datagram the client takes: the stack's MTU
    vj_tx: bool = False
    vj_rx: bool = False


@dataclass(frozen=True)
class NetworkDown:
    """IPCP left Opened (renegotiation or the link going down): stop sending datagrams."""

    reason: str


@dataclass(frozen=True)
class LinkDown:
    """The link is Dead (RFC 1661 §3.1). ``open()`` starts a fresh session."""

    reason: str


@dataclass(frozen=True)
class AuthSucceeded:
    user: str
    method: str
    rechallenge: bool = False  # a periodic CHAP re-challenge (RFC 1994 §2.3) was answered


@dataclass(frozen=True)
class AuthFailed:
    """A security event: a login failed (never carries a password or secret)."""

    user: str
    method: str
    reason: str


@dataclass(frozen=True)
class LoopbackDetected:
    """The line echoes our own LCP packets back (RFC 1661 §6.4)."""

    indications: int


@dataclass(frozen=True)
class ProtocolRejected:
    """The peer sent an LCP Protocol-Reject for one of our protocols."""

    protocol: int


@dataclass(frozen=True)
class KeepaliveFailed:
    """LCP Echo-Requests went unanswered (RFC 1661 §5.8)."""

    unanswered: int


LinkEvent = Union[
    LinkUp, NetworkDown, LinkDown, AuthSucceeded, AuthFailed, LoopbackDetected, ProtocolRejected, KeepaliveFailed
]


# --- options ---------------------------------------------------------------------------------


@dataclass
class LinkOptions:
    """Everything the link negotiates, one options object per protocol; the runtime builds them
    from the validated configuration (``pyslirp.runtime.settings.link_options``)."""

    lcp: LCPOptions = field(default_factory=LCPOptions)
    ipcp: IPCPOptions = field(default_factory=IPCPOptions)
    auth: AuthOptions = field(default_factory=AuthOptions)
    fsm: FSMConfig = field(default_factory=FSMConfig)
    passive: bool = False  # RFC 1661 §4.1 [p]: after LCP times out, wait for the peer in Stopped


# --- the link --------------------------------------------------------------------------------


class PPPLink:
    """One PPP link on one line: ``open()`` per session (the client dialling in)."""

    def __init__(self, options: LinkOptions, rng: RandomSource | None = None) -> None:
        self._rng = rng if rng is not None else OSRandom()
        self._counters: Counter[str] = Counter()
        self._retired: Counter[str] = Counter()  # counters of earlier sessions' protocol objects
        self._apply_options(options)
        self._next_options: LinkOptions | None = None
        self.phase = Phase.DEAD
        self._events: list[LinkEvent] = []
        self._outbox: list[tuple[bytes, int]] = []
        # What the per-datagram paths read, taken from the protocols by _look() after they ran
        # (_moved): the deadline, whether IP may pass, and how to frame what we send.
        self._moved = True
        self._deadline: float | None = None
        self._ip_open = False
        self._tx_accm = DEFAULT_ACCM
        self._tx_acfc = self._tx_pfc = False
        self._reason: str | None = None
        self._ipcp_rejected = False
        self._keepalive_reported = False
        self._loopback_reported = False
        self._vj_tx: Any = None
        self._vj_rx: Any = None
        self._auth: AuthServer | None = None
        #: asked as each authentication begins: the message to refuse every login with (a line
        #: blocked for too many failures; the peer's pppd prints it), or None to authenticate
        self.login_refusal: Callable[[], str | None] = lambda: None
        #: asked as the network phase begins: the address to give the client in place of the
        #: options' peer_ip (an address pool), None when none is free; unset: the options' own
        self.peer_address: Callable[[], IPv4Address | None] | None = None
        self._lcp = self._new_lcp()
        self._ipcp = self._new_ipcp()

    def set_options(self, options: LinkOptions) -> None:
        """The options of the next negotiation (:meth:`open`); a link already open keeps its own."""
        self._next_options = options

    def _apply_options(self, options: LinkOptions) -> None:
        self.options = options
        self._vj_module = vj if options.ipcp.vj else None
        self._ipcp_options = options.ipcp
        if options.ipcp.vj and self._vj_module is None:
            log.warning("VJ compression requested but pyslirp.ppp.vj is unavailable: not negotiating it")
            self._counters["vj_unavailable"] = 1
            self._ipcp_options = replace(options.ipcp, vj=False)

    # --- construction per session -------------------------------------------------------------
    def _new_lcp(self) -> LCP:
        return LCP(self.options.lcp, self.options.fsm, self._rng)

    def _new_ipcp(self) -> IPCP:
        return IPCP(self._ipcp_options, self.options.fsm)

    # --- the protocol objects' counters, kept in _retired when an object is replaced -----------
    def _auth_counters(self) -> _Prefixed:
        return () if self._auth is None else ((_AUTH_PREFIX, self._auth.counters),)

    def _vj_counters(self) -> _Prefixed:
        directions = ((_VJ_TX_PREFIX, self._vj_tx), (_VJ_RX_PREFIX, self._vj_rx))
        return tuple((prefix, codec.counters()) for prefix, codec in directions if codec is not None)

    def _session_counters(self) -> _Prefixed:
        return (
            (_LCP_PREFIX, self._lcp.fsm.counters),
            (_IPCP_PREFIX, self._ipcp.fsm.counters),
            *self._auth_counters(),
            *self._vj_counters(),
        )

    def _retire_auth(self) -> None:
        _add_prefixed(self._retired, self._auth_counters())
        self._auth = None

    def _retire_vj(self) -> None:
        _add_prefixed(self._retired, self._vj_counters())
        self._vj_tx = self._vj_rx = None

    # --- administrative events ----------------------------------------------------------------
    def open(self, now: float) -> None:
        """The line is up and we want a link: a fresh LCP negotiation (Open + Up, RFC 1661 §4.3)
        with new protocol objects; the counters carry on. Ignored unless the link is Dead."""
        if self.phase is not Phase.DEAD:
            self._counters["open_while_active"] += 1
            return
        if self._next_options is not None:
            self._apply_options(self._next_options)
            self._next_options = None
        _add_prefixed(self._retired, self._session_counters())
        self._lcp = self._new_lcp()
        self._ipcp = self._new_ipcp()
        self._auth = self._vj_tx = self._vj_rx = None
        self._reason = None
        self._ipcp_rejected = False
        self._keepalive_reported = self._loopback_reported = False
        self.phase = Phase.ESTABLISH
        self._lcp.fsm.open(now)
        self._lcp.fsm.up(now)
        self._process(now)

    def close(self, reason: str, now: float) -> None:
        """Administrative Close: LCP Terminate-Request, then Dead (LinkDown carries ``reason``)."""
        if self.phase is Phase.DEAD:
            return
        self._close(reason, now)
        self._process(now)
        if self._lcp.fsm.state is State.CLOSED:
            # LCP was waiting passively in Stopped: Close moves it to Closed with nothing to
            # terminate and no tlf (RFC 1661 §4.1, Stopped/Close), so nothing else ends the link.
            self._go_dead(self._reason or reason, now)

    def line_down(self, now: float) -> None:
        """The lower layer went away (carrier lost, pty closed): Down and Close, then Dead."""
        fsm = self._lcp.fsm
        if self.phase is Phase.DEAD:
            # LCP may still sit in Closed/Stopped after finishing: bring it quietly to Initial.
            if fsm.state not in (State.INITIAL, State.STARTING):
                fsm.down(now)
            fsm.close(now)
            fsm.take_signals()
            fsm.take_packets()
            self._moved = True
            return
        if self._reason is None:
            self._reason = "line down"
        if fsm.state not in (State.INITIAL, State.STARTING):
            fsm.down(now)  # Opened: tld -> IPCP down
            self._process(now)
        fsm.close(now)  # Starting: tlf/0 -> Dead
        self._process(now)
        self._go_dead(self._reason or "line down", now)

    # --- frames in -------------------------------------------------------------------------------
    def receive_frame(self, frame: bytes, now: float) -> bytes | None:
        """A deframed frame (FCS removed). Returns an IPv4 datagram if it carried one, else None."""
        self._counters["rx_frames"] += 1
        try:
            datagram = self._receive(bytes(frame), now)
        except Exception:  # a bug must not take the line down: count it, log it, drop the frame
            log.exception("PPP: internal error on a received frame")
            self._counters["internal_error"] += 1
            datagram = None
        if datagram is None:  # a control frame (or a drop): the protocols may have moved on
            self._process(now)
        return datagram

    def frame_error(self) -> None:
        """The deframer saw a bad FCS or an aborted frame: VJ must resynchronise (RFC 1144 §4.2)."""
        self._counters["frame_error"] += 1
        if self._vj_rx is not None:
            self._vj_rx.toss()

    def _drop(self, reason: str) -> None:
        self._counters[reason] += 1

    def _receive(self, frame: bytes, now: float) -> bytes | None:
        # Address and Control (RFC 1662 §3.1), absent under ACFC: always accepted (RFC 1661 §6.6).
        i = 0
        if frame[:2] == _ADDRESS_CONTROL:
            i = 2
        elif frame[:1] == b"\xff":
            self._drop("bad_address_control")
            return None
        # Protocol (RFC 1661 §2): odd last octet, even first octet; 1 octet under PFC (§6.5).
        if len(frame) <= i:
            self._drop("short_frame")
            return None
        if frame[i] & 1:
            protocol = frame[i]
            i += 1
        else:
            if len(frame) < i + 2:
                self._drop("short_frame")
                return None
            if not frame[i + 1] & 1:
                self._drop("bad_protocol")
                return None
            protocol = (frame[i] << 8) | frame[i + 1]
            i += 2
        info = frame[i:]
        if self.phase is Phase.DEAD:
            self._drop("link_dead")
            return None
        if protocol in (PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP):  # the data phase's frames, first
            if self._moved:
                self._look()
            if not self._ip_open:
                self._drop("ip_before_ipcp_open")
                return None
            if not info:
                self._drop("short_frame")
                return None
            if protocol == PROTO_IP:
                self._counters["rx_ip"] += 1
                return info
            if self._vj_rx is None:
                self._drop("vj_not_negotiated")
                return None
            datagram = self._vj_rx.decompress(protocol, info)
            if datagram is None:
                self._drop("vj_dropped")
                return None
            self._counters["rx_vj"] += 1
            return bytes(datagram)
        if protocol == PROTO_LCP:
            self._counters["rx_lcp"] += 1
            self._lcp.fsm.receive(info, now)
            return None
        lcp_opened = self._lcp.fsm.state is State.OPENED
        if protocol in (PROTO_PAP, PROTO_CHAP):
            auth = self._auth
            if lcp_opened and auth is not None and auth.protocol == protocol:
                self._counters["rx_auth"] += 1
                auth.receive(info, now)
            else:
                self._drop("auth_unexpected")
            return None
        if protocol == PROTO_IPCP:
            if self.phase is Phase.NETWORK:
                self._counters["rx_ipcp"] += 1
                self._ipcp.fsm.receive(info, now)
            else:
                self._drop("ncp_before_network")
            return None
        # A protocol we do not speak: Protocol-Reject once LCP is Opened (RFC 1661 §5.7).
        if lcp_opened and self._lcp.protocol_reject(protocol, info):
            self._drop("protocol_rejected")
            log.debug("PPP: Protocol-Reject for protocol %#06x", protocol)
        else:
            self._drop("lcp_not_open")
        return None

    # --- frames out ------------------------------------------------------------------------------
    def encode_datagram(self, packet: bytes) -> bytes | None:
        """The PPP frame (no FCS, no stuffing) carrying an IPv4 datagram, or None before IPCP is Opened."""
        if self._moved:
            self._look()
        if not self._ip_open:
            self._counters["tx_before_ipcp_open"] += 1
            return None
        if self._vj_tx is not None:
            try:
                protocol, payload = self._vj_tx.compress(bytes(packet))
            except Exception:  # never let a compressor bug lose the datagram: send it plain
                log.exception("PPP: VJ compression failed; sending uncompressed")
                self._counters["vj_compress_error"] += 1
                protocol, payload = PROTO_IP, bytes(packet)
        else:
            protocol, payload = PROTO_IP, bytes(packet)
        if len(payload) > self.peer_mru:
            self._counters["tx_over_peer_mru"] += 1
        self._counters["tx_ip" if protocol == PROTO_IP else "tx_vj"] += 1
        return self._frame(protocol, payload)

    def _frame(self, protocol: int, info: bytes) -> bytes:
        """Address/Control unless ACFC, Protocol compressed under PFC when < 0x100 (RFC 1661 §6.5-6.6)."""
        if self._moved:
            self._look()
        header = b"" if self._tx_acfc else _ADDRESS_CONTROL
        if self._tx_pfc and protocol < 0x100:
            return header + bytes((protocol,)) + info
        return header + protocol.to_bytes(2, "big") + info

    def take_output(self) -> list[tuple[bytes, int]]:
        """Control frames to send, oldest first, each with the ACCM to stuff it with."""
        out, self._outbox = self._outbox, []
        return out

    def _flush(self) -> None:
        for packet in self._lcp.fsm.take_packets():
            # LCP: always Address/Control, 2-octet Protocol, default ACCM (RFC 1661 §6.6, RFC 1662 §7.1).
            self._outbox.append((_ADDRESS_CONTROL + PROTO_LCP.to_bytes(2, "big") + packet, DEFAULT_ACCM))
            self._counters["tx_lcp"] += 1
        for packet in self._ipcp.fsm.take_packets():
            self._outbox.append((self._frame(PROTO_IPCP, packet), self.tx_accm))
            self._counters["tx_ipcp"] += 1
        if self._auth is not None:
            for packet in self._auth.take_packets():
                self._outbox.append((self._frame(self._auth.protocol, packet), self.tx_accm))
                self._counters["tx_auth"] += 1

    # --- time ------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`handle_timer` has something to do, or None. Asked after
        every read and flush, it is computed again only after the protocols ran (a datagram
        passing through moves no timer)."""
        if self._moved:
            self._look()
        return self._deadline

    def _look(self) -> None:
        """Take what the per-datagram paths read from the protocols, which moved since the last
        look: the deadline; whether IP may pass (the network phase with IPCP Opened, RFC 1661
        §3.5); and, once LCP is Opened, the peer's ACCM, ACFC and PFC for what we send."""
        lcp = self._lcp
        due = earlier(lcp.next_deadline(), self._ipcp.fsm.next_deadline())
        self._deadline = due if self._auth is None else earlier(due, self._auth.next_deadline())
        self._ip_open = self.phase is Phase.NETWORK and self._ipcp.fsm.state is State.OPENED
        opened = lcp.fsm.state is State.OPENED
        self._tx_accm = lcp.peer_accm if opened else DEFAULT_ACCM
        self._tx_acfc = opened and lcp.peer_acfc
        self._tx_pfc = opened and lcp.peer_pfc
        self._moved = False

    def handle_timer(self, now: float) -> None:
        """Run whatever timers have expired at ``now``."""
        self._lcp.handle_timer(now)
        self._process(now)
        self._ipcp.fsm.handle_timer(now)
        self._process(now)
        if self._auth is not None:
            self._auth.handle_timer(now)
            self._process(now)

    # --- state for the runtime -------------------------------------------------------------------
    @property
    def tx_accm(self) -> int:
        """ACCM for our non-LCP frames: the peer's, once LCP is Opened (RFC 1662 §7.1)."""
        if self._moved:
            self._look()
        return self._tx_accm

    @property
    def rx_accm(self) -> int:
        """Control characters the deframer deletes on receive: the map the peer agreed to, once
        LCP is Opened (RFC 1662 §7.1), else all of them (the peer escapes every one)."""
        if self._lcp.fsm.state is State.OPENED and self._lcp.acked_accm is not None:
            return self._lcp.acked_accm
        return DEFAULT_ACCM

    @property
    def peer_mru(self) -> int:
        """The largest Information field the peer receives (1500 unless negotiated)."""
        if self._lcp.fsm.state is State.OPENED:
            return self._lcp.peer_mru
        return DEFAULT_MRU

    @property
    def lcp_state(self) -> State:
        return self._lcp.fsm.state

    @property
    def ipcp_state(self) -> State:
        return self._ipcp.fsm.state

    @property
    def lcp(self) -> LCP:
        return self._lcp

    @property
    def ipcp(self) -> IPCP:
        return self._ipcp

    def negotiated(self) -> dict[str, Any]:
        """What LCP and IPCP agreed, each once Opened (for ``/status`` and the metrics' info)."""
        lcp, summary = self._lcp, {"phase": self.phase.value}
        if lcp.fsm.state is State.OPENED:
            summary["lcp"] = {
                "mru": lcp.acked_mru or DEFAULT_MRU,
                "peer_mru": lcp.peer_mru,
                "accm": f"{self.rx_accm:#010x}",
                "peer_accm": f"{lcp.peer_accm:#010x}",
                "pfc": lcp.peer_pfc,
                "acfc": lcp.peer_acfc,
                "auth": lcp.auth_method or "none",
                "echo_rtt": lcp.echo_rtt,
            }
        if self._ipcp.fsm.state is State.OPENED:
            addresses = self._ipcp.options
            summary["ipcp"] = {
                "local_ip": str(addresses.local_ip),
                "peer_ip": str(addresses.peer_ip),
                "dns": [str(a) for a in addresses.dns],
                "vj_tx": self._vj_tx is not None,
                "vj_rx": self._vj_rx is not None,
            }
        return summary

    def events(self) -> list[LinkEvent]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    def counters(self) -> dict[str, int]:
        """Every count since the link was made (keys: :data:`LINK_COUNTERS`): the link's own, then
        each protocol's under its prefix."""
        total: Counter[str] = Counter(self._retired)
        total.update(self._counters)
        _add_prefixed(total, self._session_counters())
        return dict(total)

    # --- reacting to the protocols ---------------------------------------------------------------
    def _close(self, reason: str, now: float) -> None:
        if self._reason is None:
            self._reason = reason
        log.info("PPP: closing link: %s", reason)
        self._lcp.fsm.close(now, reason)

    def _process(self, now: float) -> None:
        """Flush packets and act on layer signals, auth outcomes and LCP findings until quiet.
        Every entry point that can move a protocol (and so a timer) ends here, and marks the
        link's view moved (as do the paths to Dead that bypass it)."""
        for _ in range(100):  # each round consumes what the last produced; bounded for safety
            self._moved = True  # the last round's signals may have moved a protocol
            self._flush()
            busy = False
            lcp = self._lcp
            for signal in lcp.fsm.take_signals():
                busy = True
                self._on_lcp_signal(signal, now)
            if lcp.loopback_detected and not self._loopback_reported:
                busy = self._loopback_reported = True
                self._events.append(LoopbackDetected(lcp.loop_indications))
                self._close("loopback", now)
            if lcp.keepalive_failed and not self._keepalive_reported:
                busy = self._keepalive_reported = True
                self._events.append(KeepaliveFailed(lcp.echos_pending))
                self._close("keepalive", now)
            while lcp.rejected_protocols:
                busy = True
                self._on_protocol_rejected(lcp.rejected_protocols.pop(0), now)
            for signal in self._ipcp.fsm.take_signals():
                busy = True
                self._on_ipcp_signal(signal, now)
            if self._auth is not None:
                for outcome in self._auth.take_outcomes():
                    busy = True
                    self._on_auth_outcome(outcome, now)
            if not busy:
                break
        else:
            log.error("PPP: signal processing did not settle")  # pragma: no cover
        self._moved = True  # a look taken during the rounds may be out of date

    def _on_lcp_signal(self, signal: Action, now: float) -> None:
        lcp = self._lcp
        if signal is Action.TLU:
            if lcp.auth_method is not None:
                # RFC 1661 §3.5: authenticate before any network-layer protocol.
                self.phase = Phase.AUTHENTICATE
                self._retire_auth()  # LCP renegotiated: authenticate again, keep the counts
                self._auth = make_auth_server(lcp.auth_method, self.options.auth, self.options.fsm, self._rng)
                self._auth.refusal = self.login_refusal()
                self._auth.start(now)
            elif self.options.lcp.auth_methods:
                self.phase = Phase.AUTHENTICATE
                self._events.append(AuthFailed("", self.options.lcp.auth_methods[0], "peer refused to authenticate"))
                self._close("authentication refused", now)
            else:
                self._enter_network(now)
        elif signal is Action.TLD:
            negotiating = lcp.fsm.state in (State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT)
            self.phase = Phase.ESTABLISH if negotiating else Phase.TERMINATE
            if self._auth is not None:
                self._auth.stop()
            self._network_down(now)
        elif signal is Action.TLF:
            if (
                self.options.passive
                and lcp.fsm.state is State.STOPPED
                and lcp.fsm.last_event is Event.TO_MINUS
                and self._reason is None
            ):
                self._counters["lcp_passive_wait"] += 1  # [p]: wait in Stopped for the peer
                return
            self._go_dead(self._reason or self._lcp_finish_reason(), now)

    def _lcp_finish_reason(self) -> str:
        lcp = self._lcp
        if lcp.peer_terminated:
            text = lcp.peer_terminate_reason
            return f"peer terminated: {text}" if text else "peer terminated"
        if lcp.fsm.last_event is Event.TO_MINUS:
            return "LCP negotiation timed out"
        if lcp.fsm.last_event is Event.RXJ_MINUS:
            return "peer rejected LCP"
        return "LCP finished"

    def _enter_network(self, now: float) -> None:
        # RFC 1661 §3.6: the NCP starts once authentication (if any) is done.
        self.phase = Phase.NETWORK
        if self.peer_address is not None:
            address = self.peer_address()
            if address is None:
                self._counters["no_peer_address"] += 1
                self._close("no address is free for this client", now)
                return
            self._ipcp.options = replace(self._ipcp.options, peer_ip=address)
        self._ipcp.fsm.open(now)
        self._ipcp.fsm.up(now)

    def _network_down(self, now: float) -> None:
        """LCP left Opened: IPCP gets Down and Close (pppd's upper_layers_down)."""
        fsm = self._ipcp.fsm
        if fsm.state not in (State.INITIAL, State.STARTING):
            fsm.down(now)
        fsm.close(now)
        for signal in fsm.take_signals():
            self._on_ipcp_signal(signal, now)
        fsm.take_packets()  # nothing useful can be sent for IPCP now

    def _go_dead(self, reason: str, now: float) -> None:
        if self.phase is Phase.DEAD:
            return
        self.phase = Phase.DEAD
        self._moved = True
        if self._auth is not None:
            self._auth.stop()
        self._network_down(now)
        self._events.append(LinkDown(reason))
        log.info("PPP: link down: %s", reason)

    def _on_ipcp_signal(self, signal: Action, now: float) -> None:
        ipcp = self._ipcp
        if signal is Action.TLU:
            self._retire_vj()
            module = self._vj_module
            if module is not None and ipcp.tx_vj is not None:
                self._vj_tx = module.VJCompressor(ipcp.tx_vj.max_slot_id, ipcp.tx_vj.compress_slot_id)
            if module is not None and ipcp.rx_vj is not None:
                self._vj_rx = module.VJDecompressor(ipcp.rx_vj.max_slot_id, ipcp.rx_vj.compress_slot_id)
            addresses = ipcp.options
            event = LinkUp(
                addresses.local_ip,
                addresses.peer_ip,
                addresses.dns,
                peer_mru=self.peer_mru,
                vj_tx=self._vj_tx is not None,
                vj_rx=self._vj_rx is not None,
            )
            self._events.append(event)
            log.info("PPP: network up: %s <-> %s", event.local_ip, event.peer_ip)
        elif signal is Action.TLD:
            self._retire_vj()
            self._events.append(NetworkDown(self._reason or "IPCP down"))
        elif signal is Action.TLF and self.phase is Phase.NETWORK:
            self._close("peer rejected IPCP" if self._ipcp_rejected else "IPCP negotiation failed", now)

    def _on_auth_outcome(self, outcome: AuthOutcome, now: float) -> None:
        if outcome.ok:
            if self.phase is Phase.AUTHENTICATE and not outcome.rechallenge:
                self._events.append(AuthSucceeded(outcome.user, outcome.method))
                self._enter_network(now)
            elif outcome.rechallenge:
                self._events.append(AuthSucceeded(outcome.user, outcome.method, rechallenge=True))
            return
        self._events.append(AuthFailed(outcome.user, outcome.method, outcome.reason))
        self._close("authentication failed", now)

    def _on_protocol_rejected(self, protocol: int, now: float) -> None:
        self._events.append(ProtocolRejected(protocol))
        log.info("PPP: peer Protocol-Rejected %#06x", protocol)
        if protocol in (PROTO_IPCP, PROTO_IP, PROTO_VJ_COMP, PROTO_VJ_UNCOMP):
            # IPCP is our only NCP: without it the link is useless (RFC 1661 §5.7, pppd likewise).
            self._ipcp_rejected = True
            if self._ipcp.fsm.state not in (State.INITIAL, State.STARTING, State.CLOSED, State.STOPPED):
                self._ipcp.fsm.handle_event(Event.RXJ_MINUS, now)
            self._close("peer rejected IPCP", now)
        elif protocol in (PROTO_PAP, PROTO_CHAP) and self.phase is Phase.AUTHENTICATE and self._auth is not None:
            if self._auth.protocol == protocol and not self._auth.succeeded:
                self._auth.stop()
                self._events.append(AuthFailed("", self._auth.method, "peer rejected the authentication protocol"))
                self._close("authentication refused", now)


def _add_prefixed(into: Counter[str], parts: _Prefixed) -> None:
    for prefix, counts in parts:
        for key, value in counts.items():
            into[prefix + key] += value
