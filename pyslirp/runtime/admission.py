"""Admission: the one place that decides whether a new flow of the client's may proceed.

Every new TCP connection passes :meth:`Admission.admit` before any host socket is opened. The
decision runs in a fixed order:

1. **route** — the destination: a flow to our own address goes to the service mapped on its
   port (refused ``no_service`` if none, ``service_disabled`` if switched off); a flow to any
   other address is refused ``no_route`` (outbound routing is not configured);
2. **checks** — each :class:`AdmissionCheck` in order: the service's ``max_connections``
   (``service_full``), the connects still in progress, per service (``max_pending``) and in all
   (``security.max_pending``), refused ``pending_cap`` — a SYN flood from the client must not
   become a connect flood on the host — then the ``security`` section's
   (:mod:`pyslirp.runtime.security`); the first refusal wins.

A refusal is cheap: no socket, no task; the caller counts it by reason (:data:`REFUSED`),
publishes it to the observers and answers the client (RST). What is admitted is accounted here
until :meth:`Admission.closed`, which is what the capacity check reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from pyslirp.config import ServiceConfig
from pyslirp.counters import CounterSpec
from pyslirp.runtime.observers import Flow

#: every reason a flow can be refused, declared once (the proxy counts ``refused_<reason>``)
REFUSED = CounterSpec(
    "refused",
    "new connections refused before a host socket was opened, by reason",
    reasons=("no_service", "service_disabled", "no_route", "service_full", "port_blocked", "port_not_allowed",
             "rate_limit", "brute_force", "pending_cap", "denied_by_extension", "admission_error"),
)


@dataclass(frozen=True, slots=True)
class Admitted:
    service: ServiceConfig
    port: int  # our port the service is mapped on

    @property
    def label(self) -> str:
        """The service's name in flows, logs and metrics: its ``name``, or ``port N``."""
        return self.service.name or f"port {self.port}"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # one of REFUSED.reasons


Decision = Admitted | Refused


class AdmissionCheck(Protocol):
    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        """The reason to refuse ``flow``, or None to let it pass to the next check."""


class ServiceCapacity:
    """A service's ``max_connections``: refused ``service_full`` when that many are open."""

    def __init__(self, active: Mapping[int, int]) -> None:
        self._active = active

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if self._active.get(admitted.port, 0) >= admitted.service.max_connections:
            return "service_full"
        return None


class PendingConnects:
    """Connects to services still in progress: at most ``max_pending`` per service and ``total``."""

    def __init__(self, pending: Mapping[int, int], total: int) -> None:
        self._pending = pending
        self.total = total

    def check(self, flow: Flow, admitted: Admitted, now: float) -> str | None:
        if self._pending.get(admitted.port, 0) >= admitted.service.max_pending:
            return "pending_cap"
        if sum(self._pending.values()) >= self.total:
            return "pending_cap"
        return None


class Admission:
    """Routes and checks the client's new TCP flows (see the module docstring for the order)."""

    def __init__(
        self,
        services: Mapping[int, ServiceConfig],
        local_ip: IPv4Address,
        checks: Sequence[AdmissionCheck] = (),
        max_pending: int = 64,
    ) -> None:
        self.services = services
        self.local_ip = local_ip
        #: our port -> admitted flows still open
        self.active: Counter[int] = Counter()
        #: our port -> admitted flows whose service has not accepted yet
        self.pending: Counter[int] = Counter()
        self.checks: tuple[AdmissionCheck, ...] = (
            ServiceCapacity(self.active), PendingConnects(self.pending, max_pending), *checks
        )

    def admit(self, flow: Flow, now: float) -> Decision:
        decision = self._route(flow)
        if isinstance(decision, Refused):
            return decision
        for check in self.checks:
            reason = check.check(flow, decision, now)
            if reason is not None:
                return Refused(reason)
        self.active[decision.port] += 1
        self.pending[decision.port] += 1
        return decision

    def connected(self, admitted: Admitted) -> None:
        """The service accepted a flow ``admit`` let through."""
        _decrement(self.pending, admitted.port)

    def closed(self, admitted: Admitted, connected: bool) -> None:
        """A flow ``admit`` let through has ended (``connected``: after its service accepted)."""
        _decrement(self.active, admitted.port)
        if not connected:
            _decrement(self.pending, admitted.port)

    def _route(self, flow: Flow) -> Decision:
        address, port = flow.destination
        if address != self.local_ip:
            return Refused("no_route")
        service = self.services.get(port)
        if service is None or service.protocol != "tcp":
            return Refused("no_service")
        if not service.enabled:
            return Refused("service_disabled")
        return Admitted(service, port)


def _decrement(counts: Counter[int], port: int) -> None:
    counts[port] -= 1
    if counts[port] <= 0:
        del counts[port]
