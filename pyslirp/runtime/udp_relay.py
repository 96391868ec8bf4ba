"""UDP relays: the client's datagrams to a UDP service or to the DNS upstream, and the replies back.

A flow is one client address and port to one of our ports. Its first datagram passes the
admission pipeline (:mod:`pyslirp.runtime.admission`, and the operator's ``async`` check if there
is one); a refused flow is counted by reason, published to the observers (metrics, audit log)
and answered with ICMP port unreachable, which the stack rate-limits. An admitted flow gets its
own connected host UDP socket, so replies find their way back without any parsing.

Flows end when idle past their timeout, and a DNS flow as soon as its queries are answered: it
holds a host socket only while a query waits. At most ``max_flows`` flows are open at once; a
new flow beyond that is refused ``flow_cap`` (the newest work is dropped, open flows go on). At
most ``max_dns_in_flight`` DNS queries wait for the upstream at once; a query beyond that is
dropped and counted, and a query unanswered after the DNS timeout counts as a failure, so a
client flooding queries cannot flood the resolver.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Callable

from pyslirp.admission_extension import Extension
from pyslirp.config import PyslirpConfig, ServiceConfig
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.net.stack import UDPDatagram
from pyslirp.runtime.admission import REFUSED, Admission, Admitted, Refused
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver
from pyslirp.runtime.security import flow_info

log = logging.getLogger(__name__)

MAX_FLOWS = 256
MAX_DNS_IN_FLIGHT = 128
DNS_PORT = 53
DNS_SERVICE = "dns"

RELAY_COUNTERS = CounterSet("udp_relay", [
    CounterSpec("datagrams", "datagrams from the client relayed"),
    CounterSpec("replies", "datagrams from the host relayed to the client"),
    CounterSpec("errors", "errors reported by the host sockets"),
    CounterSpec("flows_opened", "flows admitted and given a host socket"),
    REFUSED,
    CounterSpec(
        "dropped", "datagrams from the client dropped, by reason",
        reasons=("upstream_unreachable", "dns_in_flight", "flow_refused"),
    ),
    CounterSpec("dns_queries", "DNS queries from the client forwarded to the upstream resolver"),
    CounterSpec("dns_answers", "DNS answers from the upstream resolver relayed to the client"),
    CounterSpec("dns_failures", "DNS queries lost to an unreachable, failing or silent upstream resolver"),
])


def system_resolver(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, int] | None:
    """The first IPv4 nameserver in resolv.conf."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and ":" not in fields[1]:
            return fields[1], DNS_PORT
    return None


def parse_upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return (host, int(port)) if port else (text, DNS_PORT)


def dns_relay(config: PyslirpConfig) -> dict[int, ServiceConfig]:
    """The DNS relay as a UDP service at our port 53, to the upstream resolver (none when DNS
    forwarding is off, a UDP service of the configuration takes port 53, or no upstream is known)."""
    udp_53 = config.services.get(DNS_PORT)
    if not config.dns.enabled or (udp_53 is not None and udp_53.protocol == "udp"):
        return {}
    upstream = parse_upstream(config.dns.upstream) if config.dns.upstream else system_resolver()
    if upstream is None:
        log.warning("DNS forwarding off: no upstream configured and no nameserver in /etc/resolv.conf")
        return {}
    host, port = upstream
    return {DNS_PORT: ServiceConfig(
        name=DNS_SERVICE, host=host, port=port, protocol="udp",
        max_connections=MAX_DNS_IN_FLIGHT, connect_timeout=config.dns.timeout,
    )}


def udp_ports(config: PyslirpConfig, relays: dict[int, ServiceConfig]) -> frozenset[int]:
    """Our ports that take UDP: the enabled UDP services and the relays."""
    services = {port for port, service in config.services.items() if service.protocol == "udp" and service.enabled}
    return frozenset(services | set(relays))


