"""Admission: the one place that decides whether a new flow of the client's may proceed.

Every new flow of the client's passes :meth:`Admission.admit` before any host socket is opened:
a TCP connection (the service proxy asks at its SYN) and a UDP flow (the UDP relay asks at its
first datagram; a flow is one client address and port to one of our ports). The decision runs
in a fixed order:

1. **route** — the destination: a flow to our own address goes to the service mapped on its
   port for its protocol — UDP services, and the DNS relay at port 53 — (refused ``no_service``
   if none, ``service_disabled`` if switched off); a flow to any other address takes the
   outbound route (:mod:`pyslirp.runtime.outbound`: refused ``no_route`` unless configured, or
   by its policy lists);
2. **checks** — each :class:`AdmissionCheck` in order: the service's ``max_connections``
   (``service_full``; for UDP, its flows; counted over every line when the server shares its
   counts), the line's own ``max_connections`` (``line_full``: the client's flows of every
   service together), the TCP connects still in progress, per service
   (``max_pending``) and in all (``security.max_pending``), refused ``pending_cap`` — a SYN flood
   from the client must not become a connect flood on the host — then the ``security``
   section's (:mod:`pyslirp.runtime.security`); the first refusal wins. A check that concerns
   TCP only (pending connects, short-connection brute force) lets UDP flows pass.

A refusal is cheap: no socket, no task; the caller counts it by reason (:data:`REFUSED`),
publishes it to the observers and answers the client (TCP: RST; UDP: ICMP port unreachable).
What is admitted is accounted here until :meth:`Admission.closed`, which is what the capacity
check reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from pyslirp.runtime.connector import Connector
from pyslirp.runtime.fake_names import FakeNames
from pyslirp.counters import CounterSpec, Counts
from pyslirp.runtime.observers import Flow

#: every reason a flow can be refused, declared once (the proxy counts ``refused_<reason>``)
REFUSED = CounterSpec(
    "refused",
    "new connections refused before a host socket was opened, by reason",
    reasons=("no_service", "service_disabled", "no_route", "service_full", "port_blocked", "port_not_allowed",
             "rate_limit", "brute_force", "pending_cap", "flow_cap", "denied_by_extension", "admission_error",
             "shutting_down", "breaker_open", "outbound_denied", "outbound_not_allowed", "outbound_port",
             "outbound_unknown_name", "line_full", "line_rate_limit"),
)

if TYPE_CHECKING:
    from pyslirp.config import ServiceConfig
#: the port the outbound route is accounted by (no service of ours is on port 0)
OUTBOUND_PORT = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    """Where an admitted flow goes: one per route, made when the routes are."""

    service: ServiceConfig
    port: int  # our port the service is mapped on
    #: (protocol, our port): what the accounting is kept by (TCP and UDP may share a port)
    key: tuple[str, int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.service.protocol, self.port))

    @property
    def label(self) -> str:
        """The service's name in flows, logs and metrics: its ``name``, or ``port N``."""
        return self.service.name or f"port {self.port}"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # one of REFUSED.reasons
    #: the service's label when the route was found (a check refused); a refusal is its reason
    service: str = field(default="", compare=False)


Decision = Admitted | Refused


class AdmissionCheck(Protocol):
    #: whether the check judges a flow already open too (a reload asks: a port policy does, a
    #: rate limit does not)
    judges_open_flows: bool

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        """The reason to refuse ``flow``, or None to let it pass to the next check."""


class ServiceCapacity:
    """A service's ``max_connections``: refused ``service_full`` when that many are open."""

    judges_open_flows = False

    def __init__(self, active: Mapping[tuple[str, int], int]) -> None:
        self._active = active

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if self._active.get(admitted.key, 0) >= admitted.service.max_connections:
            return "service_full"
        return None


class LineCapacity:
    """A line's ``max_connections``: the client's flows of every service together; refused
    ``line_full`` when that many are open."""

    judges_open_flows = False

    def __init__(self, active: Mapping[tuple[str, int], int], limit: int) -> None:
        self._active = active
        self.limit = limit

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        return "line_full" if sum(self._active.values()) >= self.limit else None


class PendingConnects:
    """TCP connects to services still in progress: at most ``max_pending`` per service and ``total``."""

    judges_open_flows = False

    def __init__(self, pending: Mapping[tuple[str, int], int], total: int) -> None:
        self._pending = pending
        self.total = total

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if flow.protocol != "tcp":
            return None
        if self._pending.get(admitted.key, 0) >= admitted.service.max_pending:
            return "pending_cap"
        if sum(self._pending.values()) >= self.total:
            return "pending_cap"
        return None


