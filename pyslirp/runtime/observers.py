"""What watches a gateway: observers of its events, and taps on its frames.

**Observers.** A :class:`GatewayObserver` is told what happens on a line: the PPP link coming up
and going down, authentication succeeding or failing, the client's connections being opened,
refused and closed, and flows the runtime drops. Metrics, the audit log and brute-force
detection subscribe to an :class:`Observers` fan-out; the gateway and the proxy publish to it
and never learn who listens. An observer that raises is logged and the others still run: a bug
in a metric never takes down a link. :class:`LogObserver` writes the operator's log lines.

Events fire per link, per authentication and per connection, never per packet: what the
protocol cores drop per packet they count (``pyslirp.counters``), and exporters read the counts.

**Frame taps.** A :class:`FrameTap` sees every PPP frame that crosses the line, each way, with
its direction and the event loop's time: received frames after the deframer (unstuffed, FCS
checked and removed), sent frames before the framer. The pcap writer and ``--debug`` decoding
attach here. With no tap attached the gateway pays one truth test per read.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Callable, Protocol, Union

from pyslirp.ppp.link import (
    AuthFailed,
    AuthSucceeded,
    KeepaliveFailed,
    LinkDown,
    LinkEvent,
    LinkUp,
    LoopbackDetected,
    NetworkDown,
    ProtocolRejected,
)

log = logging.getLogger("pyslirp.runtime.gateway")
security_log = logging.getLogger("pyslirp.security")

LinkProblem = Union[LoopbackDetected, ProtocolRejected, KeepaliveFailed]


@dataclass(frozen=True, slots=True)
class Flow:
    """One of the client's flows as the runtime sees it: which line, which protocol, who, where,
    and which service or route it was given (empty while it is being admitted)."""

    line: str
    protocol: str  # "tcp" | "udp"
    client: tuple[IPv4Address, int]
    destination: tuple[IPv4Address, int]
    service: str = ""
    reverse: bool = False  # a reverse forward: a host client connecting into the client

    def describe(self) -> str:
        arrow = "<-" if self.reverse else "->"
        (caddr, cport), (daddr, dport) = self.client, self.destination
        target = f"{daddr}:{dport}" + (f" ({self.service})" if self.service else "")
        return f"{self.line}: {self.protocol} {caddr}:{cport} {arrow} {target}"


@dataclass(frozen=True, slots=True)
class ConnectionSummary:
    """How a connection that opened ended, and what it carried.

    ``outcome``: "closed" (FIN both ways), "client_reset", "client_aborted", "service_reset",
    "idle_closed", "data_after_service_closed", "link_down" or "closed_by_reload".
    """

    outcome: str
    to_service: int  # bytes
    to_client: int
    duration: float  # seconds from the SYN to the end
    srtt: float | None  # the connection's smoothed round trip to the client (None: not measured)


class GatewayObserver:
    """Override what you need: every method is a no-op here."""

    def link_up(self, line: str, event: LinkUp) -> None: ...
    def network_down(self, line: str, event: NetworkDown) -> None: ...
    def link_down(self, line: str, event: LinkDown) -> None: ...
    def auth_succeeded(self, line: str, event: AuthSucceeded) -> None: ...
    def auth_failed(self, line: str, event: AuthFailed) -> None: ...
    def link_problem(self, line: str, event: LinkProblem) -> None: ...
    def connection_opened(self, flow: Flow) -> None: ...
    def connection_refused(self, flow: Flow, reason: str) -> None: ...
    def connection_closed(self, flow: Flow, summary: ConnectionSummary) -> None:
        """A connection that opened has ended. A flow that never opened is refused instead
        (reason "service_unavailable", or how the client gave up)."""

    def dropped(self, line: str, where: str, reason: str) -> None:
        """The runtime discarded a flow's traffic (``where``: "udp_relay", ...) for ``reason``."""


#: the observer method each of the link's events goes to
LINK_EVENT_METHODS: dict[type, str] = {
    LinkUp: "link_up",
    NetworkDown: "network_down",
    LinkDown: "link_down",
    AuthSucceeded: "auth_succeeded",
    AuthFailed: "auth_failed",
    LoopbackDetected: "link_problem",
    ProtocolRejected: "link_problem",
    KeepaliveFailed: "link_problem",
}

_OBSERVER_METHODS = tuple(name for name in vars(GatewayObserver) if not name.startswith("_"))


class Observers(GatewayObserver):
    """Every call goes to each subscribed observer in turn."""

    def __init__(self, *observers: GatewayObserver) -> None:
        self._observers: list[GatewayObserver] = list(observers)

    def subscribe(self, observer: GatewayObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: GatewayObserver) -> None:
        self._observers.remove(observer)

    def link_event(self, line: str, event: LinkEvent) -> None:
        """Publish one of the PPP link's events to the method that takes it."""
        getattr(self, LINK_EVENT_METHODS[type(event)])(line, event)


def _fan_out(name: str) -> Callable[..., None]:
    def publish(self: Observers, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, name)(*args)
            except Exception:
                log.exception("observer %s failed on %s", type(observer).__name__, name)

    publish.__name__ = name
    publish.__doc__ = getattr(GatewayObserver, name).__doc__
    return publish


for _name in _OBSERVER_METHODS:
    setattr(Observers, _name, _fan_out(_name))


class LogObserver(GatewayObserver):
    """The operator's log: link changes, logins (on the ``pyslirp.security`` logger) and refusals."""

    def link_up(self, line: str, event: LinkUp) -> None:
        log.info("%s: link up: we are %s, the client is %s", line, event.local_ip, event.peer_ip)

    def network_down(self, line: str, event: NetworkDown) -> None:
        log.info("%s: IPCP down", line)

    def link_down(self, line: str, event: LinkDown) -> None:
        log.info("%s: link down: %s", line, event.reason)

    def auth_succeeded(self, line: str, event: AuthSucceeded) -> None:
        again = ", re-challenge" if event.rechallenge else ""
        security_log.info("%s: authenticated user %r (%s%s)", line, event.user, event.method, again)

    def auth_failed(self, line: str, event: AuthFailed) -> None:
        security_log.warning(
            "%s: authentication failed: user %r method %s: %s", line, event.user, event.method, event.reason
        )

    def link_problem(self, line: str, event: LinkProblem) -> None:
        log.info("%s: %s", line, event)

    def connection_refused(self, flow: Flow, reason: str) -> None:
        log.info("%s: refused: %s", flow.describe(), reason)


class Direction(enum.Enum):
    RECEIVED = "rx"  # from the client
    SENT = "tx"  # to the client


class FrameTap(Protocol):
    def frame(self, direction: Direction, frame: bytes, now: float) -> None:
        """A PPP frame (address/control, protocol, information; no flags, stuffing or FCS)."""