class _Flow(asyncio.DatagramProtocol):
    """One admitted flow and its host socket."""

    def __init__(self, relay: UDPRelay, datagram: UDPDatagram, flow: Flow, admitted: Admitted) -> None:
        self.relay = relay
        self.key = (datagram.src, datagram.src_port, datagram.dst_port)
        self.flow = flow
        self.admitted = admitted
        self.is_dns = admitted.service.name == DNS_SERVICE and datagram.dst_port == DNS_PORT
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []  # datagrams from the client before the socket is open
        self.started = self.last_activity = relay.now()
        self.to_service = self.to_client = 0
        self.queries = 0  # DNS queries unanswered
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, payload: bytes) -> None:
        self.last_activity = self.relay.now()
        self.to_service += len(payload)
        if self.transport is None:
            self.waiting.append(payload)
        else:
            self.transport.sendto(payload)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        relay = self.relay
        self.last_activity = relay.now()
        self.to_client += len(data)
        relay.counters["replies"] += 1
        src, client_port, our_port = self.key
        relay.send_to_client(our_port, client_port, data, src)
        if self.is_dns and self.queries:
            relay.counters["dns_answers"] += 1
            self._settled("closed")

    def error_received(self, exc: Exception) -> None:
        self.relay.counters["errors"] += 1
        log.debug("udp %s: %s", self.flow.describe(), exc)
        if self.is_dns and self.queries:
            self.relay.counters["dns_failures"] += 1
            self._settled("service_reset")

    def _settled(self, outcome: str) -> None:
        """A DNS query was answered or failed: the flow ends when none waits."""
        if self.queries == 1:
            self.relay.end(self, outcome)
        else:
            self.queries -= 1
            self.relay.dns_in_flight -= 1


