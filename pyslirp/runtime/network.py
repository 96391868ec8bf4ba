"""The network side of one link: the sans-IO stack with the service proxy and UDP relays on it.

The gateway drives a :class:`LinkNetwork` as it would drive the bare stack (``receive``,
``take_output``, timers); this class delivers the stack's events to the proxy and the relays
in between, and sweeps idle connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from pyslirp.admission_extension import Extension
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.net.line_budget import BUDGET_COUNTERS
from pyslirp.net.stack import STACK_COUNTERS, ConnectionEvent, ConnectionRequest, Stack, UDPDatagram
from pyslirp.net.tcp_types import TCP_COUNTERS
from pyslirp.ppp.link import LinkUp
from pyslirp.runtime.admission import Admission, AdmissionCheck
from pyslirp.runtime.counter_registry import CounterRegistry
from pyslirp.runtime.observers import GatewayObserver
from pyslirp.runtime.outbound import OutboundRoutes
from pyslirp.runtime.pipe import Pipe
from pyslirp.runtime.proxy import PROXY_COUNTERS, ServiceProxy
from pyslirp.runtime.settings import tcp_config
from pyslirp.runtime.udp_relay import RELAY_COUNTERS, UDPRelay, dns_relay, udp_ports

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 5.0

DISPATCH_COUNTERS = CounterSet("dispatch", [
    CounterSpec("handler_errors", "stack events whose handler raised (the connection was reset)"),
])


class LinkNetwork:
    """Stack + proxy + relays for one link that is up."""

    def __init__(
        self,
        config: PyslirpConfig,
        up: LinkUp,
        wake: Callable[[], None],
        *,
        line: str = "",
        observer: GatewayObserver | None = None,
        registry: CounterRegistry | None = None,
        checks: Sequence[AdmissionCheck] = (),
        extension: Extension | None = None,
        service_flows: Counter[tuple[str, int]] | None = None,
        line_limit: int | None = None,
    ) -> None:
        """``service_flows``: every line's open flows by service, which the server shares so that
        a service's max_connections bounds them all; ``line_limit``: this line's own bound."""
        loop = asyncio.get_running_loop()
        self.now = loop.time
        tcp = config.tcp
        relays = dns_relay(config)
        self.stack = Stack(
            up.local_ip, up.peer_ip, mtu=up.peer_mru, tcp_config=tcp_config(config, up.peer_mru),
            max_connections=tcp.max_connections, udp_ports=udp_ports(config, relays), wake=wake,
            line_budget=tcp.line_budget, allowed_sources=config.security.allowed_sources,
            reassembly_bytes=tcp.reassembly_memory,
        )
        #: one pipeline for the link's TCP connections and UDP flows
        outbound = OutboundRoutes(config.outbound, config.socks, self.now)
        self.stack.udp_outbound = outbound.udp
        self.admission = Admission(
            config.services, up.local_ip, checks, config.security.max_pending, relays, outbound,
            service_flows=service_flows, line_limit=line_limit,
        )
        self.proxy = ServiceProxy(
            config.services, self.stack, self.now, self.admission, line=line, observer=observer, extension=extension
        )
        self.relay = UDPRelay(
            self.admission, self.stack.send_udp, self.stack.refuse_udp, self.now, line=line, observer=observer,
            extension=extension, idle_timeout=config.dns.timeout * 6, dns_timeout=config.dns.timeout,
        )
        self.counters: Counter[str] = Counter()
        self.registry = registry if registry is not None else CounterRegistry()
        label = line or None  # the counters' line label: the client's
        self._registrations = [
            self.registry.attach(STACK_COUNTERS, self.stack.counters, line=label),
            self.registry.attach(TCP_COUNTERS, self.stack.tcp_counters, line=label),
            self.registry.attach(PROXY_COUNTERS, self.proxy.counters, line=label),
            self.registry.attach(RELAY_COUNTERS, self.relay.counters, line=label),
            self.registry.attach(DISPATCH_COUNTERS, self.counters, line=label),
        ]
        if self.stack.budget is not None:
            self._registrations.append(self.registry.attach(BUDGET_COUNTERS, self.stack.budget.counters, line=label))
        self.batch_acks = tcp.batch_acks
        # Sweep often enough that no connection outlives its idle timeout by more than half.
        self.sweep_interval = min([SWEEP_INTERVAL] + [service.idle_timeout / 2 for service in config.services.values()])
        self._next_sweep = self.now() + self.sweep_interval

    def reconfigure(
        self, config: PyslirpConfig, checks: Sequence[AdmissionCheck] = (), extension: Extension | None = None
    ) -> None:
        """A reload: new flows see the new services, relays and checks at once; open ones that the
        new configuration no longer allows are closed (:meth:`Admission.still_allowed`)."""
        relays = dns_relay(config)
        previous = self.admission.outbound
        outbound = OutboundRoutes(
            config.outbound, config.socks, self.now, previous.names if previous is not None else None
        )
        self.admission.update(config.services, checks, config.security.max_pending, relays, outbound)
        self.stack.udp_outbound = outbound.udp
        self.stack.udp_ports = udp_ports(config, relays)
        self.stack.allow_sources(config.security.allowed_sources)
        now = self.now()
        self.proxy.reconfigure(config.services, extension, now)
        self.relay.reconfigure(extension, now)

    def stop_accepting(self) -> None:
        """Shutting down: new flows are refused; open ones go on."""
        self.admission.closing = True

    def open_flows(self) -> int:
        """Connections and UDP flows still open."""
        return len(self.proxy.pipes) + len(self.relay.flows)

    def receive(self, packet: bytes, now: float) -> None:
        self.stack.receive(packet, now)

    def _dispatch(self) -> None:
        for event in self.stack.events():
            try:
                if isinstance(event, (ConnectionEvent, ConnectionRequest)):
                    self.proxy.handle(event)
                elif isinstance(event, UDPDatagram):
                    self.relay.datagram(event)
            except Exception:
                # A fault on one connection must not take the link down: log it, reset that one.
                log.exception("error handling %s", type(event).__name__)
                self.counters["handler_errors"] += 1
                conn = getattr(event, "conn", None)
                if conn is not None:
                    conn.abort(self.now())

    def open_reverse(self, peer_port: int, label: str) -> Pipe:
        """A reverse forward's host client connects: pipe it to the client's ``peer_port``."""
        return self.proxy.open_reverse(peer_port, label)

    def take_output(self) -> list[tuple[bytes, bool]]:
        self._dispatch()
        return self.stack.take_output()

    def interactive(self, now: float) -> bool:
        """Is an interactive flow active (reads must not be held back for batching)?"""
        budget = self.stack.budget
        return budget is not None and budget.interactive(now)

    def read_rest(self, now: float) -> float:
        """How long the line's reader may rest between reads (the line budget's rest; 0 without
        the budget or with ``tcp.batch_acks`` off)."""
        budget = self.stack.budget
        return budget.update_read_rest(now) if budget is not None and self.batch_acks else 0.0

    def next_deadline(self) -> float | None:
        due = self.stack.next_deadline()
        return self._next_sweep if due is None or self._next_sweep < due else due

    def handle_timer(self, now: float) -> None:
        self.stack.handle_timer(now)
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            self.proxy.sweep_idle(now)
            self.relay.sweep_idle(now)

    def state(self) -> dict[str, object]:
        """Connections and buffer occupancy (the counters are in the registry)."""
        connections = self.stack.connections.values()
        return {
            "connections": len(self.stack.connections),
            "line_budget": self.stack.budget.stats() if self.stack.budget is not None else None,
            "tcp_send_buffered": sum(conn.send_buffered for conn in connections),
            "tcp_receive_buffered": sum(conn.rcv_buffered for conn in connections),
            **self.proxy.buffered(),
        }

    def close(self) -> None:
        self.proxy.close()
        self.relay.close()
        self.stack.close()
        for registration in self._registrations:
            self.registry.detach(registration)
