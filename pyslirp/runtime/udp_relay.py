"""UDP relays: the client's datagrams to a UDP service, to the DNS upstream, or out to another
address (outbound UDP, directly or through the SOCKS5 proxy's UDP ASSOCIATE), and the replies back.

A flow is one client address and port to one of our ports, or to another address and port. Its first datagram passes the
admission pipeline (:mod:`pyslirp.runtime.admission`, and the operator's ``async`` check if there
is one); a refused flow is counted by reason, published to the observers (metrics, audit log)
and answered with ICMP port unreachable, which the stack rate-limits. An admitted flow gets its
own connected host UDP socket, so replies find their way back without any parsing (through a
SOCKS5 relay, each datagram carries the RFC 1928 §7 header, and the association lasts as long as
its control connection).

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
import socket
from collections import Counter
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pyslirp.admission_extension import Extension
from pyslirp.config_records import ServiceRecord
from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.net import dns
from pyslirp.net.stack import UDPDatagram
from pyslirp.runtime.admission import OUTBOUND_PORT, REFUSED, Admission, Admitted, Refused
from pyslirp.runtime.connector import ConnectFailed
from pyslirp.runtime.observers import ConnectionSummary, Flow, GatewayObserver
from pyslirp.runtime.security import flow_info
from pyslirp.runtime.socks5 import parse_udp_reply, socks5_udp_associate, udp_header

if TYPE_CHECKING:
    from pyslirp.config import PyslirpConfig, ServiceConfig, SocksConfig

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
    CounterSpec("socks_malformed", "datagrams from the SOCKS5 relay dropped: malformed, or fragments"),
    CounterSpec("dns_names_for_proxy", "DNS queries answered with an address standing for a name the proxy resolves"),
    CounterSpec("dns_malformed", "DNS queries dropped as malformed (socks.remote_dns reads them)"),
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
    return {DNS_PORT: ServiceRecord(
        name=DNS_SERVICE, host=host, port=port, protocol="udp",
        max_connections=MAX_DNS_IN_FLIGHT, connect_timeout=config.dns.timeout,
    )}


def udp_ports(config: PyslirpConfig, relays: dict[int, ServiceConfig]) -> frozenset[int]:
    """Our ports that take UDP: the enabled UDP services and the relays (and DNS when names are
    resolved by the SOCKS5 proxy, upstream resolver or not)."""
    services = {port for port, service in config.services.items() if service.protocol == "udp" and service.enabled}
    socks = config.socks
    if config.outbound.mode == "socks" and socks.enabled and socks.remote_dns:
        services.add(DNS_PORT)
    return frozenset(services | set(relays))


class _Flow(asyncio.DatagramProtocol):
    """One admitted flow and its host socket."""

    def __init__(self, relay: UDPRelay, datagram: UDPDatagram, flow: Flow, admitted: Admitted) -> None:
        self.relay = relay
        self.key = flow_key(datagram)
        self.flow = flow
        self.admitted = admitted
        self.is_dns = admitted.service.name == DNS_SERVICE and datagram.dst_port == DNS_PORT
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []  # datagrams from the client before the socket is open
        self.started = self.last_activity = relay.now()
        self.to_service = self.to_client = 0
        self.queries = 0  # DNS queries unanswered
        self.ended = False
        #: through a SOCKS5 relay: the header each datagram carries, and the association's
        #: control connection
        self.socks_header = b""
        self.control: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, payload: bytes) -> None:
        self.last_activity = self.relay.now()
        self.to_service += len(payload)
        if self.transport is None:
            self.waiting.append(payload)
        else:
            self.transport.sendto(self.socks_header + payload)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        relay = self.relay
        if self.socks_header:
            reply = parse_udp_reply(data)
            if reply is None:
                relay.counters["socks_malformed"] += 1
                return
            data = reply[2]
        self.last_activity = relay.now()
        self.to_client += len(data)
        relay.counters["replies"] += 1
        src, client_port, destination, our_port = self.key
        if destination is None:
            relay.send_to_client(our_port, client_port, data, src)
        else:
            relay.send_to_client(our_port, client_port, data, src, destination)
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


def flow_key(datagram: UDPDatagram) -> tuple[bytes, int, bytes | None, int]:
    """(client address, client port, destination if not ours, destination port)"""
    return datagram.src, datagram.src_port, datagram.dst, datagram.dst_port


class UDPRelay:
    """Relays the client's UDP flows that ``admission`` lets through to their service."""

    def __init__(
        self,
        admission: Admission,
        send_to_client: Callable[..., None],
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
        #: (our port, client port, payload, client address[, source: an outbound flow's destination])
        self.send_to_client = send_to_client
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
        #: flow_key -> the flow
        self.flows: dict[tuple[bytes, int, bytes | None, int], _Flow] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def datagram(self, datagram: UDPDatagram) -> None:
        if datagram.dst is None and datagram.dst_port == DNS_PORT and self._answer_for_the_proxy(datagram):
            return
        flow = self.flows.get(flow_key(datagram))
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

    def _answer_for_the_proxy(self, datagram: UDPDatagram) -> bool:
        """With ``socks.remote_dns``: answer an A query (and AAAA: no record, so the client asks
        for A) with the address that stands for the name (:mod:`pyslirp.runtime.fake_names`);
        other queries go to the upstream resolver. Whether the query was answered here."""
        outbound = self.admission.outbound
        names = outbound.names if outbound is not None else None
        if names is None:
            return False
        try:
            question = dns.parse_query(datagram.payload)
        except dns.DNSError:
            self.counters["dns_malformed"] += 1
            return True
        if question.qclass != dns.CLASS_IN or question.qtype not in (dns.TYPE_A, dns.TYPE_AAAA) or not question.name:
            return False
        address = names.address_for(question.name) if question.qtype == dns.TYPE_A else None
        self.counters["dns_names_for_proxy"] += 1
        self.send_to_client(DNS_PORT, datagram.src_port, dns.answer(question, address, names.ttl), datagram.src)
        return True

    def _admit(self, datagram: UDPDatagram) -> _Flow | None:
        """A new flow: admitted and opening, or refused (counted, published, ICMP)."""
        destination = self.admission.local_ip if datagram.dst is None else IPv4Address(datagram.dst)
        flow = Flow(
            self.line, "udp", (IPv4Address(datagram.src), datagram.src_port), (destination, datagram.dst_port)
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
        host, port = flow.flow.destination if flow.admitted.port == OUTBOUND_PORT else (service.host, service.port)
        try:
            # Outbound UDP goes through the proxy that relays it, if the route names one (RFC 1928 §7).
            socks = self.admission.outbound.udp_socks if flow.admitted.port == OUTBOUND_PORT else None
            if socks is not None:
                await self._associate(flow, socks)
            else:
                await loop.create_datagram_endpoint(lambda: flow, remote_addr=(str(host), port))
        except (OSError, ConnectFailed) as exc:
            lost = len(flow.waiting)
            self.counters["dropped_upstream_unreachable"] += lost
            self.counters["dns_failures"] += flow.queries
            reason = exc.reason if isinstance(exc, ConnectFailed) else exc.strerror or exc
            log.warning("udp %s: cannot reach %s:%d: %s", flow.flow.service, host, port, reason)
            self._forget(flow)
            self.observer.connection_refused(flow.flow, "service_unavailable")
            return
        if flow.ended:  # the link went down meanwhile
            flow.transport.close()  # type: ignore[union-attr]
            if flow.control is not None:
                flow.control.close()
            return
        self.counters["flows_opened"] += 1
        self.observer.connection_opened(flow.flow)
        for payload in flow.waiting:
            flow.transport.sendto(flow.socks_header + payload)  # type: ignore[union-attr]
        flow.waiting.clear()

    async def _associate(self, flow: _Flow, socks: SocksConfig) -> None:
        """Open ``flow`` through the SOCKS5 proxy's UDP relay; the flow ends when the proxy
        closes the association's control connection."""
        control, relay_address = await socks5_udp_associate(
            socks.host, socks.port, socks.connect_timeout, socks.username, socks.password
        )
        flow.control = control
        destination, port = flow.flow.destination
        outbound = self.admission.outbound
        flow.socks_header = udp_header(outbound.target(destination) if outbound is not None else destination, port)
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: flow, remote_addr=relay_address)
        except BaseException:
            control.close()
            raise
        task = asyncio.get_running_loop().create_task(self._watch_association(flow, control))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_association(self, flow: _Flow, control: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().sock_recv(control, 1)
        except OSError:
            pass
        if not flow.ended:
            log.info("udp %s: the SOCKS5 proxy ended the association", flow.flow.describe())
            self.end(flow, "service_reset")

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
        if flow.control is not None:
            flow.control.close()
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