class OutboundRoute(Protocol):
    """Where TCP flows to other addresses go (:class:`pyslirp.runtime.outbound.OutboundRoutes`)."""

    #: the names the SOCKS5 proxy resolves (``socks.remote_dns``), else None
    names: FakeNames | None

    def route(self, destination: IPv4Address, port: int, protocol: str) -> "Decision": ...

    def target(self, destination: IPv4Address) -> IPv4Address | str: ...

    def connector(self, destination: IPv4Address, port: int) -> Connector: ...


class Admission:
    """Routes and checks the client's new flows (see the module docstring for the order).

    ``services`` are the configured ones by our port; ``relays`` adds UDP targets that are not
    services of the configuration (the DNS relay at port 53); ``outbound`` routes TCP flows to
    other addresses."""

    def __init__(
        self,
        services: Mapping[int, ServiceConfig],
        local_ip: IPv4Address,
        checks: Sequence[AdmissionCheck] = (),
        max_pending: int = 64,
        relays: Mapping[int, ServiceConfig] | None = None,
        outbound: OutboundRoute | None = None,
        service_flows: Counter[tuple[str, int]] | None = None,
        line_limit: int | None = None,
    ) -> None:
        self.local_ip = local_ip
        #: (protocol, our port) -> admitted flows of this link still open
        self.active: Counts[tuple[str, int]] = Counts()
        #: the same over every line, when the server shares it: what a service's max_connections bounds
        self.service_flows = service_flows if service_flows is not None else self.active
        self._counts = (self.active,) if service_flows is None else (self.active, service_flows)
        #: the line's max_connections (every service together), or None
        self.line_limit = line_limit
        #: (protocol, our port) -> admitted TCP flows whose service has not accepted yet
        self.pending: Counts[tuple[str, int]] = Counts()
        #: set when pyslirp is shutting down: every new flow is refused ``shutting_down``
        self.closing = False
        self.update(services, checks, max_pending, relays, outbound)

    def update(
        self,
        services: Mapping[int, ServiceConfig],
        checks: Sequence[AdmissionCheck] = (),
        max_pending: int = 64,
        relays: Mapping[int, ServiceConfig] | None = None,
        outbound: OutboundRoute | None = None,
    ) -> None:
        """Take new routes and checks (a reload); the flows admitted so far stay accounted."""
        self.outbound = outbound
        #: protocol -> our port -> where a flow there goes
        self.routes: dict[str, dict[int, Admitted]] = {"tcp": {}, "udp": {}}
        for port, service in [*(relays or {}).items(), *services.items()]:
            self.routes[service.protocol][port] = Admitted(service, port)
        line = (LineCapacity(self.active, self.line_limit),) if self.line_limit is not None else ()
        self.checks: tuple[AdmissionCheck, ...] = (
            ServiceCapacity(self.service_flows), *line, PendingConnects(self.pending, max_pending), *checks
        )

    def still_allowed(self, flow: Flow, now: float) -> bool:
        """After :meth:`update`: may an open flow stay? Its service is still there and enabled,
        and no check that judges open flows refuses it (capacity and rate limits do not)."""
        decision = self._route(flow)
        if isinstance(decision, Refused):
            return False
        return all(
            check.check(flow, decision, now) is None
            for check in self.checks
            if getattr(check, "judges_open_flows", False)
        )

    def admit(self, flow: Flow, now: float) -> Decision:
        if self.closing:
            return Refused("shutting_down")
        decision = self._route(flow)
        if isinstance(decision, Refused):
            return decision
        for check in self.checks:
            reason = check.check(flow, decision, now)
            if reason is not None:
                return Refused(reason, decision.label)
        for counts in self._counts:
            counts[decision.key] += 1
        if flow.protocol == "tcp":
            self.pending[decision.key] += 1
        return decision

    def connected(self, admitted: Admitted) -> None:
        """The service accepted a TCP flow ``admit`` let through."""
        _decrement(self.pending, admitted.key)

    def closed(self, admitted: Admitted, connected: bool = True) -> None:
        """A flow ``admit`` let through has ended (``connected``: a UDP flow, or a TCP flow
        after its service accepted)."""
        for counts in self._counts:
            _decrement(counts, admitted.key)
        if not connected:
            _decrement(self.pending, admitted.key)

    def _route(self, flow: Flow) -> Decision:
        address, port = flow.destination
        if address != self.local_ip:
            if self.outbound is None:
                return Refused("no_route")
            return self.outbound.route(address, port, flow.protocol)
        route = self.routes[flow.protocol].get(port)
        if route is None:
            return Refused("no_service")
        if not route.service.enabled:
            return Refused("service_disabled", route.label)
        return route


def _decrement(counts: Counter[tuple[str, int]], key: tuple[str, int]) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