class UDPRelay:
    """Relays the client's UDP flows that ``admission`` lets through to their service."""

    def __init__(
        self,
        admission: Admission,
        send_to_client: Callable[[int, int, bytes, bytes], None],
        refuse: Callable[[UDPDatagram], None],
        now: Callable[[], float],
        *,
        line: str = "",
        observer: GatewayObserver | None = None,
        extension: Extension | None = None,
        idle_timeout: float = 60.0,
        dns_timeout: float = 5.0,
        max_flows: int = MAX_FLOWS,
        max_dns_in_flight: int = MAX_DNS_IN_FLIGHT,
    ) -> None:
        self.admission = admission
        self.send_to_client = send_to_client  # (our port, client port, payload, client address)
        self.refuse = refuse
        self.now = now
        self.line = line
        self.observer = observer if observer is not None else GatewayObserver()
        self.extension = extension
        self.idle_timeout = idle_timeout
        self.dns_timeout = dns_timeout
        self.max_flows = max_flows
        self.max_dns_in_flight = max_dns_in_flight
        self.dns_in_flight = 0
        #: (client address, client port, our port) -> the flow
        self.flows: dict[tuple[bytes, int, int], _Flow] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def datagram(self, datagram: UDPDatagram) -> None:
        key = (datagram.src, datagram.src_port, datagram.dst_port)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._admit(datagram)
            if flow is None:
                return
        if flow.is_dns:
            if self.dns_in_flight >= self.max_dns_in_flight:
                self._expire(self.now())
                if self.dns_in_flight >= self.max_dns_in_flight:
                    self.counters["dropped_dns_in_flight"] += 1
                    if not flow.queries:
                        self.end(flow, "client_aborted")
                    return
            flow.queries += 1
            self.dns_in_flight += 1
            self.counters["dns_queries"] += 1
        self.counters["datagrams"] += 1
        flow.send(datagram.payload)

    def _admit(self, datagram: UDPDatagram) -> _Flow | None:
        """A new flow: admitted and opening, or refused (counted, published, ICMP)."""
        flow = Flow(
            self.line, "udp", (IPv4Address(datagram.src), datagram.src_port),
            (self.admission.local_ip, datagram.dst_port),
        )
        decision = Refused("flow_cap") if len(self.flows) >= self.max_flows else self.admission.admit(flow, self.now())
        if isinstance(decision, Refused):
            self._refused(datagram, replace(flow, service=decision.service), decision.reason)
            return None
        opened = _Flow(self, datagram, replace(flow, service=decision.label), decision)
        self.flows[opened.key] = opened
        task = asyncio.get_running_loop().create_task(self._open(opened, datagram))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return opened

    def _refused(self, datagram: UDPDatagram, flow: Flow, reason: str) -> None:
        self.counters[REFUSED.key(reason)] += 1
        self.counters["dropped_flow_refused"] += 1
        self.observer.connection_refused(flow, reason)
        self.refuse(datagram)

    async def _open(self, flow: _Flow, datagram: UDPDatagram) -> None:
        service = flow.admitted.service
        if self.extension is not None:
            reason = await self.extension.decide_async(flow_info(flow.flow), service.connect_timeout)
            if reason is not None:
                self._forget(flow)
                self._refused(datagram, flow.flow, reason)
                return
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: flow, remote_addr=(service.host, service.port))
        except OSError as exc:
            lost = len(flow.waiting)
            self.counters["dropped_upstream_unreachable"] += lost
            self.counters["dns_failures"] += flow.queries
            log.warning("udp :%d: cannot reach %s:%d: %s", flow.key[2], service.host, service.port,
                        exc.strerror or exc)
            self._forget(flow)
            self.observer.connection_refused(flow.flow, "service_unavailable")
            return
        if flow.ended:  # the link went down meanwhile
            flow.transport.close()  # type: ignore[union-attr]
            return
        self.counters["flows_opened"] += 1
        self.observer.connection_opened(flow.flow)
        for payload in flow.waiting:
            flow.transport.sendto(payload)  # type: ignore[union-attr]
        flow.waiting.clear()

    def _forget(self, flow: _Flow) -> None:
        """A flow that never opened: its admission ends, no summary."""
        if not flow.ended:
            flow.ended = True
            self._release_queries(flow)
            self.flows.pop(flow.key, None)
            self.admission.closed(flow.admitted)

    def _release_queries(self, flow: _Flow) -> None:
        """The flow's DNS queries no longer wait (answered, counted as failures, or abandoned)."""
        self.dns_in_flight -= flow.queries
        flow.queries = 0

    def end(self, flow: _Flow, outcome: str) -> None:
        """An open flow ends: its socket closes, admission and the observers are told."""
        if flow.ended:
            return
        if flow.transport is None:
            self._forget(flow)
            return
        flow.ended = True
        self._release_queries(flow)
        del self.flows[flow.key]
        flow.transport.close()
        self.admission.closed(flow.admitted)
        summary = ConnectionSummary(outcome, flow.to_service, flow.to_client, self.now() - flow.started, None)
        self.observer.connection_closed(flow.flow, summary)

    def _expire(self, now: float) -> None:
        """End the flows idle past their timeout; a DNS query unanswered by then has failed."""
        for flow in list(self.flows.values()):
            timeout = self.dns_timeout if flow.is_dns else self.idle_timeout
            if now - flow.last_activity > timeout:
                self.counters["dns_failures"] += flow.queries
                self.end(flow, "idle_closed")

    def reconfigure(self, extension: Extension | None, now: float) -> None:
        """After the admission took a new configuration: end the flows it no longer allows."""
        self.extension = extension
        for flow in list(self.flows.values()):
            if not self.admission.still_allowed(flow.flow, now):
                self.end(flow, "closed_by_reload")

    def sweep_idle(self, now: float) -> None:
        self._expire(now)

    def close(self) -> None:
        """The link is gone: drop every host socket."""
        for task in list(self._tasks):
            task.cancel()
        for flow in list(self.flows.values()):
            self.end(flow, "link_down")
