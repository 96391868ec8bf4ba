"""What a running gateway reports about itself: the ``/status`` and ``/health`` documents, and the
periodic probe of the services behind it.

``/status`` is the operator's overview (what ``pyslirp status`` prints, and what SIGUSR1 logs on
one line): uptime, the line, the link's phase and what LCP and IPCP negotiated, the client's
address, every open connection with its service, TCP state, age and bytes each way, the reverse
forwards, the session's queues and processing times, and every counter.

``/health`` says whether the gateway is doing its job: HTTP 200 only while the line is open and
the link is up (IPCP opened), 503 otherwise with the reason; each component's state is listed
either way, including whether each enabled service answered its latest probe.

:class:`ServiceProbe` connects to each enabled TCP service every ``interval`` seconds and closes
at once (one SYN, one FIN per service and interval); a service that refuses or times out is
reported unreachable with the reason, never retried in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pyslirp import __version__
from pyslirp.runtime.connector import ConnectFailed, ServiceConnector
from pyslirp.runtime.counter_registry import CounterRegistry

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig, ServiceConfig

log = logging.getLogger(__name__)

PROBE_INTERVAL = 30.0


@dataclass
class ProbeResult:
    reachable: bool | None = None  # None: not probed yet
    error: str = ""
    checked: float = 0.0  # wall-clock time of the latest probe


class ServiceProbe:
    """Connects to every enabled TCP service periodically and keeps the latest result."""

    def __init__(self, services: dict[int, ServiceConfig], interval: float = PROBE_INTERVAL) -> None:
        self.interval = interval
        self.targets: dict[str, ServiceConnector] = {}
        self.results: dict[str, ProbeResult] = {}
        self.watch(services)

    def watch(self, services: dict[int, ServiceConfig]) -> None:
        """Probe these services from now on (a reload); results of those still probed are kept."""
        self.targets = {
            # one connect a probe: a retry would only delay the verdict
            service.name or f"port {port}": ServiceConnector(service.model_copy(update={"connect_retries": 0}))
            for port, service in services.items()
            if service.enabled and service.protocol == "tcp"
        }
        self.results = {name: self.results.get(name, ProbeResult()) for name in self.targets}

    async def probe_once(self) -> None:
        await asyncio.gather(*(self._probe(name, connector) for name, connector in self.targets.items()))

    async def run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.interval)

    async def _probe(self, name: str, connector: ServiceConnector) -> None:
        result = self.results[name]
        was = result.reachable
        try:
            sock = await connector.connect()
        except ConnectFailed as exc:
            result.reachable, result.error = False, exc.reason
        else:
            sock.close()
            result.reachable, result.error = True, ""
        result.checked = time.time()
        if was is not None and was != result.reachable:
            log.warning("service %s is %s%s", name, "reachable again" if result.reachable else "unreachable",
                        f": {result.error}" if result.error else "")


class GatewayView(Protocol):
    """What the documents read of the running server (``pyslirp.runtime.server.Server``)."""

    config: PyslirpConfig
    registry: CounterRegistry
    probe: ServiceProbe
    breakers: Any  # runtime.breaker.ServiceBreakers, or None
    started: float  # wall clock
    metrics_serving: bool

    lines: list[Any]  # runtime.served_line.ServedLine, in the configuration's order

    def line_description(self) -> str: ...
    def session(self) -> Any: ...  # the first line's Gateway, or None


def status_document(server: GatewayView) -> dict[str, Any]:
    gateway = server.session()
    network = gateway.network if gateway is not None else None
    link = gateway.link.negotiated() if gateway is not None else {"phase": "dead"}
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.time() - server.started, 1),
        "line": {
            "port": server.line_description(),
            "session": gateway.session.name if gateway is not None else None,
            "links_started": gateway.links_started if gateway is not None else 0,
        },
        "link": link,
        "client": link.get("ipcp", {}).get("peer_ip"),
        "connections": network.proxy.connections() if network is not None else [],
        "forwards": [
            {"listen": f"{f.listen_host}:{f.listen_port}", "peer_port": f.peer_port} for f in server.config.forwards
        ],
        "services": _services(server),
        "session": gateway.stats() if gateway is not None else None,
        "counters": server.registry.snapshot(),
        "lines": [_line(served) for served in server.lines],
    }


def _line(served: Any) -> dict[str, Any]:
    """One line of ``/status``'s ``lines``: where it is, and each client on it."""
    clients = []
    for label, gateway in sorted(served.gateways.items()):
        link = gateway.link.negotiated()
        network = gateway.network
        clients.append({
            "name": label,
            "session": gateway.session.name,
            "phase": link["phase"],
            "client": link.get("ipcp", {}).get("peer_ip"),
            "connections": len(network.proxy.connections()) if network is not None else 0,
            "links_started": gateway.links_started,
        })
    return {
        "name": served.name,
        "port": served.line.describe().splitlines()[0],
        "max_clients": served.settings.max_clients,
        "clients": clients,
    }


def health_document(server: GatewayView) -> tuple[int, dict[str, Any]]:
    """The HTTP status (200 healthy, 503 not) and the document."""
    gateway = server.session()
    line_open = gateway is not None
    phase = gateway.link.phase.value if gateway is not None else "dead"
    link_up = gateway is not None and gateway.network is not None
    gateways = [each for served in server.lines for each in served.gateways.values()]
    if len(server.lines) > 1 or any(served.settings.max_clients > 1 for served in server.lines):
        # Several lines: healthy while any client's link is up (idle lines are normal).
        line_open = bool(gateways)
        link_up = any(each.network is not None for each in gateways)
        phase = "network" if link_up else "dead" if not gateways else gateways[0].link.phase.value
    if not line_open:
        reason = "no client on the line"
    elif not link_up:
        reason = f"PPP link not up (phase {phase})"
    else:
        reason = ""
    document = {
        "status": "ok" if not reason else "unavailable",
        "reason": reason,
        "components": {
            "line": {"open": line_open, "port": server.line_description()},
            "link": {"phase": phase, "up": link_up},
            "services": _services(server),
            "metrics": {"serving": server.metrics_serving},
        },
    }
    return (200 if not reason else 503), document


def _services(server: GatewayView) -> dict[str, dict[str, Any]]:
    breakers = server.breakers.states() if server.breakers is not None else {}
    return {
        name: {"reachable": result.reachable, "error": result.error, "checked": result.checked or None,
               "breaker": breakers.get(name)}
        for name, result in server.probe.results.items()
    }
